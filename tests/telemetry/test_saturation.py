"""Saturation counters of bounded settings and the client clock offset, as the recorder
exports them (pure: fake clock, no sockets)."""

from __future__ import annotations

import threading
import time

import pytest

from relaydesk.clock import FakeClock
from relaydesk.config import TelemetrySettings
from relaydesk.protocol.frames import Probe
from relaydesk.telemetry import Recorder
from relaydesk.telemetry.saturation import (
    EpisodeClock,
    PoolGauge,
    setting_of,
    suggest_size,
)

NOW_MS = 1_700_000_000_000


def _recorder() -> tuple[Recorder, FakeClock]:
    clock = FakeClock(start=NOW_MS / 1000)
    settings = TelemetrySettings(trace_sample_every=1, ack_deadline_ms=1000)
    return Recorder(settings, "n1", "eu-west", clock), clock


def test_episode_clock_measures_duration_and_demand() -> None:
    ep = EpisodeClock("gateway.send_queue_items")
    assert ep.stop(5.0) is None
    ep.start(1.0, 10)
    ep.start(1.5, 5)  # still the same episode
    ep.add(7)
    done = ep.stop(3.0)
    assert done is not None and done.duration_ms == pytest.approx(2000.0) and done.demand == 22
    assert not ep.running


def test_suggestions_are_powers_of_two_above_the_current_value_and_capped() -> None:
    assert suggest_size(50, 1800, headroom=1.0) == 2048
    assert suggest_size(4, 9, headroom=1.0) == 16
    assert suggest_size(2000, 10) == 2048  # never below current + 1
    assert suggest_size(500, 9000, headroom=1.0, cap=5000) == 5000
    assert setting_of("sat:storage.readers") == "storage.readers" and setting_of("commit") is None


def test_pool_gauge_counts_only_waits_for_a_worker() -> None:
    gauge = PoolGauge("storage.readers", 1, time.monotonic)
    gate = threading.Event()
    results: list[int] = []
    first = gauge.timed(lambda: (gate.wait(1.0), 1)[1])
    second = gauge.timed(lambda: 2)
    t = threading.Thread(target=lambda: results.append(first()))
    t.start()
    time.sleep(0.05)  # the only worker is busy: the second task waits
    gate.set()
    t.join()
    results.append(second())
    episodes = gauge.drain()
    assert results == [1, 2]
    assert len(episodes) == 1 and episodes[0].duration_ms >= 40.0
    assert episodes[0].demand == 2.0 and gauge.drain() == []  # one running, one waiting


def test_send_queue_overflow_and_catchup_pages_become_episodes() -> None:
    rec, clock = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    tel.caught_up()  # the login catch-up: a stage, no episode
    clock.advance(1.0)
    tel.resynced(over_items=True)  # the live queue overflowed
    for i in range(3):
        clock.advance(0.2)
        tel.written_catchup(100 * (i + 1), 100, 100)  # three full pages
    clock.advance(0.4)
    tel.written_catchup(350, 50, 100)
    tel.caught_up()
    rows, _, _ = rec.drain()
    h = rows[0].hists
    assert h["catchup"].n == 2
    assert h["sat:gateway.send_queue_items"].n == 1
    assert h["sat:gateway.send_queue_items"].sum == pytest.approx(1000.0)
    assert h["satd:gateway.send_queue_items"].sum == pytest.approx(350.0)
    assert h["sat:gateway.catchup_page"].n == 1
    assert "sat:gateway.send_queue_bytes" not in h


def test_a_full_commit_batch_is_one_episode_however_many_publishes_rode_it() -> None:
    rec, clock = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    recv = clock.monotonic()
    clock.advance(0.01)
    start = clock.monotonic()
    clock.advance(0.005)
    rec.commit_window(start, clock.monotonic(), 140)  # a full batch of 100 left 40 queued
    for pos in (1, 2, 3):
        rec.published(tel, recv, pos=pos, conv="ch:x", routed=False)
    rec.commit_window(start, clock.monotonic(), 0)  # a batch under the cap
    rec.published(tel, recv, pos=4, conv="ch:x", routed=False)
    rows, _, _ = rec.drain()
    h = rows[0].hists
    assert h["sat:storage.commit_batch_max"].n == 1
    # From the first publish's arrival to the commit, in ms.
    assert h["sat:storage.commit_batch_max"].sum == pytest.approx(15.0)
    assert h["satd:storage.commit_batch_max"].sum == pytest.approx(140.0)


def test_reader_pool_episodes_reach_the_active_apps() -> None:
    rec, clock = _recorder()
    gauge = PoolGauge("storage.readers", 2, clock.monotonic)
    rec.watch(gauge)
    rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    waiting = [gauge.timed(lambda: None) for _ in range(4)]  # 2 readers, 4 reads
    clock.advance(0.03)  # the last two found every reader taken and waited 30 ms
    for run in waiting:
        run()
    rec.tick()
    rows, _, _ = rec.drain()
    assert rows[0].hists["sat:storage.readers"].n == 2
    assert rows[0].hists["sat:storage.readers"].sum == pytest.approx(60.0)
    assert rows[0].hists["satd:storage.readers"].sum == pytest.approx(7.0)  # demand 3 + 4


def test_a_slow_wake_up_with_a_free_reader_is_not_saturation() -> None:
    clock_values = [0.0, 0.010]  # submitted, started 10 ms later (a loaded machine)
    gauge = PoolGauge("storage.readers", 4, lambda: clock_values.pop(0))
    gauge.timed(lambda: None)()
    assert gauge.drain() == []


@pytest.mark.parametrize(("skew_s", "name"), [(240.0, "clock_ahead"), (-90.0, "clock_behind")])
def test_clock_offset_is_estimated_from_probe_timestamps(skew_s: float, name: str) -> None:
    rec, _ = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    ts = NOW_MS + int(skew_s * 1000) - 20  # stamped 20 ms (half the RTT) before arrival
    assert rec.probe(tel, Probe(rtt_p50_ms=40.0, rtt_p95_ms=60.0, loss=0, samples=5, ts=ts))
    rows, _, _ = rec.drain()
    h = rows[0].hists
    assert h[name].n == 1 and h[name].sum == pytest.approx(abs(skew_s) * 1000, abs=0.5)
    assert h["clock_error"].sum == pytest.approx(31.0)


def test_a_clock_far_ahead_is_rejected_but_its_offset_still_measured() -> None:
    rec, _ = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    ts = NOW_MS + 2 * 3600 * 1000
    assert not rec.probe(tel, Probe(rtt_p50_ms=40.0, rtt_p95_ms=60.0, loss=0, samples=5, ts=ts))
    rows, _, _ = rec.drain()
    assert rows[0].count("probes_rejected") == 1
    assert rows[0].hists["clock_ahead"].sum == pytest.approx(7200_000 + 20, abs=0.5)

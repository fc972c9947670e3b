"""Pure tests of the recorder: histograms, labels, probe validation, lifecycle stages."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relaydesk.clock import FakeClock
from relaydesk.config import TelemetrySettings
from relaydesk.protocol.frames import Probe
from relaydesk.telemetry import (
    Histogram,
    LabelBounder,
    MetricsExporter,
    Recorder,
    SeriesQuery,
    build_series,
    validate_probe,
)
from relaydesk.telemetry.histogram import LATENCY_BOUNDS_MS

NOW_MS = 1_700_000_000_000


# -- histograms ---------------------------------------------------------------------


def _exact(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_from_buckets_are_within_the_bucket_ratio(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(math.log(20), 1.2) for _ in range(5000)]
    h = Histogram.latency()
    for v in values:
        h.observe(v)
    for q in (0.5, 0.9, 0.95, 0.99):
        got, want = h.quantile(q), _exact(values, q)
        assert got is not None
        assert abs(got - want) / want < 0.095, (q, got, want)
    assert h.n == 5000
    assert h.mean() == pytest.approx(sum(values) / len(values))


def test_weighted_observation_merge_and_round_trip() -> None:
    a, b = Histogram.latency(), Histogram.latency()
    a.observe(3.0, 10)
    b.observe(300.0, 10)
    a.merge(b)
    assert a.n == 20 and a.sum == pytest.approx(3030.0)
    assert a.quantile(0.25) == pytest.approx(3.0, rel=0.09)
    assert a.quantile(0.75) == pytest.approx(300.0, rel=0.09)
    back = Histogram.from_data(a.to_data(), a.bounds, log=True)
    assert back.counts == a.counts and back.n == a.n
    assert Histogram.latency().quantile(0.5) is None


def test_loss_histogram_is_linear_and_exact_at_bounds() -> None:
    h = Histogram.loss()
    for _ in range(90):
        h.observe(0.0)
    for _ in range(10):
        h.observe(0.1)
    assert h.quantile(0.5) == 0.0
    p99 = h.quantile(0.99)
    assert p99 is not None and 0.095 <= p99 <= 0.1


# -- labels -------------------------------------------------------------------------


def test_labels_are_cut_folded_and_counted() -> None:
    b = LabelBounder(max_len=64, max_values=3)
    assert b.bound("region", "x" * 100) == "x" * 64
    assert b.truncated == 1
    assert b.bound("region", "eu") == "eu"
    assert b.bound("region", "us") == "us"
    assert b.bound("region", "ap") == "other"
    assert b.bound("region", "eu") == "eu"  # already known: kept
    assert b.folded == 1
    assert b.bound("net", "wifi") == "wifi"  # limits are per label
    assert b.bound("region", "") == "unknown"
    assert b.bound("sdk", "\x00\x1b[31m") == "[31m"  # control characters dropped


# -- probes -------------------------------------------------------------------------


def _probe(**kw: float | int | str) -> Probe:
    base: dict[str, float | int | str] = {
        "rtt_p50_ms": 40.0,
        "rtt_p95_ms": 60.0,
        "loss": 0.01,
        "samples": 20,
    }
    base.update(kw)
    return Probe(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"rtt_p50_ms": -5.0}, "rtt_negative"),
        ({"rtt_p95_ms": -1.0}, "rtt_negative"),
        ({"loss": 1.5}, "loss_range"),
        ({"loss": -0.2}, "loss_range"),
        ({"samples": 0}, "samples"),
        ({"rtt_p50_ms": float("nan")}, "not_finite"),
        ({"loss": float("inf")}, "not_finite"),
        ({"ts": NOW_MS + 86_400_000}, "future"),
        ({"ts": NOW_MS - 86_400_000}, "stale"),
    ],
)
def test_absurd_probes_are_rejected(kw: dict[str, float], reason: str) -> None:
    verdict = validate_probe(_probe(**kw), NOW_MS)
    assert verdict.sample is None and verdict.rejected == reason


def test_out_of_range_values_are_clamped() -> None:
    v = validate_probe(
        _probe(rtt_p50_ms=9e9, rtt_p95_ms=9e9, jitter_ms=-3.0, samples=10**9), NOW_MS
    )
    assert v.sample is not None
    assert v.sample.rtt_p50_ms == 600_000 and v.sample.rtt_p95_ms == 600_000
    assert v.sample.jitter_ms == 0.0 and v.sample.samples == 100_000
    assert set(v.clamped) == {"rtt_high", "jitter", "samples"}
    v = validate_probe(_probe(rtt_p50_ms=50.0, rtt_p95_ms=10.0), NOW_MS)
    assert v.sample is not None and v.sample.rtt_p95_ms == 50.0 and v.clamped == ("rtt_order",)
    ok = validate_probe(_probe(ts=NOW_MS - 1000), NOW_MS)
    assert ok.sample is not None and ok.clamped == () and ok.sample.ts_ms == NOW_MS - 1000


# -- the recorder, with a fake clock ----------------------------------------------------


def _recorder(**kw: int | float | str) -> tuple[Recorder, FakeClock]:
    clock = FakeClock(start=NOW_MS / 1000)
    settings = TelemetrySettings(trace_sample_every=1, ack_deadline_ms=1000, **kw)  # type: ignore[arg-type]
    return Recorder(settings, "n1", "eu-west", clock), clock


def test_rejected_probes_are_counted_never_stored() -> None:
    rec, _ = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="wifi", sdk="py/1", resumed=False)
    assert not rec.probe(tel, _probe(rtt_p50_ms=-10.0))
    assert not rec.probe(tel, _probe(loss=3.0))
    assert rec.probe(tel, _probe(rtt_p50_ms=1e12, rtt_p95_ms=1e12))
    rows, _, _ = rec.drain()
    (row,) = rows
    assert row.count("probes_rejected") == 2 and row.count("probes") == 1
    assert row.count("probes_clamped") == 1
    rtt = row.hists["rtt"]
    assert rtt.n == 1 and rtt.sum == 600_000  # stored clamped, not as sent
    assert "loss" in row.hists and row.hists["loss"].sum == pytest.approx(0.01)
    assert rec.probe_rejections == {"rtt_negative": 1, "loss_range": 1}


def test_probe_labels_are_bounded() -> None:
    rec, _ = _recorder(label_max_values=2)
    keys = set()
    for i in range(5):
        tel = rec.attach("app", f"u{i}", "d", region=f"r{i}", net="", sdk="", resumed=False)
        keys.add(tel.key)
        rec.probe(tel, _probe(net="n" * 200, sdk=f"sdk{i}"))
        assert len(tel.net) <= 64
    assert keys == {("app", "r0"), ("app", "r1"), ("app", "other")}
    assert rec.labels.folded >= 3 and rec.labels.truncated >= 1


def test_stages_add_up_and_deliveries_resolve() -> None:
    rec, clock = _recorder()
    sender = rec.attach("app", "s", "ds", region="eu", net="", sdk="", resumed=False)
    fast = rec.attach("app", "a", "da", region="eu", net="", sdk="", resumed=True)
    slow = rec.attach("app", "b", "db", region="us", net="", sdk="", resumed=False)
    gone = rec.attach("app", "c", "dc", region="us", net="", sdk="", resumed=False)
    rec.probe(fast, _probe(rtt_p50_ms=30.0, rtt_p95_ms=30.0))

    recv = clock.monotonic()
    clock.advance(0.002)  # waits for the writer
    start = clock.monotonic()
    clock.advance(0.003)  # commit
    rec.commit_window(start, clock.monotonic())
    rec.published(sender, recv, pos=7, conv="ch:room", routed=True)
    # Another app's event 7 is routed first in the batch: positions are per app.
    assert rec.trace_for("other", 7) is None
    trace = rec.trace_for("app", 7)  # what the hub asks while routing event 7
    assert trace is not None and rec.trace_for("app", 7) is None
    for tel in (fast, slow, gone):  # what Connection.offer_run does
        tel.first_gen = rec.fan_gen
        tel.trace_offered(trace)
    clock.advance(0.001)  # fan-out of the batch
    rec.batch_fanned(clock.monotonic())
    clock.advance(0.004)  # queue wait
    for tel in (fast, slow, gone):
        tel.written_live(7, 1)
    clock.advance(0.010)  # network + client
    fast.acked(7)
    rec.detach(gone, "transport_error")
    clock.advance(2.0)  # past the 1 s deadline
    rec.tick()
    slow.acked(7)  # too late: already counted as not delivered

    rows, traces, history = rec.drain()
    by_region = {r.client_region: r for r in rows}
    eu, us = by_region["eu"], by_region["us"]
    assert eu.count("sent") == 1 and eu.count("delivered") == 1 and eu.count("resumes") == 1
    assert us.count("undelivered") == 2 and us.count("delivered") == 0
    assert us.count("disc_transport_error") == 1
    assert eu.hists["client_ack"].sum == pytest.approx(10.0)
    assert eu.hists["s2c_est"].sum == pytest.approx(15.0)  # fast's RTT / 2, an estimate
    assert eu.hists["commit_wait"].sum == pytest.approx(2.0)
    assert eu.hists["commit"].sum == pytest.approx(3.0)
    assert eu.hists["fanout"].sum == pytest.approx(1.0)
    assert eu.hists["server"].sum == pytest.approx(6.0)
    assert eu.hists["queue_wait"].sum + us.hists["queue_wait"].sum == pytest.approx(12.0)

    outcomes = {t.recipient_device: t for t in traces if t.outcome != "late_ack"}
    assert set(outcomes) == {"da", "db", "dc"}
    # db acknowledged after its deadline: a slow reader, kept as an extra late_ack row
    late = [t for t in traces if t.outcome == "late_ack"]
    assert [t.recipient_device for t in late] == ["db"]
    assert late[0].client_ack_ms == pytest.approx(2010.0, abs=0.01)
    acked = outcomes["da"]
    assert acked.outcome == "acked"
    assert acked.end_to_end_ms is not None and acked.queue_wait_ms is not None
    assert acked.client_ack_ms is not None
    parts = (
        acked.commit_wait_ms
        + acked.commit_ms
        + acked.fanout_ms
        + acked.queue_wait_ms
        + acked.client_ack_ms
    )
    assert parts == pytest.approx(acked.end_to_end_ms, abs=0.005)
    assert acked.end_to_end_ms == pytest.approx(20.0, abs=0.01)
    assert outcomes["db"].outcome == "unacked" and outcomes["dc"].outcome == "closed"
    assert [h.reason for h in history] == ["transport_error"]
    assert history[0].undelivered == 1


def test_a_write_noted_after_the_connection_closed_records_nothing() -> None:
    """The gateway tells the recorder of a pass's writes after the pass; a connection
    that ended in that pass must not re-enter the unacknowledged set (a leak)."""
    rec, clock = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="wifi", sdk="py", resumed=False)
    stamp = clock.monotonic()
    tel.written_live(1, 1, stamp)
    rec.detach(tel, "client_close")
    tel.written_live(2, 4, stamp)
    assert tel not in rec.unacked and tel.pending() == 0
    rows, _, _ = rec.drain()
    assert sum(r.count("undelivered") for r in rows) == 1


@pytest.mark.parametrize("seed", range(20))
def test_one_ack_over_many_batches_buckets_each_wait_as_observing_it_would(seed: int) -> None:
    """An ack covering hundreds of written batches is recorded without a Python loop
    per batch (issue 20: 100 subscribers acking at once paused the loop); the result is
    the same as observing each batch's wait."""
    rng = random.Random(seed)
    rec, clock = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="wifi", sdk="py", resumed=False)
    tel.caught_up()
    expected = Histogram.latency()
    sent: list[tuple[int, float, int]] = []
    pos = 0
    for _ in range(rng.randint(1, 600)):
        pos += rng.randint(1, 3)
        n = rng.randint(1, 5)
        sent.append((pos, clock.monotonic(), n))
        tel.written_live(pos, n)
        clock.advance(rng.choice([0.0, 0.0001, 0.002, 0.02, 0.3]))
    acked_upto = rng.choice([p for p, _, _ in sent])
    now = clock.monotonic()
    delivered = late = 0
    for p, t, n in sent:
        if p > acked_upto:
            break
        ms = (now - t) * 1000.0
        if ms <= 1000.0:  # the 1 s deadline
            expected.observe(ms, n)
            delivered += n
        else:
            late += n
    tel.acked(acked_upto)
    hist = rec.current().client_ack
    assert hist.counts == expected.counts
    assert hist.n == expected.n == delivered
    assert hist.sum == pytest.approx(expected.sum)
    assert (tel.delivered, tel.undelivered) == (delivered, late)
    assert tel.pending() == sum(1 for p, _, _ in sent if p > acked_upto)


def test_series_from_rows_and_metrics_exposition() -> None:
    rec, clock = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    rec.commit_window(clock.monotonic(), clock.monotonic())
    rec.published(tel, clock.monotonic(), pos=1, conv="ch:x", routed=True)
    rec.publish_failed(tel)
    rec.batch_fanned(clock.monotonic())
    text = MetricsExporter(rec).render().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            assert sample.labels["node"] == "n1" and sample.labels["region"] == "eu-west"
            assert set(sample.labels) <= {
                "node",
                "region",
                "stage",
                "reason",
                "outcome",
                "field",
                "kind",
                "le",
            }
    assert "relaydesk_messages_sent_total" in names
    assert "relaydesk_stage_latency_seconds_bucket" in names
    rows, _, _ = rec.drain()
    start = rows[0].start_ms
    result = build_series(rows, SeriesQuery("app", start, start + 60_000, group_by="none"))
    point = result.series[0].points[0]
    assert point.sent == 1 and point.send_errors == 1 and point.send_success == 0.5
    assert point.active == 1


@pytest.mark.parametrize("seed", range(20))
def test_a_write_pass_records_each_connection_as_observing_it_alone_would(seed: int) -> None:
    """Issue 20: ``written_pass`` sums the queue waits that share the newest fan-out
    per key; the histograms and ack windows must be those of observing each
    connection's wait on its own (the first event at its own fan-out's time, the rest
    at the newest's), connections closed in the pass recording nothing."""
    rnd = random.Random(seed)
    rec, clock = _recorder()
    fanned: dict[int, float] = {}
    for _ in range(rnd.randint(1, 5)):  # a few fan-outs, the last one the newest
        clock.advance(rnd.uniform(0.0001, 0.01))
        fanned[rec.fan_gen] = clock.monotonic()
        rec.batch_fanned(clock.monotonic())
    newest = rec.fan_gen - 1
    clock.advance(rnd.uniform(0.0, 0.05))
    now = clock.monotonic()
    expected: dict[tuple[str, str], list[tuple[float, int]]] = {}
    written = []
    for i in range(rnd.randint(1, 40)):
        region = rnd.choice(["eu", "us"])
        tel = rec.attach("app", f"u{i}", "d", region=region, net="", sdk="", resumed=False)
        tel.first_gen = rnd.choice([-1, newest, *fanned])
        n = rnd.randint(1, 5)
        closed = rnd.random() < 0.1
        if closed:
            rec.detach(tel, "client_close")
        elif tel.first_gen == newest:
            expected.setdefault(tel.key, []).append(((now - fanned[newest]) * 1000, n))
        elif tel.first_gen >= 0:
            waits = expected.setdefault(tel.key, [])
            waits.append(((now - fanned[tel.first_gen]) * 1000, 1))
            if n > 1:
                waits.append(((now - fanned[newest]) * 1000, n - 1))
        written.append((tel, 100 + i, n, closed))
    for tel, pos, n, _ in written:  # what Connection.pump notes in a pass
        tel.wrote_pos, tel.wrote_n = pos, n
    rec.written_pass([tel for tel, _, _, _ in written], now)
    for key in {("app", "eu"), ("app", "us")}:
        oracle = Histogram(LATENCY_BOUNDS_MS)
        for ms, n in expected.get(key, []):
            oracle.observe(ms, n)
        got = rec.agg(key).queue_wait
        assert got.counts == oracle.counts and got.n == oracle.n
        assert got.sum == pytest.approx(oracle.sum)
    for tel, pos, n, closed in written:
        assert tel.first_gen == -1 or closed
        assert list(tel.window) == ([] if closed else [pos, now, n])
        assert (tel in rec.unacked) is not closed

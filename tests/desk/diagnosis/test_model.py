"""The diagnosis model on recorded aggregates: the misclassifications of issue 13, each as
a class (normal short sessions, node victims, slow readers, slow storage, any bound that
binds, clock offsets under the rejection bound), and the no-false-alarm property."""

from __future__ import annotations

import random
from typing import Any

import msgspec
from diag_kit import MIN, T0, conn, healthy_minute, healthy_minutes, hist, spread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaydesk.desk.diagnosis import (
    PUBLIC_CONFIDENCE,
    ClientReport,
    Finding,
    Rejected,
    RunSettings,
    Snapshot,
    Trace,
    diagnose,
)
from relaydesk.desk.diagnosis.rules import (
    bound_binds,
    clock_skew,
    reconnect_loop,
    slow_consumer,
    slow_storage,
    undelivered_device,
)
from relaydesk.storage.telemetry import HistData
from relaydesk.telemetry.histogram import Histogram

END = T0 + 60 * MIN


def snap(**kw: object) -> Snapshot:
    fields: dict[str, object] = {"app": "acme", "from_ms": T0, "to_ms": END}
    fields.update(kw)
    return msgspec.convert(fields, Snapshot, from_attributes=True)


def found(items: Any) -> list[Finding]:
    return [f for f in items if isinstance(f, Finding)]


def rejected(items: Any) -> list[Rejected]:
    return [r for r in items if isinstance(r, Rejected)]


# -- (a) short sessions and node victims ---------------------------------------------------


def test_one_shot_publishers_are_not_a_reconnect_loop() -> None:
    # relaydesk send: connect, publish, close with 1000, nothing undelivered, 30 times
    conns = [
        conn("cli-send", T0 + i * 2_000, T0 + i * 2_000 + 300, "client_close", delivered=0)
        for i in range(30)
    ]
    items = reconnect_loop(snap(connections=conns))
    assert found(items) == []
    assert rejected(items) and "ended normally" in rejected(items)[0].reason
    d = diagnose(snap(symptom="disconnects", connections=conns))
    assert d.confident == [] and "cli-send" not in d.summary
    assert any(r.device == "cli-send" for r in d.rejected)


def test_abnormal_closes_that_come_straight_back_are_a_loop() -> None:
    conns = [
        conn("flaky", T0 + i * 5_000, T0 + i * 5_000 + 4_000, "transport_error", undelivered=3)
        for i in range(10)
    ]
    f = found(reconnect_loop(snap(connections=conns)))
    assert f and f[0].device == "flaky" and f[0].layer == "client"


def test_victims_of_a_bad_node_are_explained_by_the_node() -> None:
    conns = []
    for d in ("a-d", "b-d", "c-d", "e-d"):
        for i in range(6):  # every device drops at the same moments on edge-b
            t = T0 + i * 25_000
            conns.append(conn(d, t, t + 20_000, "heartbeat_timeout", node="edge-b"))
        conns.append(conn(d, T0 + 7 * MIN, T0 + 30 * MIN, "client_close", node="edge-a"))
    conns += [conn(f"ok{i}-d", T0, END, node="edge-a") for i in range(5)]
    d = diagnose(snap(symptom="disconnects", connections=conns))
    top = d.findings[0]
    assert top.layer == "network" and top.node == "edge-b" and top.rule == "node_victims"
    assert all(f.rule != "reconnect_loop" for f in d.findings)
    explained = [r for r in d.rejected if r.rule == "reconnect_loop"]
    assert {r.device for r in explained} == {"a-d", "b-d", "c-d", "e-d"}
    assert all("explained by the node" in r.reason for r in explained)


# -- (b) a slow reader is a slow consumer, not a defect -------------------------------------


def _trace(pos: int, device: str, outcome: str, ack: float | None = None) -> Trace:
    return Trace(
        conv="ch:room",
        pos=pos,
        node="edge-1",
        node_region="eu-west",
        recipient_device=device,
        recipient_region="eu-west",
        received_ms=T0 + pos * 1000,
        outcome=outcome,
        client_ack_ms=ack,
    )


def _slow_reader_traces() -> list[Trace]:
    rows = []
    for pos in range(100, 120):
        rows += [_trace(pos, "fast-a", "acked", 30.0), _trace(pos, "fast-b", "acked", 40.0)]
        if pos < 103:
            rows.append(_trace(pos, "slow-d", "acked", 800.0))
        else:  # crossed the 10 s deadline, then acknowledged
            rows.append(_trace(pos, "slow-d", "unacked"))
            if pos % 2:
                rows.append(_trace(pos, "slow-d", "late_ack", 12_500.0))
    return rows


def test_slow_reader_is_a_slow_consumer_not_a_server_defect() -> None:
    traces = _slow_reader_traces()
    items = undelivered_device(snap(traces=traces))
    assert found(items) == []
    assert rejected(items) and "keep progressing" in rejected(items)[0].reason
    slow = found(slow_consumer(snap(traces=traces)))
    assert slow and slow[0].device == "slow-d" and slow[0].layer == "client"
    d = diagnose(snap(symptom="delay", traces=traces))
    assert all(f.layer != "server_defect" for f in d.findings)
    assert d.findings[0].rule == "slow_consumer"


def test_a_device_that_stops_acknowledging_is_still_loss() -> None:
    traces = [t for t in _slow_reader_traces() if t.outcome != "late_ack"]
    f = found(undelivered_device(snap(traces=traces)))
    assert f and f[0].layer == "server_defect" and f[0].device == "slow-d"


def test_healthy_devices_are_not_slow_consumers() -> None:
    rows = [_trace(p, d, "acked", 30.0 + p % 7) for p in range(50) for d in ("a", "b", "c")]
    assert found(slow_consumer(snap(traces=rows))) == []


# -- (c) slow storage ----------------------------------------------------------------------


def _commits(rng: random.Random, node: str, commit_ms: float, n: int = 10) -> list[Any]:
    return [
        healthy_minute(
            rng,
            T0 + i * MIN,
            node,
            sent=300,
            stages={
                "commit": spread(rng, commit_ms, 300),
                "commit_wait": spread(rng, commit_ms * 0.8, 300),
                "server": spread(rng, commit_ms * 1.9, 300),
            },
        )
        for i in range(n)
    ]


def test_slow_commits_are_found_against_the_absolute_bound() -> None:
    s = snap(symptom="delay", minutes=_commits(random.Random(2), "edge-1", 585.0))
    f = found(slow_storage(s))
    assert f and f[0].layer == "server_config" and f[0].node == "edge-1"
    assert "585" in f[0].title or "5" in f[0].title
    top = diagnose(s).findings[0]
    assert top.rule == "slow_storage" and top.confidence >= PUBLIC_CONFIDENCE


def test_slow_commits_on_one_node_against_its_siblings() -> None:
    rng = random.Random(3)
    minutes = _commits(rng, "edge-1", 120.0) + _commits(rng, "edge-2", 3.0)
    f = found(slow_storage(snap(minutes=minutes)))
    assert [x.node for x in f] == ["edge-1"]


def test_fast_commits_are_not_slow_storage() -> None:
    assert found(slow_storage(snap(minutes=_commits(random.Random(4), "edge-1", 4.0)))) == []


# -- (d) any bound that binds -------------------------------------------------------------


def _episodes(setting: str, n: int, duration_ms: float, demand: float) -> dict[str, HistData]:
    return {f"sat:{setting}": hist((duration_ms, n)), f"satd:{setting}": hist((demand, n))}


def _bound_minutes(setting: str, n: int, duration_ms: float, demand: float) -> list[Any]:
    rng = random.Random(5)
    return [
        healthy_minute(
            rng, T0 + i * MIN, "edge-1", stages=_episodes(setting, n, duration_ms, demand)
        )
        for i in range(5)
    ]


def test_a_binding_catchup_page_is_named_with_a_suggested_value() -> None:
    s = snap(
        minutes=_bound_minutes("gateway.catchup_page", 8, 900.0, 1800.0),
        settings=RunSettings(catchup_page=50),
    )
    f = found(bound_binds(s))
    assert f and f[0].setting == "gateway.catchup_page" and f[0].layer == "server_config"
    assert "= 50" in f[0].title and f[0].suggested_value == 2048
    assert "p95 demand" in f[0].action and "from 50 to 2048" in f[0].action


def test_a_binding_reader_pool_is_named() -> None:
    s = snap(minutes=_bound_minutes("storage.readers", 40, 80.0, 9.0))
    f = found(bound_binds(s))
    assert f and f[0].setting == "storage.readers" and f[0].suggested_value == 16


def test_send_queue_cutting_one_slow_consumer_loose_is_not_the_setting() -> None:
    traces = [_trace(p, "slow-d", "resync") for p in range(5)]
    s = snap(minutes=_bound_minutes("gateway.send_queue_items", 5, 2000.0, 6000.0), traces=traces)
    items = bound_binds(s)
    assert found(items) == [] and "slow consumer" in rejected(items)[0].reason
    many = [_trace(p, f"d{p}", "resync") for p in range(6)]
    f = found(bound_binds(msgspec.structs.replace(s, traces=many)))
    assert f and f[0].setting == "gateway.send_queue_items" and f[0].suggested_value == 16384


def test_a_bound_reached_for_a_moment_is_not_binding() -> None:
    s = snap(minutes=_bound_minutes("storage.commit_batch_max", 2, 1.0, 10.0))
    assert found(bound_binds(s)) == []


# -- (e) clock offset, NTP-style ----------------------------------------------------------


def _clock_minutes(offset_ms: float, n: int, err_ms: float = 20.0) -> list[Any]:
    rng = random.Random(6)
    name = "clock_ahead" if offset_ms >= 0 else "clock_behind"
    return [
        healthy_minute(
            rng,
            T0 + i * MIN,
            "edge-1",
            stages={name: hist((abs(offset_ms), n)), "clock_error": hist((err_ms, n))},
        )
        for i in range(3)
    ]


def test_a_clock_just_under_the_rejection_bound_is_found_from_probe_timestamps() -> None:
    f = found(clock_skew(snap(minutes=_clock_minutes(240_000.0, 2))))  # 4 min < 5 min bound
    assert f and f[0].layer == "client" and f[0].region == "eu-west"
    assert "+24" in f[0].title or "+23" in f[0].title or "+25" in f[0].title


def test_synchronised_clocks_yield_no_skew() -> None:
    assert found(clock_skew(snap(minutes=_clock_minutes(8.0, 5)))) == []
    assert found(clock_skew(snap(minutes=_clock_minutes(-1500.0, 5)))) == []


def test_doctor_offset_counts_only_beyond_its_error_bound() -> None:
    sure = ClientReport(device="d1", clock_skew_ms=2600.0, clock_error_ms=100.0)
    unsure = ClientReport(device="d2", clock_skew_ms=2050.0, clock_error_ms=100.0)
    f = found(clock_skew(snap(client_reports=[sure, unsure])))
    assert [x.device for x in f] == ["d1"] and f[0].confidence >= PUBLIC_CONFIDENCE


# -- no data and no false alarm ----------------------------------------------------------


def test_an_empty_window_has_no_data() -> None:
    d = diagnose(snap())
    assert not d.has_data and d.findings == [] and "no telemetry" in d.summary


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    nodes=st.integers(1, 4),
    sent=st.integers(1, 20_000),
    rtt=st.floats(1.0, 80.0),
    sessions=st.integers(0, 60),
    short_sessions=st.integers(0, 40),
)
def test_a_healthy_window_never_yields_a_public_finding(
    seed: int, nodes: int, sent: int, rtt: float, sessions: int, short_sessions: int
) -> None:
    """Random load on healthy nodes: any mix of long sessions, one-shot publishers,
    traffic and RTT never produces a finding the customer would see."""
    rng = random.Random(seed)
    names = tuple(f"edge-{i}" for i in range(nodes))
    minutes = []
    for i in range(10):
        for node in names:
            m = healthy_minute(rng, T0 + i * MIN, node, sent=max(1, sent // 10))
            h = Histogram.latency()
            h.observe(rtt * rng.uniform(0.8, 1.2), 6)
            minutes.append(msgspec.structs.replace(m, stages={**m.stages, "rtt": h.to_data()}))
    conns = [
        conn(
            f"u{i}-d",
            T0 + rng.randrange(0, 5) * MIN,
            T0 + rng.randrange(5, 10) * MIN,
            node=rng.choice(names),
        )
        for i in range(sessions)
    ]
    conns += [
        conn("cli-send", T0 + i * 3_000, T0 + i * 3_000 + rng.randrange(50, 900), delivered=0)
        for i in range(short_sessions)
    ]
    traces = [
        _trace(p, f"u{r}-d", "acked", rng.uniform(5.0, 200.0)) for p in range(30) for r in range(3)
    ]
    d = diagnose(snap(minutes=minutes, connections=conns, traces=traces, to_ms=T0 + 10 * MIN))
    assert d.public == [], [f.title for f in d.findings]
    assert d.confident == [], [f.title for f in d.findings]


def test_healthy_minutes_fixture_stays_quiet() -> None:
    d = diagnose(snap(minutes=healthy_minutes(random.Random(7))))
    assert d.confident == []


def test_many_devices_overflowing_together_is_the_bound_not_each_device() -> None:
    rows = []
    for d in ("a", "b", "c", "e"):
        rows += [_trace(p, d, "resync") for p in range(3)]
        rows += [_trace(p, d, "acked", 20.0) for p in range(3, 8)]
    s = snap(traces=rows, minutes=_bound_minutes("gateway.send_queue_items", 12, 400.0, 300.0))
    assert found(slow_consumer(s)) == []
    d = diagnose(s)
    assert [f.setting for f in d.public] == ["gateway.send_queue_items"]


def test_a_bound_set_below_its_default_is_never_suggested_below_the_default() -> None:
    s = snap(
        minutes=_bound_minutes("storage.commit_batch_max", 50, 40.0, 14.0),
        settings=RunSettings(commit_batch_max=1),
    )
    f = found(bound_binds(s))
    assert f and f[0].suggested_value == 2000 and "not below the default 2000" in f[0].action


def test_a_session_closed_with_deliveries_pending_is_not_loss() -> None:
    # a one-shot publisher that is also a channel member closes right after its publish
    rows = []
    for pos in range(100, 110):
        rows += [_trace(pos, "fast-a", "acked", 30.0), _trace(pos, "fast-b", "acked", 30.0)]
        rows.append(_trace(pos, "cli-send", "acked" if pos < 102 else "closed", 20.0))
    assert found(undelivered_device(snap(traces=rows))) == []


def test_acks_that_keep_coming_while_positions_are_overdue_are_a_slow_reader() -> None:
    # a burst: the slow device acknowledges 100..104 slowly, then the test ends; positions
    # after 104 passed the deadline while it was still acknowledging earlier ones
    rows = []
    for pos in range(100, 130):
        rows += [_trace(pos, "fast-a", "acked", 30.0), _trace(pos, "fast-b", "acked", 30.0)]
        if pos < 105:  # published at T0 + pos s, acknowledged up to 30 s later
            rows.append(_trace(pos, "slow-d", "late" if pos > 101 else "acked", 30_000.0))
        else:
            rows.append(_trace(pos, "slow-d", "unacked"))
    items = undelivered_device(snap(traces=rows))
    assert found(items) == [] and "keep progressing" in rejected(items)[0].reason
    assert found(slow_consumer(snap(traces=rows)))[0].device == "slow-d"


def test_late_acks_through_a_bad_node_are_the_nodes_not_the_device() -> None:
    rows = []
    for pos in range(100, 110):
        rows += [_trace(pos, "fast-a", "acked", 30.0), _trace(pos, "fast-b", "acked", 30.0)]
        rows.append(
            msgspec.structs.replace(
                _trace(pos, "far-d", "late" if pos % 2 else "acked", 400.0), node="edge-b"
            )
        )
    conns = []
    for d in ("far-d", "b-d", "c-d"):
        for i in range(6):
            t = T0 + i * 25_000
            conns.append(conn(d, t, t + 20_000, "heartbeat_timeout", node="edge-b"))
    d = diagnose(snap(symptom="delay", traces=rows, connections=conns))
    assert d.findings[0].rule == "node_victims" and d.findings[0].node == "edge-b"
    assert all(f.rule != "slow_consumer" for f in d.findings)
    assert any(r.rule == "slow_consumer" and r.device == "far-d" for r in d.rejected)


def test_overdue_samples_behind_progressing_acks_make_a_slow_consumer() -> None:
    # one late ack, then the session ended with the rest still queued in the app
    rows = []
    for pos in range(100, 120):
        rows += [_trace(pos, "fast-a", "acked", 30.0), _trace(pos, "fast-b", "acked", 30.0)]
        if pos == 100:
            rows.append(_trace(pos, "slow-d", "acked", 900.0))
        elif pos == 101:
            rows.append(_trace(pos, "slow-d", "late", 9_000.0))  # acked at T0 + 110 s
        else:
            rows.append(_trace(pos, "slow-d", "unacked"))
    f = found(slow_consumer(snap(traces=rows)))
    assert f and f[0].device == "slow-d"
    d = diagnose(snap(symptom="delay", traces=rows))
    assert [x.rule for x in d.public] == ["slow_consumer"]

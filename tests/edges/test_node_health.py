"""Registry rows and per-app aggregates merged into the controller's node health."""

from __future__ import annotations

from relaydesk.server.directory import AUTO_PREFIX, node_health
from relaydesk.storage.nodes import NodeRow
from relaydesk.telemetry import Percentiles, Point

NOW = 1_800_000_000.0


def row(node: str, *, draining: bool = False, reason: str = "", beat: float = NOW) -> NodeRow:
    return NodeRow(node, "eu", "http://x", 0, draining, reason, 1_000, 0, int(beat * 1000), 3, 0.1)


def pct(n: int, p95: float | None) -> Percentiles:
    return Percentiles(n, None, p95, None, None)


def point(
    node: str, sent: int, errors: int, unexpected: int, active: int, rtt: Percentiles
) -> Point:
    return Point(
        0, "eu", node, "*", sent, errors, None, 0, 0, 0, 0, None, {}, 0, 0, {}, unexpected,
        None, active, 0, 0, 0, pct(0, None), rtt, pct(0, None), 0,
    )  # fmt: skip


def test_counts_add_up_across_apps_and_silent_nodes_are_left_out() -> None:
    rows = [row("a"), row("b", draining=True, reason=AUTO_PREFIX + "x"), row("c", beat=NOW - 60)]
    points = [
        point("a", 90, 10, 1, 10, pct(5, 40.0)),
        point("a", 10, 0, 1, 10, pct(50, 20.0)),  # the app with more probes speaks for RTT
        point("b", 0, 0, 0, 0, pct(0, None)),
    ]
    health = {h.node_id: h for h in node_health(rows, points, NOW, 10.0)}
    assert set(health) == {"a", "b"}
    a = health["a"]
    assert a.send_success == 100 / 110 and a.disconnect_rate == 2 / 20 and a.rtt_p95_ms == 20.0
    b = health["b"]
    assert b.draining and b.auto and b.drained_at == 1.0
    assert b.send_success is None and b.rtt_p95_ms is None and b.disconnect_rate is None

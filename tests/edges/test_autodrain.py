"""Automatic drain with hysteresis, driven by a pure clock."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from relaydesk.edges.autodrain import (
    AutoDrainPolicy,
    Decision,
    NodeHealth,
    NodeState,
    evaluate,
    outlier_reason,
)

POLICY = AutoDrainPolicy()
GOOD = {"send_success": 0.999, "rtt_p95_ms": 30.0, "disconnect_rate": 0.0}
BAD = {"send_success": 0.90, "rtt_p95_ms": 400.0, "disconnect_rate": 0.3}


class Cluster:
    """Registry flags as the shell would keep them, applying each decision."""

    def __init__(self, region_nodes: dict[str, str]) -> None:
        self.region = region_nodes
        self.draining: dict[str, tuple[bool, bool, float]] = {
            n: (False, False, 0.0) for n in region_nodes
        }
        self.states: dict[str, NodeState] = {}
        self.log: list[tuple[float, Decision]] = []

    def step(self, now: float, quality: dict[str, dict[str, float]]) -> list[Decision]:
        health = [
            NodeHealth(n, r, *self.draining[n][:2], drained_at=self.draining[n][2], **quality[n])  # type: ignore[arg-type]
            for n, r in self.region.items()
        ]
        self.states, decisions = evaluate(self.states, health, now, POLICY)
        for d in decisions:
            self.draining[d.node_id] = (d.action == "drain", d.action == "drain", now)
            self.log.append((now, d))
        return decisions


def test_a_lasting_outlier_is_drained_once_after_the_hold_time() -> None:
    c = Cluster({"a": "eu", "b": "eu", "c": "eu"})
    for t in range(0, 170, 30):
        assert c.step(t, {"a": GOOD, "b": GOOD, "c": BAD}) == []
    (d,) = c.step(180, {"a": GOOD, "b": GOOD, "c": BAD})
    assert d.node_id == "c" and d.action == "drain"
    assert "worse than its siblings in eu for 3 min" in d.reason
    assert "send success 90.0% vs siblings' 99.9%" in d.reason
    assert "RTT p95 400 ms vs siblings' 30 ms" in d.reason
    # Drained: no further decision until the cool-off has passed.
    for t in range(210, 480, 30):
        assert c.step(t, {"a": GOOD, "b": GOOD, "c": GOOD}) == []
    (u,) = c.step(480, {"a": GOOD, "b": GOOD, "c": GOOD})
    assert u.action == "undrain" and "5 min cool-off" in u.reason


def test_a_break_in_the_bad_streak_restarts_the_hold_time() -> None:
    c = Cluster({"a": "eu", "b": "eu"})
    c.step(0, {"a": GOOD, "b": BAD})
    c.step(120, {"a": GOOD, "b": BAD})
    c.step(150, {"a": GOOD, "b": GOOD})  # recovered for one evaluation
    assert c.step(200, {"a": GOOD, "b": BAD}) == []
    assert c.step(330, {"a": GOOD, "b": BAD}) == []
    assert [d.action for d in c.step(380, {"a": GOOD, "b": BAD})] == ["drain"]


def test_a_relapsing_node_is_tried_ever_more_rarely_and_never_flaps() -> None:
    c = Cluster({"a": "eu", "b": "eu"})
    t = 0.0
    while t < 4 * 3600:
        c.step(t, {"a": GOOD, "b": BAD})
        t += 30
    drains = [when for when, d in c.log if d.action == "drain"]
    gaps = [b - a for a, b in pairwise(drains)]
    assert gaps == sorted(gaps)  # cool-offs grow
    assert len(drains) <= 7  # 5, 10, 20, 40, 60, 60 min cool-offs + the hold times
    assert all(gap >= POLICY.cool_off_s + POLICY.outlier_for_s for gap in gaps)


def test_a_recovered_node_stays_in_service_after_probation() -> None:
    c = Cluster({"a": "eu", "b": "eu"})
    t = 0.0
    for _ in range(20):
        c.step(t, {"a": GOOD, "b": BAD})
        t += 30
    assert [d.action for _, d in c.log] == ["drain", "undrain"]
    for _ in range(400):
        c.step(t, {"a": GOOD, "b": GOOD})
        t += 30
    assert [d.action for _, d in c.log][-1] == "undrain"
    assert sum(1 for _, d in c.log if d.action == "drain") == 1


def test_never_the_last_node_of_a_region_nor_operator_drains() -> None:
    c = Cluster({"solo": "ap"})
    for t in range(0, 1000, 30):
        assert c.step(t, {"solo": BAD}) == []
    c = Cluster({"a": "eu", "b": "eu", "c": "eu", "d": "eu"})
    c.draining["a"] = (True, False, 0.0)  # the operator's drain
    for t in range(0, 400, 30):
        c.step(t, {"a": BAD, "b": GOOD, "c": BAD, "d": BAD})
    # Half of four may be drained: the operator's one and at most one more.
    assert {d.node_id for _, d in c.log if d.action == "drain"} <= {"c", "d"}
    assert sum(1 for _, d in c.log if d.action == "drain") == 1
    assert all(d.node_id != "a" for _, d in c.log)  # never undrains the operator's


def test_a_new_leader_continues_from_the_registry() -> None:
    health = [
        NodeHealth("a", "eu", False, **GOOD),
        NodeHealth("b", "eu", True, auto=True, drained_at=1000.0, **BAD),
    ]
    _, decisions = evaluate({}, health, 1000.0 + POLICY.cool_off_s, POLICY)
    assert [(d.node_id, d.action) for d in decisions] == [("b", "undrain")]


def test_regions_are_judged_apart_and_unmeasured_is_not_bad() -> None:
    eu_fast = NodeHealth("eu-1", "eu", False, rtt_p95_ms=20)
    ap_slow = NodeHealth("ap-1", "ap", False, rtt_p95_ms=300)
    ap_slow2 = NodeHealth("ap-2", "ap", False, rtt_p95_ms=310)
    assert outlier_reason(ap_slow, [ap_slow2], POLICY) is None
    assert outlier_reason(NodeHealth("x", "eu", False), [eu_fast], POLICY) is None
    assert (
        outlier_reason(replace(eu_fast, rtt_p95_ms=60), [eu_fast], POLICY) is None
    )  # < 50 ms more


metrics = st.fixed_dictionaries(
    {
        "send_success": st.none() | st.floats(0.985, 1.0),  # gaps under 2 points
        "rtt_p95_ms": st.none() | st.floats(10, 60),
        "disconnect_rate": st.none() | st.floats(0, 0.02),
    }
)


@settings(max_examples=60)
@given(st.lists(st.lists(metrics, min_size=3, max_size=3), min_size=1, max_size=30))
def test_healthy_noise_never_drains(series: list[list[dict[str, float | None]]]) -> None:
    c = Cluster({"a": "eu", "b": "eu", "c": "eu"})
    for i, minute in enumerate(series):
        c.step(i * 60.0, dict(zip("abc", minute, strict=True)))  # type: ignore[arg-type]
    assert c.log == []

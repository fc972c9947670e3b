"""Automatic drain: move clients off a node that is worse than its siblings, and back.

Theory of operation
-------------------
A node is an *outlier* when, over the last evaluation window, it is clearly worse
than the median of its *siblings* — the other undrained nodes of its region, which
share the clients' network path, so what differs is the node (or its last mile):

- send success more than ``success_gap`` under the siblings' median;
- clients' RTT p95 over ``rtt_ratio`` × and ``rtt_excess_ms`` above the median;
- unexpected-disconnect rate over ``disconnect_ratio`` × the median and above
  ``disconnect_floor``.

Hysteresis, so a node never flaps:

- **drain** only after the node has been an outlier for ``outlier_for_s`` without a
  break, and only while at least one sibling stays eligible and no more than
  ``max_drained_fraction`` of the region is drained;
- a drained node has no clients, so its recovery cannot be measured by them: it is
  **undrained on probation** after a *cool-off*, and drained again if it is still an
  outlier; a relapse within ``relapse_window_s`` of its last undrain doubles the
  cool-off (up to ``max_cool_off_s``), so a node that stays bad is tried ever more
  rarely and a node that recovered stays in service;
- nodes drained by an operator are left alone and are nobody's sibling.

Whether a drain was automatic is read from the registry (``NodeHealth.auto``), so a new
leader carries on where the last one stopped; only the cool-off doubling is state.

Pure: the registry's view, the measured health and ``now`` go in; the new state and
the decisions (each with its evidence) come out.  The shell writes the decisions to
the registry and the audit trail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import median
from typing import Literal


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """One node over the evaluation window (None: not measured)."""

    node_id: str
    region: str
    draining: bool  # as the registry says, whoever set it
    auto: bool = False  # the drain was this controller's (its reason says so)
    drained_at: float = 0.0  # when the flag last changed
    send_success: float | None = None
    rtt_p95_ms: float | None = None
    disconnect_rate: float | None = None


@dataclass(frozen=True, slots=True)
class AutoDrainPolicy:
    """Thresholds and times, with why each default is what it is."""

    #: Three minutes of one-minute aggregates: one bad minute is noise, three are not.
    outlier_for_s: float = 180.0
    #: First cool-off: five minutes, long enough for a passing incident to end.
    cool_off_s: float = 300.0
    #: A node that keeps relapsing is tried at most once an hour.
    max_cool_off_s: float = 3600.0
    #: A relapse this soon after an undrain counts against the node (doubles cool-off).
    relapse_window_s: float = 1800.0
    #: Two points of send success under the siblings' median.
    success_gap: float = 0.02
    #: RTT p95 at least twice the siblings' median and 50 ms more.
    rtt_ratio: float = 2.0
    rtt_excess_ms: float = 50.0
    #: Three times the siblings' disconnect rate, and at least 5 % of connections.
    disconnect_ratio: float = 3.0
    disconnect_floor: float = 0.05
    #: Never drain more than half a region automatically.
    max_drained_fraction: float = 0.5


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the controller remembers of one node between evaluations."""

    bad_since: float | None = None
    cool_off_s: float = 0.0  # of the current or last automatic drain
    undrained_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    node_id: str
    action: Literal["drain", "undrain"]
    reason: str


def outlier_reason(
    node: NodeHealth, siblings: Sequence[NodeHealth], policy: AutoDrainPolicy
) -> str | None:
    """Why ``node`` is worse than its siblings' median, or None."""

    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return median(known) if known else None

    reasons = []
    s = med([x.send_success for x in siblings])
    if (
        node.send_success is not None
        and s is not None
        and s - node.send_success > policy.success_gap
    ):
        reasons.append(f"send success {node.send_success:.1%} vs siblings' {s:.1%}")
    r = med([x.rtt_p95_ms for x in siblings])
    if (
        node.rtt_p95_ms is not None
        and r is not None
        and node.rtt_p95_ms >= policy.rtt_ratio * r
        and node.rtt_p95_ms - r >= policy.rtt_excess_ms
    ):
        reasons.append(f"clients' RTT p95 {node.rtt_p95_ms:.0f} ms vs siblings' {r:.0f} ms")
    d = med([x.disconnect_rate for x in siblings])
    if (
        node.disconnect_rate is not None
        and d is not None
        and node.disconnect_rate >= policy.disconnect_floor
        and node.disconnect_rate >= policy.disconnect_ratio * d
    ):
        reasons.append(f"unexpected disconnects {node.disconnect_rate:.1%} vs siblings' {d:.1%}")
    return "; ".join(reasons) or None


def evaluate(
    states: Mapping[str, NodeState],
    health: Sequence[NodeHealth],
    now: float,
    policy: AutoDrainPolicy,
) -> tuple[dict[str, NodeState], list[Decision]]:
    """One evaluation: the next state of every node and what to change now."""
    out: dict[str, NodeState] = {}
    decisions: list[Decision] = []
    by_region: dict[str, list[NodeHealth]] = {}
    for h in health:
        by_region.setdefault(h.region, []).append(h)
    for region in sorted(by_region):
        nodes = sorted(by_region[region], key=lambda h: h.node_id)
        drained = {h.node_id for h in nodes if h.draining}
        for h in nodes:
            st = states.get(h.node_id, NodeState())
            if h.draining and h.auto:
                cool_off = st.cool_off_s or policy.cool_off_s
                if now - h.drained_at >= cool_off:
                    drained.discard(h.node_id)
                    decisions.append(
                        Decision(
                            h.node_id,
                            "undrain",
                            f"on probation after a {cool_off / 60:.0f} min cool-off",
                        )
                    )
                    st = replace(st, cool_off_s=cool_off, undrained_at=now, bad_since=None)
                out[h.node_id] = st
                continue
            if h.draining:  # drained by an operator: not ours to judge
                out[h.node_id] = replace(st, bad_since=None)
                continue
            siblings = [x for x in nodes if x.node_id != h.node_id and x.node_id not in drained]
            reason = outlier_reason(h, siblings, policy) if siblings else None
            if reason is None:
                out[h.node_id] = replace(st, bad_since=None)
                continue
            bad_since = st.bad_since if st.bad_since is not None else now
            st = replace(st, bad_since=bad_since)
            lasting = now - bad_since >= policy.outlier_for_s
            room = (len(drained) + 1) <= policy.max_drained_fraction * len(nodes)
            if lasting and room:
                relapse = (
                    st.undrained_at is not None and now - st.undrained_at <= policy.relapse_window_s
                )
                cool_off = (
                    min(max(st.cool_off_s, policy.cool_off_s) * 2, policy.max_cool_off_s)
                    if relapse
                    else policy.cool_off_s
                )
                drained.add(h.node_id)
                decisions.append(
                    Decision(
                        h.node_id,
                        "drain",
                        f"worse than its siblings in {region} for "
                        f"{(now - bad_since) / 60:.0f} min: {reason}",
                    )
                )
                st = replace(st, cool_off_s=cool_off, bad_since=None)
            out[h.node_id] = st
    return out, decisions

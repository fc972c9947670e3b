"""Rank the nodes of a cluster for one client region (docs/scaling.md §Edge selection).

Theory of operation
-------------------
A node is *eligible* when its last heartbeat is fresh and it is not draining; every
other node is left out, with the reason.  Eligible nodes fall into two tiers:

- **healthy**: measured send success at or above ``success_floor`` (or not measured
  yet) and load below capacity;
- **degraded**: below the success floor, or full.  A degraded node is still listed,
  last, because a client with nowhere else to go is better served by it than by none.

Within a tier nodes are ordered by a *cost in milliseconds*, the unit a user feels:

- **distance**: the fibre propagation floor of a round trip from the client region's
  city to the node's (``geo.propagation_floor_rtt_ms``); when either city is unknown,
  0 for the same region label and ``unknown_distance_ms`` otherwise;
- **quality**: how much the node's clients' RTT p95 exceeds the best sibling's in the
  same region (siblings share the path, so the excess is the node's own), and a
  penalty for send success under the floor;
- **load**: up to ``load_weight_ms`` as connections approach capacity, and up to
  ``cpu_weight_ms`` as the node's process approaches a full core.

Ties go to the node id, so the same snapshot always gives the same order.  Pure: the
registry snapshot, the measured quality and ``now`` are parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from relaydesk.edges.geo import city_for, great_circle_km, propagation_floor_rtt_ms


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the registry and telemetry see it."""

    node_id: str
    region: str
    url: str
    draining: bool
    heartbeat_at: float  # epoch seconds of its last heartbeat
    connections: int = 0
    capacity: int = 0  # connections it is sized for; 0: not stated
    cpu: float = 0.0  # busy fraction of one core over its last heartbeat interval
    send_success: float | None = None  # recent window, None: not measured
    rtt_p95_ms: float | None = None  # its clients' probe RTT p95, recent window


@dataclass(frozen=True, slots=True)
class RankingPolicy:
    """The constants of the ranking, each with the reason for its default."""

    #: Three missed heartbeats at the default 2 s interval, plus scheduling slack.
    heartbeat_expiry_s: float = 10.0
    #: Region label -> city, beyond the conventional ones of ``geo``.
    region_cities: Mapping[str, str] = field(default_factory=dict)
    #: Cost of a different region whose distance cannot be computed: a typical
    #: intra-continent round trip, so a known near node always wins over it.
    unknown_distance_ms: float = 150.0
    #: Below this send success a node is degraded (the diagnosis' own healthy bound).
    success_floor: float = 0.99
    #: Cost of each missing percentage point of send success, in ms: one point is
    #: worth a continent (a lost send costs a retry, seconds on a mobile link).
    success_point_ms: float = 100.0
    #: Cost of a node at full capacity; small next to distance, so load only
    #: reorders nodes at about the same distance.
    load_weight_ms: float = 20.0
    #: Cost of a node whose process uses a whole core.
    cpu_weight_ms: float = 10.0


@dataclass(frozen=True, slots=True)
class RankedEdge:
    """A node's place in the answer, with why it stands there."""

    node_id: str
    url: str
    region: str
    healthy: bool
    cost_ms: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EdgeRanking:
    """Ordered eligible nodes, and the nodes left out with the reason."""

    region: str
    edges: tuple[RankedEdge, ...]
    excluded: tuple[tuple[str, str], ...]


def _distance(client_region: str, node: NodeView, policy: RankingPolicy) -> tuple[float, str]:
    if node.region == client_region:
        return 0.0, f"same region {client_region}"
    a = city_for(client_region, policy.region_cities)
    b = city_for(node.region, policy.region_cities)
    if a is None or b is None:
        unknown = client_region if a is None else node.region
        return (
            policy.unknown_distance_ms,
            f"region {unknown!r} has no known city: {policy.unknown_distance_ms:.0f} ms assumed",
        )
    km = great_circle_km(a, b)
    floor = propagation_floor_rtt_ms(km)
    return floor, f"{a}→{b} {km:,.0f} km: propagation floor {floor:.0f} ms RTT"


def _best_rtt_by_region(nodes: Sequence[NodeView]) -> dict[str, float]:
    best: dict[str, float] = {}
    for n in nodes:
        if n.rtt_p95_ms is not None:
            best[n.region] = min(best.get(n.region, n.rtt_p95_ms), n.rtt_p95_ms)
    return best


def rank_edges(
    nodes: Sequence[NodeView], client_region: str, now: float, policy: RankingPolicy
) -> EdgeRanking:
    """The nodes a client of ``client_region`` should try, best first."""
    excluded: list[tuple[str, str]] = []
    eligible: list[NodeView] = []
    for n in sorted(nodes, key=lambda n: n.node_id):
        age = now - n.heartbeat_at
        if n.draining:
            excluded.append((n.node_id, "draining"))
        elif age > policy.heartbeat_expiry_s:
            excluded.append((n.node_id, f"no heartbeat for {age:.0f} s"))
        else:
            eligible.append(n)
    best_rtt = _best_rtt_by_region(eligible)
    ranked: list[tuple[int, float, str, RankedEdge]] = []
    for n in eligible:
        cost, where = _distance(client_region, n, policy)
        reasons = [where]
        healthy = True
        if n.rtt_p95_ms is not None:
            excess = n.rtt_p95_ms - best_rtt[n.region]
            if excess > 0:
                cost += excess
                reasons.append(
                    f"clients' RTT p95 {n.rtt_p95_ms:.0f} ms, {excess:.0f} ms over the best "
                    f"node of {n.region}"
                )
        if n.send_success is not None and n.send_success < policy.success_floor:
            healthy = False
            cost += (policy.success_floor - n.send_success) * 100 * policy.success_point_ms
            reasons.append(
                f"send success {n.send_success:.1%} under {policy.success_floor:.0%}: degraded"
            )
        if n.capacity > 0:
            load = n.connections / n.capacity
            if load >= 1.0:
                healthy = False
                reasons.append(f"full: {n.connections} of {n.capacity} connections")
            cost += min(load, 1.0) * policy.load_weight_ms
            reasons.append(f"load {load:.0%} of capacity")
        cpu = min(max(n.cpu, 0.0), 1.0)
        cost += cpu * policy.cpu_weight_ms
        if cpu >= 0.5:
            reasons.append(f"CPU {cpu:.0%} of a core")
        edge = RankedEdge(n.node_id, n.url, n.region, healthy, round(cost, 1), tuple(reasons))
        ranked.append((0 if healthy else 1, cost, n.node_id, edge))
    ranked.sort(key=lambda r: (r[0], r[1], r[2]))
    return EdgeRanking(client_region, tuple(r[3] for r in ranked), tuple(excluded))

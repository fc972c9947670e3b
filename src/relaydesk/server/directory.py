"""The edge directory: which nodes a client of an app and region should try, in order.

The registry gives every node's address, drain flag, heartbeat and load; telemetry
gives each node's recent send success and its clients' RTT p95 for the app; the pure
``edges.rank_edges`` orders them.  The answer carries the reasons, so an operator (and
a curious client) can see why a node ranks where it does.

``AutoDrainer`` runs on the leader when ``[cluster] auto_drain`` is on: every
``auto_drain_interval_s`` it merges every app's per-node aggregates into node health
and lets the pure ``edges.autodrain`` controller drain and undrain (docs/operations.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from relaydesk.clock import Clock, millis
from relaydesk.edges import EdgeRanking, NodeView, RankingPolicy, rank_edges
from relaydesk.edges.autodrain import AutoDrainPolicy, Decision, NodeHealth, NodeState, evaluate
from relaydesk.edges.urls import ws_url
from relaydesk.server.cluster.periodic import Periodic
from relaydesk.server.cluster.registry import NodeRegistry
from relaydesk.storage.nodes import NodeRow
from relaydesk.telemetry import Point, QualityService, SeriesQuery

log = logging.getLogger("relaydesk.directory")

#: Quality is judged over the last ten minutes: long enough for a few probes per
#: client (they probe every minute or so), short enough to follow an incident.
QUALITY_WINDOW_S = 600


def node_views(
    rows: list[NodeRow], quality: Mapping[str, tuple[float | None, float | None]]
) -> list[NodeView]:
    """Registry rows with each node's (send success, RTT p95 ms), when measured."""
    views = []
    for r in rows:
        success, rtt = quality.get(r.node_id, (None, None))
        views.append(
            NodeView(
                node_id=r.node_id,
                region=r.region,
                url=ws_url(r.public_url),
                draining=r.draining,
                heartbeat_at=r.heartbeat_ms / 1000,
                connections=r.connections,
                capacity=r.capacity,
                cpu=r.cpu,
                send_success=success,
                rtt_p95_ms=rtt,
            )
        )
    return views


class Directory:
    """Ranks the registry's nodes for one app and client region."""

    def __init__(
        self,
        registry: NodeRegistry,
        quality: QualityService | None,
        clock: Clock,
        policy: RankingPolicy,
    ) -> None:
        self.registry = registry
        self.quality = quality
        self.clock = clock
        self.policy = policy

    async def node_quality(self, app: str) -> dict[str, tuple[float | None, float | None]]:
        """Per node: send success and clients' RTT p95 over the recent window."""
        if self.quality is None:
            return {}
        now_ms = millis(self.clock)
        result = await self.quality.series(
            SeriesQuery(
                app,
                now_ms - QUALITY_WINDOW_S * 1000,
                now_ms,
                step_s=QUALITY_WINDOW_S,
                group_by="node",
            )
        )
        return {s.node: (s.total.send_success, s.total.rtt_p95_ms.p95) for s in result.series}

    async def views(self, app: str) -> list[NodeView]:
        return node_views(await self.registry.nodes(), await self.node_quality(app))

    async def rank(self, app: str, region: str) -> EdgeRanking:
        return rank_edges(await self.views(app), region, self.clock.time(), self.policy)

    async def move_hints(self, region: str, limit: int = 5) -> list[str]:
        """Where clients of a draining node in ``region`` should go, best first (by
        registry only: distance, health and load, no per-app quality)."""
        ranking = rank_edges(
            node_views(await self.registry.nodes(), {}), region, self.clock.time(), self.policy
        )
        return [e.url for e in ranking.edges if e.node_id != self.registry.node_id][:limit]


#: Registry drain reasons written by the automatic drain start with this, so a new
#: leader knows which drains are its to lift.
AUTO_PREFIX = "auto: "
#: Health is judged over the current and the previous minute of aggregates.
AUTO_WINDOW_S = 120


def node_health(
    rows: list[NodeRow], points: Iterable[Point], now: float, expiry_s: float
) -> list[NodeHealth]:
    """Live nodes with their health merged over every app's points (grouped by node)."""
    sent: dict[str, int] = {}
    errors: dict[str, int] = {}
    unexpected: dict[str, int] = {}
    active: dict[str, int] = {}
    rtt: dict[str, tuple[int, float]] = {}  # probes, p95 of the app with the most probes
    for p in points:
        sent[p.node] = sent.get(p.node, 0) + p.sent
        errors[p.node] = errors.get(p.node, 0) + p.send_errors
        unexpected[p.node] = unexpected.get(p.node, 0) + p.unexpected_disconnects
        active[p.node] = active.get(p.node, 0) + p.active
        n, p95 = p.rtt_p95_ms.n, p.rtt_p95_ms.p95
        if p95 is not None and n > rtt.get(p.node, (0, 0.0))[0]:
            rtt[p.node] = (n, p95)
    out = []
    for r in rows:
        if now - r.heartbeat_ms / 1000 > expiry_s:
            continue  # a silent node is the directory's business, not a sibling
        answered = sent.get(r.node_id, 0) + errors.get(r.node_id, 0)
        conns = active.get(r.node_id, 0)
        out.append(
            NodeHealth(
                node_id=r.node_id,
                region=r.region,
                draining=r.draining,
                auto=r.drain_reason.startswith(AUTO_PREFIX),
                drained_at=r.drain_changed_ms / 1000,
                send_success=sent.get(r.node_id, 0) / answered if answered else None,
                rtt_p95_ms=rtt[r.node_id][1] if r.node_id in rtt else None,
                disconnect_rate=unexpected.get(r.node_id, 0) / conns if conns else None,
            )
        )
    return out


class AutoDrainer:
    """On the leader: drain nodes worse than their siblings, undrain them on probation."""

    def __init__(
        self,
        directory: Directory,
        apps: Callable[[], Iterable[str]],
        interval_s: float,
        policy: AutoDrainPolicy,
    ) -> None:
        self.directory = directory
        self.apps = apps
        self.interval_s = interval_s
        self.policy = policy
        self.states: dict[str, NodeState] = {}
        self.decisions: list[Decision] = []  # the last evaluation's, for the console
        #: Called after each drain or undrain was written (e.g. notes on the tickets that
        #: recommended it); its failures are logged, never stop the controller.
        self.on_change: Callable[[Decision], Awaitable[object]] | None = None
        self._ticker = Periodic("automatic drain", interval_s, self.evaluate)

    async def start(self) -> None:
        self._ticker.start()

    async def aclose(self) -> None:
        await self._ticker.aclose()

    async def _points(self, now: float) -> list[Point]:
        """Every app's per-node aggregates over the window.  A node undrained on probation
        within the window is judged only from what came after its undrain: the minutes
        that got it drained are not news, and judging it by them again would drain it
        again (flapping) before its new clients had said anything."""
        d = self.directory
        if d.quality is None:
            return []
        now_ms = int(now * 1000)
        start_ms = now_ms - AUTO_WINDOW_S * 1000
        probation = {
            node: int(st.undrained_at * 1000)
            for node, st in self.states.items()
            if st.undrained_at is not None and st.undrained_at * 1000 > start_ms
        }
        points: list[Point] = []
        for app in self.apps():
            result = await d.quality.series(
                SeriesQuery(app, start_ms, now_ms, step_s=AUTO_WINDOW_S, group_by="node")
            )
            points.extend(s.total for s in result.series if s.node not in probation)
            for node, since_ms in sorted(probation.items()):
                fresh = await d.quality.series(
                    SeriesQuery(
                        app, since_ms, now_ms, step_s=AUTO_WINDOW_S, node=node, group_by="node"
                    )
                )
                points.extend(s.total for s in fresh.series if s.node == node)
        return points

    async def evaluate(self) -> list[Decision]:
        d = self.directory
        now = d.clock.time()
        points = await self._points(now)
        health = node_health(await d.registry.nodes(), points, now, d.policy.heartbeat_expiry_s)
        self.states, decisions = evaluate(self.states, health, now, self.policy)
        for decision in decisions:
            drain = decision.action == "drain"
            reason = AUTO_PREFIX + decision.reason if drain else ""
            await d.registry.set_draining(decision.node_id, drain, reason, who="auto-drain")
            log.warning(
                "automatic %s of %s: %s", decision.action, decision.node_id, decision.reason
            )
            if self.on_change is not None:
                try:
                    await self.on_change(decision)
                except Exception:  # the drain stands; the notes are a courtesy
                    log.exception("could not note the %s of %s", decision.action, decision.node_id)
        self.decisions = decisions
        return decisions

"""The edge directory: which nodes a client of an app and region should try, in order.

The registry gives every node's address, drain flag, heartbeat and load; telemetry
gives each node's recent send success and its clients' RTT p95 for the app; the pure
``edges.rank_edges`` orders them.  The answer carries the reasons, so an operator (and
a curious client) can see why a node ranks where it does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from relaydesk.clock import Clock, millis
from relaydesk.edges import EdgeRanking, NodeView, RankingPolicy, rank_edges
from relaydesk.server.cluster.registry import NodeRegistry
from relaydesk.storage.nodes import NodeRow
from relaydesk.telemetry import QualityService, SeriesQuery

log = logging.getLogger("relaydesk.directory")

#: Quality is judged over the last ten minutes: long enough for a few probes per
#: client (they probe every minute or so), short enough to follow an incident.
QUALITY_WINDOW_S = 600


def ws_url(public_url: str) -> str:
    """The WebSocket endpoint of a node whose HTTP base URL is ``public_url``."""
    base = public_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return ws + base[len(http) :] + "/v1/ws"
    return base + "/v1/ws"


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

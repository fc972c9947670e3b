"""This node's entry in the node registry, and the drain flag read back from it.

Every ``node_heartbeat_ms`` the node upserts its row (``storage/nodes.py``): region,
public URL, capacity, connections and the CPU its process used since the last beat.
The same statement returns the row as stored, so the node learns within one interval
that an operator (CLI, admin API, console, or the automatic drain) set or cleared its
``draining`` flag, and calls ``on_drain`` — the gateway then refuses new logins and
moves its clients elsewhere (docs/operations.md "Draining a node").

Works on one node with SQLite (the registry then lists one node) as on a cluster.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable

from relaydesk.clock import Clock, millis
from relaydesk.config import Settings
from relaydesk.server.cluster.periodic import Periodic
from relaydesk.storage.engine import Database
from relaydesk.storage.nodes import (
    NODES_MIGRATIONS,
    NodeRow,
    heartbeat_tx,
    list_nodes_tx,
    set_draining_tx,
)

log = logging.getLogger("relaydesk.cluster")

DrainHook = Callable[[bool, str], Awaitable[None]]
#: (who, from where, "node.drain"/"node.undrain", node id, reason): the audit log.
AuditHook = Callable[[str, str, str, str, str], Awaitable[None]]


class NodeRegistry:
    """Keeps this node's registry row fresh and reports drain changes."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        connections: Callable[[], int],
    ) -> None:
        self.db = db
        self.clock = clock
        s = settings.server
        self.node_id = s.node_id
        self.region = s.region
        self.public_url = settings.public_url
        self.capacity = s.capacity
        self.interval_s = settings.cluster.node_heartbeat_ms / 1000
        self._connections = connections
        self.on_drain: DrainHook | None = None
        self.audit: AuditHook | None = None
        self.draining = False
        self.drain_reason = ""
        self._started_ms = millis(clock)
        self._cpu_mark = (time.monotonic(), self._cpu_seconds())
        self._ticker = Periodic("node-registry heartbeat", self.interval_s, self.beat)
        db.migrate("nodes", NODES_MIGRATIONS)

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def _cpu_fraction(self) -> float:
        wall, cpu = time.monotonic(), self._cpu_seconds()
        last_wall, last_cpu = self._cpu_mark
        self._cpu_mark = (wall, cpu)
        return max(0.0, (cpu - last_cpu) / max(wall - last_wall, 1e-3))

    async def start(self) -> None:
        await self.beat()  # listed before the node says it is ready
        self._ticker.start()

    async def aclose(self) -> None:
        await self._ticker.aclose()

    async def beat(self) -> NodeRow:
        """Write this node's row now; apply a drain flag changed by an operator."""
        connections, cpu, now_ms = self._connections(), self._cpu_fraction(), millis(self.clock)
        row = await self.db.write(
            lambda tx: heartbeat_tx(
                tx,
                self.node_id,
                self.region,
                self.public_url,
                self.capacity,
                self._started_ms,
                now_ms,
                connections,
                round(cpu, 3),
            )
        )
        if row.draining != self.draining or row.drain_reason != self.drain_reason:
            self.draining, self.drain_reason = row.draining, row.drain_reason
            log.warning(
                "node %s %s%s",
                self.node_id,
                "draining" if row.draining else "undrained",
                f": {row.drain_reason}" if row.drain_reason else "",
            )
            if self.on_drain is not None:
                await self.on_drain(row.draining, row.drain_reason)
        return row

    async def nodes(self) -> list[NodeRow]:
        return await self.db.read(list_nodes_tx)

    async def set_draining(
        self,
        node_id: str,
        draining: bool,
        reason: str,
        *,
        who: str = "operator",
        address: str = "local",
    ) -> NodeRow:
        """Set or clear ``node_id``'s drain flag (``LookupError``: no such node), written
        to the audit log as ``who`` from ``address``.

        The flag takes effect on that node's next heartbeat; on this node at once.
        """
        now_ms = millis(self.clock)
        row = await self.db.write(lambda tx: set_draining_tx(tx, node_id, draining, reason, now_ms))
        if self.audit is not None:
            action = "node.drain" if draining else "node.undrain"
            await self.audit(who, address, action, node_id, reason)
        if node_id == self.node_id:
            await self.beat()
        return row

"""Channel locks for the gateway and the HTTP API, and the TTL sweeper (§5.12).

Every change is a ``LockOp`` of the hub's group commit, so the database decides who
holds a lock, across nodes.  The sweeper runs on every node once a second: for each
held lock it asks the cluster-wide presence whether the holder has a connected
device; if not it starts the TTL clock in the database (a clock already running is
kept), if so it stops it, and a clock that ran out is submitted as ``expire``, which
the commit re-checks (holder unchanged, deadline passed), so two nodes sweeping the
same lock expire it once.  A node starts deadlines only after it has heard the
other nodes' presence for ``PRESENCE_SETTLE_S``, so a node that just started never
takes a holder connected elsewhere for gone.
"""

from __future__ import annotations

import functools

from relaydesk.clock import millis
from relaydesk.protocol.addresses import channel_conversation
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Event, LockInfo
from relaydesk.server.cluster.periodic import Periodic
from relaydesk.server.routing.hub import Hub
from relaydesk.storage import Tx
from relaydesk.storage.locks import (
    LockOp,
    held_locks_tx,
    list_locks_tx,
    set_deadline_tx,
)

# How often the sweeper looks at held locks: the TTL is honoured within about this.
LOCK_SWEEP_S = 1.0


class LockService:
    """The locks of every app served by one hub."""

    def __init__(self, hub: Hub, *, settle_s: float = 0.0) -> None:
        self.hub = hub
        self._settle_s = settle_s
        self._started = 0.0
        self._sweeper = Periodic("lock-sweeper", LOCK_SWEEP_S, self._sweep_step)
        self.stats = {"expired": 0, "sweeps": 0}

    async def list(self, app: str, reader: str | None, channel: str) -> list[LockInfo]:
        """A channel's locks, for its members (``reader``) or a backend (None)."""
        conv = channel_conversation(channel)
        store = self.hub.store

        def run(tx: Tx) -> list[LockInfo]:
            if reader is not None and not store.is_member_tx(tx, app, conv, reader):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of channel {channel!r}")
            return [
                LockInfo(
                    name=s.name,
                    ttl_s=s.ttl_s,
                    holder=s.holder,
                    since=s.since,
                    waiters=list(s.waiters),
                )
                for s in list_locks_tx(tx, app, channel)
            ]

        return await self.hub.db.read(run)

    async def change(
        self,
        app: str,
        actor: str,
        channel: str,
        op: str,
        name: str,
        *,
        ttl_s: int = 10,
        wait: bool = False,
        privileged: bool = False,
        holder: str = "",
    ) -> Event:
        outcome = await self.hub.apply(
            LockOp(
                app=app,
                actor=actor,
                device="server",
                conv=channel_conversation(channel),
                op=op,
                name=name,
                ts=millis(self.hub.clock),
                ttl_s=ttl_s,
                wait=wait,
                privileged=privileged,
                holder=holder,
            )
        )
        if outcome.error is not None:
            raise outcome.error
        assert outcome.event is not None
        return outcome.event

    # -- the TTL sweeper -----------------------------------------------------------

    def start(self) -> None:
        if not self._sweeper.running:
            self._started = self.hub.clock.monotonic()
        self._sweeper.start()

    async def aclose(self) -> None:
        await self._sweeper.aclose()

    async def _sweep_step(self) -> None:
        await self.sweep(self.hub.clock.monotonic() - self._started >= self._settle_s)

    async def sweep(self, settled: bool = True) -> int:
        """One pass; returns how many locks expired."""
        hub = self.hub
        self.stats["sweeps"] += 1
        held = await hub.db.read(held_locks_tx)
        now = millis(hub.clock)
        expired = 0
        for app, channel, name, holder, ttl_s, deadline in held:
            [presence] = hub.presence(app, [holder])
            if presence.online:
                if deadline is not None:
                    await hub.db.write(
                        functools.partial(
                            set_deadline_tx,
                            app=app,
                            channel=channel,
                            name=name,
                            holder=holder,
                            deadline_ms=None,
                        )
                    )
                continue
            if deadline is None:
                if settled:
                    await hub.db.write(
                        functools.partial(
                            set_deadline_tx,
                            app=app,
                            channel=channel,
                            name=name,
                            holder=holder,
                            deadline_ms=now + ttl_s * 1000,
                        )
                    )
                continue
            if deadline <= now:
                try:
                    await self.change(
                        app, "", channel, "expire", name, privileged=True, holder=holder
                    )
                except ProtocolError:
                    continue  # another node expired it, or the holder changed meanwhile
                expired += 1
                self.stats["expired"] += 1
        return expired

"""Leader election by a lease in the database (``storage/lease.py``).

Theory of operation
-------------------
Every node runs :class:`LeaderLease`.  Every ``ttl/3`` seconds a follower tries to
acquire the lease and the leader renews it, each with one atomic statement.  A leader
that cannot renew (database unreachable, statement slow, row taken over) steps down by
itself once its lease has less than ``ttl/3`` left, measured on its own clock, before
any other node can take it over (which needs the lease to have *expired*); so two nodes
never run the jobs at once while clocks agree to well under ``ttl/3``.

When the leader dies, its lease expires ``ttl`` after its last renewal and the next
follower attempt takes it: the jobs move within ``ttl + ttl/3`` (20 s with the default
15 s TTL).  A clean shutdown releases the lease, so the move takes at most ``ttl/3``.  A
node that restarts under the same ``server.node_id`` takes its own lease back at once.

``on_change(leader, epoch)`` starts or stops the jobs; the epoch (fencing token) grows
with every change of holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from relaydesk.clock import Clock
from relaydesk.storage.engine import Database
from relaydesk.storage.lease import LeaseStore, lease_migrations

log = logging.getLogger("relaydesk.cluster.lease")

#: The lease that guards the desk's background jobs and the retention sweeps.
DESK_LEASE: Final = "desk-jobs"


class LeaderLease:
    """Holds, renews and gives up one named lease (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        holder: str,
        ttl_s: float,
        on_change: Callable[[bool, int], Awaitable[None]],
        name: str = DESK_LEASE,
    ) -> None:
        self._db = db
        self._clock = clock
        self._store = LeaseStore()
        self._name = name
        self._holder = holder
        self._ttl_ms = int(ttl_s * 1000)
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.epoch = 0
        self.expires_at = 0
        self.is_leader = False
        self.changes = 0
        db.migrate("lease", lease_migrations())

    @property
    def interval_s(self) -> float:
        """How often the lease is renewed or tried."""
        return self._ttl_ms / 3000

    def holds(self) -> bool:
        """Whether this node leads with time to spare (a fence for jobs to check before
        each side effect: after a long pause it is False before the lease loop runs)."""
        return self.is_leader and self._now() < self.expires_at - self._ttl_ms // 3

    def _now(self) -> int:
        return int(self._clock.time() * 1000)

    async def step(self) -> bool:
        """One attempt: renew if leading, else try to acquire; return leadership."""
        now = self._now()
        expires = now + self._ttl_ms
        if self.is_leader:
            epoch = self.epoch
            ok = await self._db.write(
                lambda tx: self._store.renew(tx, self._name, self._holder, epoch, expires)
            )
            if ok:
                self.expires_at = expires
            else:
                log.warning("lease %s taken over; stepping down", self._name)
                await self._set(False)
        else:
            epoch_or_none = await self._db.write(
                lambda tx: self._store.acquire(tx, self._name, self._holder, now, expires)
            )
            if epoch_or_none is not None:
                self.epoch, self.expires_at = epoch_or_none, expires
                log.info("lease %s acquired (epoch %d)", self._name, self.epoch)
                await self._set(True)
        return self.is_leader

    async def _set(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        self.changes += 1
        await self._on_change(leader, self.epoch)

    async def _guarded_step(self) -> None:
        try:
            await asyncio.wait_for(self.step(), timeout=self.interval_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # database trouble: keep trying, but fence ourselves
            log.warning("lease %s: %r", self._name, exc)
        if self.is_leader and self._now() >= self.expires_at - self._ttl_ms // 3:
            log.warning("lease %s could not be renewed in time; stepping down", self._name)
            await self._set(False)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._guarded_step()

    async def start(self) -> None:
        """Try at once (a lone node leads before it reports ready), then keep going."""
        await self._guarded_step()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="leader-lease")

    async def aclose(self) -> None:
        """Stop trying; if leading, stop the jobs and release the lease for the others."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.is_leader:
            await self._set(False)
            epoch = self.epoch
            with contextlib.suppress(Exception):
                await self._db.write(
                    lambda tx: self._store.release(tx, self._name, self._holder, epoch)
                )

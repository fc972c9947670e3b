"""The routing hub of one node: group commit, fan-out, presence, cursors.

Theory of operation (docs/protocol.md §4)
-----------------------------------------
Every state change (publish, join, leave, read marker, delete) is an operation
submitted to one bounded queue.  A single writer task takes everything that queued
while the previous commit ran and applies it in one transaction (group commit).
After the commit, still in that task and in commit order, it updates the membership
cache, calls each operation's completion callback (the gateway queues the puback)
and fans each new event out to the online connections of its audience, then
advances ``fanned_pos``.  Because a single task does all of this, a connection that
compares its position with ``fanned_pos`` between two awaits sees a consistent
cut: every event at or below it has been offered to live connections already.

Acknowledgements from devices are cumulative positions; they are coalesced in
memory and flushed every ``CURSOR_FLUSH_S`` in one transaction.  Losing the last
flush to a crash only means a few events are offered again, which the SDK drops
by position.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets as pysecrets
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from relaydesk.clock import Clock, millis
from relaydesk.config import Settings
from relaydesk.protocol.addresses import Conversation, channel_conversation, resolve
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Event, PresenceChange, UserPresence
from relaydesk.storage import Database, Tx
from relaydesk.storage.messages import (
    BatchResult,
    JoinOp,
    LeaveOp,
    MessageStore,
    Op,
    Outcome,
    PublishOp,
)
from relaydesk.telemetry.recorder import Recorder, Trace

log = logging.getLogger("relaydesk.hub")

CURSOR_FLUSH_S = 0.5
# Bound of the commit queue: about two seconds of peak publish load.  Past it a
# publish is refused with RATE_LIMITED ("server busy") instead of queueing more.
COMMIT_QUEUE_MAX = 50_000
MEMBER_CACHE_MAX = 100_000

Done = Callable[[Outcome], None]


class Endpoint(Protocol):
    """What the hub needs of a live connection (the gateway's ``Connection``)."""

    app: str
    user: str
    device: str

    def offer(self, event: Event, encodings: dict[str, bytes]) -> None: ...

    def push_presence(self, change: PresenceChange) -> None: ...

    def traced(self, pos: int, trace: Trace) -> None: ...


class Hub:
    """Routing for one node (cluster fan-out comes through the bus later)."""

    def __init__(
        self,
        db: Database,
        store: MessageStore,
        settings: Settings,
        clock: Clock,
        recorder: Recorder | None = None,
    ) -> None:
        self.db = db
        # Telemetry (None: off).  The writer stamps commit start/end and the end of
        # fan-out once per batch; see relaydesk/telemetry/recorder.py.
        self.recorder = recorder
        self.store = store
        self.settings = settings
        self.clock = clock
        self.secrets: dict[str, str] = {}
        self.fanned_pos = 0
        self._queue: asyncio.Queue[tuple[Op, Done]] = asyncio.Queue(COMMIT_QUEUE_MAX)
        self._members: dict[tuple[str, str], dict[str, str]] = {}
        self._online: dict[tuple[str, str], set[Endpoint]] = {}
        self._since: dict[tuple[str, str], int] = {}
        self._user_channels: dict[tuple[str, str], set[str]] = {}
        self._cursors: dict[tuple[str, str, str], int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = {"commits": 0, "ops": 0, "fanout_offers": 0, "busy_rejections": 0}

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self.secrets = await self.db.read(self.store.app_secrets_tx)
        self.fanned_pos = await self.db.read(self.store.last_pos_tx)
        self._tasks = [
            asyncio.create_task(self._writer(), name="hub-writer"),
            asyncio.create_task(self._cursor_flusher(), name="hub-cursors"),
            asyncio.create_task(self._sweeper(), name="hub-retention"),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._flush_cursors()

    # -- apps -------------------------------------------------------------------

    def secret_for(self, app: str) -> str | None:
        return self.secrets.get(app)

    async def ensure_app(self, app: str, secret: str | None = None) -> str:
        """Create ``app`` (or set its secret); return the secret in force."""
        if secret is None:
            secret = self.secrets.get(app) or pysecrets.token_urlsafe(24)
        now = millis(self.clock)
        await self.db.write(lambda tx: self.store.ensure_app_tx(tx, app, secret, now))
        self.secrets[app] = secret
        return secret

    # -- submitting operations ----------------------------------------------------

    def submit(self, op: Op, done: Done) -> None:
        """Queue ``op`` for the next group commit; ``done`` runs after it commits."""
        try:
            self._queue.put_nowait((op, done))
        except asyncio.QueueFull:
            self.stats["busy_rejections"] += 1
            done(Outcome(error=ProtocolError(ErrorCode.RATE_LIMITED, "server busy; retry later")))

    async def apply(self, op: Op) -> Outcome:
        """Submit ``op`` and wait for its outcome (HTTP API, desk, tests)."""
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome) -> None:
            if not fut.done():
                fut.set_result(outcome)

        self.submit(op, done)
        return await fut

    async def _writer(self) -> None:
        limit = self.settings.storage.commit_batch_max
        rec = self.recorder
        mono = self.clock.monotonic
        while True:
            batch = [await self._queue.get()]
            while len(batch) < limit and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = mono() if rec is not None else 0.0
            ops = [op for op, _ in batch]
            want = self._missing_members(ops)
            try:
                result: BatchResult = await self.db.write(
                    functools.partial(self._commit, ops=ops, want=want)
                )
            except Exception:
                log.exception("group commit of %d operations failed", len(ops))
                failed = Outcome(error=ProtocolError(ErrorCode.INTERNAL, "storage failure"))
                for _, done in batch:
                    done(failed)
                continue
            if rec is not None:
                rec.commit_window(started, mono())
            self.stats["commits"] += 1
            self.stats["ops"] += len(ops)
            self._remember_members(result.members)
            for (op, done), outcome in zip(batch, result.outcomes, strict=True):
                done(outcome)
                if outcome.event is not None and not outcome.duplicate:
                    self._route(op, outcome)
            self.fanned_pos = max(self.fanned_pos, result.last_pos)
            if rec is not None:
                # Every event of the batch has been offered; no sender ran meanwhile.
                rec.batch_fanned(mono())

    def _commit(self, tx: Tx, *, ops: list[Op], want: set[tuple[str, str]]) -> BatchResult:
        return self.store.commit_batch_tx(tx, ops, want)

    def _missing_members(self, ops: Sequence[Op]) -> set[tuple[str, str]]:
        want: set[tuple[str, str]] = set()
        for op in ops:
            conv = op.channel if isinstance(op, JoinOp | LeaveOp) else op.conv
            key = (op.app, conv.id)
            if conv.kind == "ch" and key not in self._members:
                want.add(key)
        return want

    def _remember_members(self, fresh: dict[tuple[str, str], dict[str, str]]) -> None:
        if len(self._members) + len(fresh) > MEMBER_CACHE_MAX:
            # Evict the oldest half; evicted entries are re-read in the next commit.
            for key in list(self._members)[: len(self._members) // 2]:
                del self._members[key]
        self._members.update(fresh)

    def _route(self, op: Op, outcome: Outcome) -> None:
        event = outcome.event
        assert event is not None
        app = op.app
        key = (app, event.conv)
        members = self._members.get(key)
        if event.kind == "join" and members is not None:
            members[event.subject] = event.role
            channels = self._user_channels.get((app, event.subject))
            if channels is not None:  # tracked only for online users
                channels.add(event.conv)
                self._announce_join(app, event.subject, members)
        encodings: dict[str, bytes] = {}
        # A sampled telemetry trace follows this event to each connection (rare).
        trace = self.recorder.trace_for(event.pos) if self.recorder is not None else None
        if outcome.audience is not None:
            self._deliver(app, outcome.audience, event, encodings, trace)
        elif event.conv.startswith("dm:"):
            _, a, b = event.conv.split(":")
            self._deliver(app, a, event, encodings, trace)
            if b != a:
                self._deliver(app, b, event, encodings, trace)
        elif members is not None:
            for user in members:
                self._deliver(app, user, event, encodings, trace)
        if event.kind == "leave" and members is not None:
            members.pop(event.subject, None)
            self._user_channels.get((app, event.subject), set()).discard(event.conv)

    def _deliver(
        self,
        app: str,
        user: str,
        event: Event,
        encodings: dict[str, bytes],
        trace: Trace | None = None,
    ) -> None:
        endpoints = self._online.get((app, user))
        if not endpoints:
            return
        self.stats["fanout_offers"] += len(endpoints)
        for endpoint in endpoints:
            endpoint.offer(event, encodings)
            if trace is not None:
                endpoint.traced(event.pos, trace)

    # -- reading ---------------------------------------------------------------

    async def feed(self, app: str, user: str, after: int, upto: int, limit: int) -> list[Event]:
        return await self.db.read(lambda tx: self.store.feed_tx(tx, app, user, after, upto, limit))

    async def history(
        self,
        app: str,
        user: str | None,
        conv: Conversation,
        before: int | None,
        after: int | None,
        limit: int,
    ) -> tuple[list[Event], bool]:
        """A page of ``conv``; ``user`` None means a privileged (app secret) reader."""

        def run(tx: Tx) -> tuple[list[Event], bool]:
            if user is not None and not self.store.is_member_tx(tx, app, conv, user):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of {conv.id}")
            return self.store.history_tx(tx, app, conv.id, before, after, limit)

        return await self.db.read(run)

    async def device_cursor(self, app: str, user: str, device: str) -> int | None:
        pending = self._cursors.get((app, user, device))
        stored = await self.db.read(lambda tx: self.store.device_cursor_tx(tx, app, user, device))
        if pending is not None:
            return max(pending, stored or 0)
        return stored

    def note_ack(self, app: str, user: str, device: str, pos: int) -> None:
        key = (app, user, device)
        if pos > self._cursors.get(key, -1):
            self._cursors[key] = pos

    async def _cursor_flusher(self) -> None:
        while True:
            await asyncio.sleep(CURSOR_FLUSH_S)
            await self._flush_cursors()

    async def _flush_cursors(self) -> None:
        if not self._cursors:
            return
        pending, self._cursors = self._cursors, {}
        now = millis(self.clock)
        rows = [(a, u, d, pos, now) for (a, u, d), pos in pending.items()]
        try:
            await self.db.write(lambda tx: self.store.save_cursors_tx(tx, rows))
        except Exception:
            log.exception("saving %d device cursors failed; will retry", len(rows))
            for key, pos in pending.items():
                self.note_ack(*key, pos)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retention.sweep_interval_s)
            now = millis(self.clock)
            removed = await self.db.write(functools.partial(self.store.sweep_tx, now_ms=now))
            if removed:
                log.info("retention removed %d events", removed)

    # -- presence ----------------------------------------------------------------

    async def attach(self, endpoint: Endpoint) -> None:
        """Register a logged-in connection; announce the user online if first."""
        key = (endpoint.app, endpoint.user)
        if key not in self._user_channels:
            self._user_channels[key] = set(
                await self.db.read(
                    lambda tx: self.store.channels_of_tx(tx, endpoint.app, endpoint.user)
                )
            )
        devices = self._online.setdefault(key, set())
        first = not devices
        devices.add(endpoint)
        if first:
            self._since[key] = millis(self.clock)
            await self._announce(
                endpoint.app, endpoint.user, True, len(devices), set(self._user_channels[key])
            )

    async def detach(self, endpoint: Endpoint) -> None:
        key = (endpoint.app, endpoint.user)
        devices = self._online.get(key)
        if devices is None or endpoint not in devices:
            return
        devices.discard(endpoint)
        if not devices:
            del self._online[key]
            self._since.pop(key, None)
            # Take the channels now (a new device may attach during the await) and
            # announce to their members before forgetting them.
            channels = self._user_channels.pop(key, set())
            await self._announce(endpoint.app, endpoint.user, False, 0, channels)

    async def _announce(
        self, app: str, user: str, online: bool, devices: int, channels: set[str]
    ) -> None:
        change = PresenceChange(user=user, online=online, devices=devices, ts=millis(self.clock))
        recipients: set[str] = set()
        for conv in channels:
            members = self._members.get((app, conv))
            if members is None:
                # Not cached: read it for this announcement only.  Only the writer
                # task fills the cache, so it never holds a snapshot older than a
                # commit it has already replayed.
                members = await self.db.read(
                    functools.partial(self.store.members_tx, app=app, conv=conv)
                )
            recipients.update(members)
        recipients.discard(user)
        for other in recipients:
            for endpoint in self._online.get((app, other), ()):
                endpoint.push_presence(change)

    def _announce_join(self, app: str, user: str, members: dict[str, str]) -> None:
        """An online user joined a channel: its members learn the user is online."""
        devices = self._online.get((app, user), set())
        if not devices:
            return
        change = PresenceChange(user=user, online=True, devices=len(devices), ts=millis(self.clock))
        for other in members:
            if other != user:
                for endpoint in self._online.get((app, other), ()):
                    endpoint.push_presence(change)

    def presence(self, app: str, users: Iterable[str]) -> list[UserPresence]:
        out = []
        for user in users:
            devices = self._online.get((app, user), set())
            out.append(
                UserPresence(
                    user=user,
                    online=bool(devices),
                    devices=len(devices),
                    since=self._since.get((app, user), 0),
                )
            )
        return out

    # -- privileged operations (HTTP API, desk) --------------------------------------

    async def post(self, app: str, sender: str, to: str, body: bytes, client_id: str) -> Event:
        """Publish as ``sender`` without a connection, bypassing membership."""
        conv = resolve(to, sender)
        op = PublishOp(
            app=app,
            sender=sender,
            device="server",
            conv=conv,
            client_id=client_id,
            body=body,
            enc="",
            ts=millis(self.clock),
            privileged=True,
        )
        outcome = await self.apply(op)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.event is not None
        return outcome.event

    async def add_member(self, app: str, channel: str, user: str, role: str = "member") -> str:
        conv = channel_conversation(channel)
        op = JoinOp(
            app=app,
            actor="_admin",
            device="server",
            channel=conv,
            user=user,
            role=role,
            via="admin",
            ts=millis(self.clock),
        )
        outcome = await self.apply(op)
        if outcome.error is not None:
            raise outcome.error
        return outcome.role

    async def ensure_channel(self, app: str, channel: str, members: Sequence[str]) -> str:
        """Create ``channel`` if needed and make ``members`` members; return its id."""
        if app not in self.secrets:
            await self.ensure_app(app)
        for user in members:
            await self.add_member(app, channel, user)
        return channel_conversation(channel).id

    async def set_public(self, app: str, channel: str, public: bool) -> None:
        conv = channel_conversation(channel)
        now = millis(self.clock)
        await self.db.write(lambda tx: self.store.set_public_tx(tx, app, conv, public, now))

"""The routing hub of one node: group commit, fan-out, presence, cursors.

Theory of operation (docs/protocol.md §4)
-----------------------------------------
Every state change (publish, join, leave, read marker, delete) is an operation
submitted to one bounded queue.  A single writer task takes everything that queued
while the previous commit ran and applies it in one transaction (group commit).
After the commit, still in that task and in commit order, it updates the membership
cache, calls each operation's completion callback (the gateway queues the puback)
and fans each new event out to the online connections of its audience, then
advances ``fanned_pos(app)`` of each app of the batch (positions are per app,
docs/protocol.md §4).  Because a single task does all of this, a connection that
compares its position with its app's ``fanned_pos`` between two awaits sees a
consistent cut: every event of the app at or below it has been offered to live
connections already.  A commit's events are fanned out a run at a time (fanout.py:
consecutive events with the same recipients go to each connection in one call).
While one commit fans out, the next one (whatever queued meanwhile) already runs in
the writer thread; its events are routed after these, so commit order is kept.

With a cluster bus (docs/operations.md "Several nodes") several nodes commit to one database.
The writer then announces each commit as a ``CommitRecord`` and hands it to the
node's sequencer task instead of routing it itself; that task merges the records of
every node in each app's position order (``Sequencer``), reads any range that never
arrived from storage, loads channel membership as of the app's ``fanned_pos`` and
routes, so the ``fanned_pos`` promise above holds across nodes.  The writer waits
until its own records are routed before it takes the next batch, as it does alone.

Catch-up reads (``catchup``) are served from ``recent`` (recent.py), the events
the hub fanned out lately (and the newest ones stored when it started), held once
for every reader; storage is read per device only for a backlog deeper than that.

Acknowledgements from devices are cumulative positions, coalesced in memory.  The
writer stores those pending when a group commit starts in that same transaction,
and ``CURSOR_FLUSH_S`` bounds the delay when nothing is committed (docs/protocol.md
§5.3): an ack followed by a publish on the same connection is durable once that
publish's puback is sent.  Losing the last flush to a crash only means a few events
are offered again, which the SDK drops by position.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets as pysecrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from relaydesk.clock import Clock, millis
from relaydesk.config import Settings
from relaydesk.protocol.addresses import Conversation, channel_conversation, resolve
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Event, PresenceChange, UserPresence
from relaydesk.server.cluster import (
    Bus,
    BusError,
    CommitRecord,
    DeviceClaim,
    Item,
    Online,
    PresenceQuery,
    PresenceRecord,
    RemotePresence,
    Sequencer,
    decode_record,
    encode_record,
)
from relaydesk.server.routing.fanout import Run, split_runs
from relaydesk.server.routing.recent import RecentEvents
from relaydesk.storage import Database, Tx
from relaydesk.storage.cluster import events_range_tx, members_as_of_tx
from relaydesk.storage.messages import (
    BatchResult,
    JoinOp,
    LeaveOp,
    MessageStore,
    Op,
    Outcome,
    PublishOp,
)
from relaydesk.telemetry.recorder import Recorder

log = logging.getLogger("relaydesk.hub")

# Cursors acknowledged while nothing is committed wait at most this long (§5.3).
CURSOR_FLUSH_S = 0.5
# Recent events held for catch-up readers (recent.py): about four minutes at the
# 450 publishes/s of the reconnect-storm audit, so devices that dropped during an
# outage of that length catch up from memory; the byte bound caps large bodies
# (32 KiB each at most) at 64 MiB.
RECENT_EVENTS_MAX = 100_000
RECENT_BYTES_MAX = 64 * 1024 * 1024
# Apps whose newest events are loaded into recent events at start-up, one read each
# (a start-up with thousands of apps should not make thousands of reads first).
WARM_APPS_MAX = 256
# Bound of the commit queue: about two seconds of peak publish load.  Past it a
# publish is refused with RATE_LIMITED ("server busy") instead of queueing more.
COMMIT_QUEUE_MAX = 50_000
MEMBER_CACHE_MAX = 100_000
# Records from the bus waiting for the sequencer task.  Past it a record is dropped
# and its range read from storage when the gap is noticed: nothing is lost.
CLUSTER_INBOX_MAX = 10_000
# Events read from storage per gap-fill query.
GAP_FILL_PAGE = 5000
# Presence messages from the bus waiting for the presence task; past it they are
# dropped and the sender's next full list repairs what they said.
PRESENCE_INBOX_MAX = 10_000
# Users per full-list message (about 100 bytes each, well under NATS' 1 MB default).
PRESENCE_PART = 2000
# A node silent for this many presence intervals is taken as gone.
PRESENCE_EXPIRY_INTERVALS = 3

Done = Callable[[Outcome], None]


@dataclasses.dataclass(slots=True)
class _Commit:
    """A group commit handed to the writer thread (``Hub._begin``)."""

    batch: list[tuple[Op, Done]]
    ops: list[Op]
    cursors: dict[tuple[str, str, str], int]
    started: float
    demand: int
    task: Awaitable[BatchResult]


class Endpoint(Protocol):
    """What the hub needs of a live connection (the gateway's ``Connection``)."""

    app: str
    user: str
    device: str

    def offer_run(self, run: Run) -> None: ...

    def push_presence(self, change: PresenceChange) -> None: ...


class Hub:
    """Routing for one node; with a ``bus``, one node of a cluster."""

    def __init__(
        self,
        db: Database,
        store: MessageStore,
        settings: Settings,
        clock: Clock,
        recorder: Recorder | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.db = db
        self.bus = bus
        # Called (on the event loop) when another node says a device logged in there;
        # the gateway closes its own older connection of that device.
        self.on_device_claim: Callable[[DeviceClaim], None] | None = None
        # Called (in the writer, must not block) with each event this node committed:
        # the offline push queue (server/features/push.py).  Once per event cluster-wide.
        self.on_committed: Callable[[str, Event, str | None], None] | None = None
        self.node = settings.server.node_id
        # Telemetry (None: off).  The writer stamps commit start/end and the end of
        # fan-out once per batch; see relaydesk/telemetry/recorder.py.
        self.recorder = recorder
        self.store = store
        self.settings = settings
        self.clock = clock
        self.secrets: dict[str, str] = {}
        self._token_secrets: dict[str, tuple[str, ...]] = {}
        # app -> position up to which every event of the app has been offered.
        self._fanned: dict[str, int] = {}
        self._queue: asyncio.Queue[tuple[Op, Done]] = asyncio.Queue(COMMIT_QUEUE_MAX)
        self._members: dict[tuple[str, str], dict[str, str]] = {}
        self._online: dict[tuple[str, str], set[Endpoint]] = {}
        self._since: dict[tuple[str, str], int] = {}
        self._user_channels: dict[tuple[str, str], set[str]] = {}
        self._cursors: dict[tuple[str, str, str], int] = {}
        self._saving: dict[tuple[str, str, str], int] = {}  # in the commit running now
        self.recent = RecentEvents(RECENT_EVENTS_MAX, RECENT_BYTES_MAX)
        self._tasks: list[asyncio.Task[None]] = []
        self._retention: asyncio.Task[None] | None = None
        self.stats = {
            "commits": 0,
            "ops": 0,
            "fanout_offers": 0,
            "busy_rejections": 0,
            "resynced_events": 0,  # committed by a commit that reported a failure
            "catchup_reads": 0,  # catch-up pages served from recent events
            "catchup_storage_reads": 0,  # catch-up pages read from storage per device
        }
        # Cluster mode only.
        self._sequencer: Sequencer | None = None
        self._inbox: asyncio.Queue[CommitRecord] = asyncio.Queue(CLUSTER_INBOX_MAX)
        self._fanned_waiters: list[tuple[str, int, asyncio.Future[None]]] = []
        # Held by whoever takes records out of the sequencer until it has routed them
        # (the sequencer task, or the writer routing its own commit, _announce_commit).
        self._route_lock = asyncio.Lock()
        self._epoch = pysecrets.token_hex(6)
        presence_s = settings.cluster.presence_interval_ms / 1000
        self._remote = RemotePresence(self.node, presence_s * PRESENCE_EXPIRY_INTERVALS)
        self._presence_inbox: asyncio.Queue[PresenceRecord | PresenceQuery] = asyncio.Queue(
            PRESENCE_INBOX_MAX
        )
        self.cluster_stats = {
            "published": 0,
            "publish_errors": 0,
            "received": 0,
            "bad_records": 0,
            "inbox_drops": 0,
            "gap_fills": 0,
            "filled_events": 0,
            "remote_events": 0,
            "presence_drops": 0,
            "own_routed_inline": 0,  # own records routed by the writer (_announce_commit)
        }

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self.secrets = await self.db.read(self.store.app_secrets_tx)
        if self.bus is not None:
            # Subscribe first: every commit after the counter read below is either
            # announced to us or found by the sequencer as a gap.
            await self.bus.start(self._on_bus)
        self._fanned = await self.db.read(self.store.last_positions_tx)
        await self._warm_recent()
        self._tasks = [
            asyncio.create_task(self._writer(), name="hub-writer"),
            asyncio.create_task(self._cursor_flusher(), name="hub-cursors"),
        ]
        if self.settings.cluster.leader:  # forced; else the lease calls set_retention
            self.set_retention(True)
        if self.bus is not None:
            cluster = self.settings.cluster
            self._sequencer = Sequencer(self._fanned, cluster.gap_timeout_ms / 1000)
            self._tasks.append(asyncio.create_task(self._sequence(), name="hub-sequencer"))
            self._tasks.append(asyncio.create_task(self._presence_loop(), name="hub-presence"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._retention = None
        for _, _, waiter in self._fanned_waiters:
            waiter.cancel()
        self._fanned_waiters.clear()
        # A commit cancelled mid-way may not have stored the acks it carried.
        self._keep_cursors(self._saving)
        self._saving = {}
        await self._flush_cursors()
        if self.bus is not None:
            await self.bus.aclose()

    # -- apps -------------------------------------------------------------------

    def fanned_pos(self, app: str) -> int:
        """Every event of ``app`` at or below this position has been offered to the live
        connections (docs/protocol.md §4.3); positions are per app."""
        return self._fanned.get(app, 0)

    def secret_for(self, app: str) -> str | None:
        return self.secrets.get(app)

    def token_secrets(self, app: str) -> tuple[str, ...] | None:
        """Secrets that verify ``app``'s tokens now: the current one, and the previous one
        during a rotation's overlap (``desk/admin``)."""
        found = self._token_secrets.get(app)
        if found is not None:
            return found
        current = self.secrets.get(app)
        return None if current is None else (current,)

    def set_app_secrets(self, secrets: Mapping[str, tuple[str, ...]]) -> None:
        """Adopt the enabled apps and their secrets (administration's view of ``apps``);
        an app missing from ``secrets`` is disabled and its tokens stop verifying."""
        self.secrets = {app: keys[0] for app, keys in secrets.items() if keys}
        self._token_secrets = {app: keys for app, keys in secrets.items() if keys}

    async def ensure_app(self, app: str, secret: str | None = None) -> str:
        """Create ``app`` (or set its secret); return the secret in force."""
        if secret is None:
            secret = self.secrets.get(app) or pysecrets.token_urlsafe(24)
        now = millis(self.clock)
        await self.db.write(lambda tx: self.store.ensure_app_tx(tx, app, secret, now))
        self.secrets[app] = secret
        self._token_secrets.pop(app, None)
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
        rec = self.recorder
        mono = self.clock.monotonic
        nxt: _Commit | None = None
        while True:
            if nxt is None:
                nxt = self._begin([await self._queue.get()], start=False)
            cur, nxt = nxt, None
            try:
                result: BatchResult = await cur.task
            except Exception:
                self._saving = {}
                self._keep_cursors(cur.cursors)
                log.exception("group commit of %d operations failed", len(cur.ops))
                failed = Outcome(error=ProtocolError(ErrorCode.INTERNAL, "storage failure"))
                for _, done in cur.batch:
                    done(failed)
                if self.bus is None:
                    # The COMMIT may have landed all the same (the connection to
                    # PostgreSQL broke while it ran): route whatever did.
                    with contextlib.suppress(Exception):
                        await self._resync(None)
                continue
            self._saving = {}
            if rec is not None:
                rec.commit_window(cur.started, mono(), cur.demand)
            self.stats["commits"] += 1
            self.stats["ops"] += len(cur.ops)
            batch, ops = cur.batch, cur.ops
            if self.bus is not None:
                for (op, done), outcome in zip(batch, result.outcomes, strict=True):
                    done(outcome)
                    if self.on_committed is not None and outcome.event is not None:
                        if not outcome.duplicate:
                            self.on_committed(op.app, outcome.event, outcome.audience)
                await self._announce_commit(ops, result)
            else:
                if not self._queue.empty():
                    # Overlap: the next group commit runs in the writer thread (fsync,
                    # SQLite's C code, no GIL) while this one fans out on the loop.
                    # Its events are routed after these, in commit order; one loop
                    # turn lets its task hand the commit to the thread first.
                    nxt = self._begin([], start=True)
                    await asyncio.sleep(0)
                first = {app: last + 1 for app, last in result.last_pos.items()}
                for op, outcome in zip(reversed(ops), reversed(result.outcomes), strict=True):
                    if outcome.event is not None and not outcome.duplicate:
                        first[op.app] = outcome.event.pos
                for app, pos in first.items():
                    if pos - 1 > self.fanned_pos(app):  # committed by a commit reported failed
                        await self._resync(app, pos - 1)
                self._remember_members(result.members)
                fresh: list[tuple[str, Event, str | None]] = []
                for (op, done), outcome in zip(batch, result.outcomes, strict=True):
                    done(outcome)
                    if outcome.event is not None and not outcome.duplicate:
                        fresh.append((op.app, outcome.event, outcome.audience))
                self._route_items(fresh)
                if self.on_committed is not None:
                    for app, event, audience in fresh:
                        self.on_committed(app, event, audience)
                for app, last in result.last_pos.items():
                    self._fanned[app] = max(self.fanned_pos(app), last)
            if rec is not None:
                # Every event of the batch has been offered; no sender ran meanwhile.
                rec.batch_fanned(mono())

    def _begin(self, batch: list[tuple[Op, Done]], *, start: bool) -> _Commit:
        """Take what is queued (up to the cap) after ``batch`` and prepare its group
        commit; ``start``: hand it to the writer thread now (a task), else when awaited
        (no task: the writer awaits it next)."""
        limit = self.settings.storage.commit_batch_max
        queue = self._queue
        while len(batch) < limit and not queue.empty():
            batch.append(queue.get_nowait())
        # The cap bound when it left operations queued: the writer's demand was the
        # full batch plus those (a saturation episode, telemetry/saturation.py).
        left = queue.qsize() if len(batch) >= limit else 0
        demand = len(batch) + left if left else 0
        started = self.clock.monotonic() if self.recorder is not None else 0.0
        ops = [op for op, _ in batch]
        # In a cluster the sequencer loads membership as of its own position.
        want = self._missing_members(ops) if self.bus is None else set()
        # Acks received before this commit are stored with it (docs/protocol.md §5.3).
        cursors = self._saving = self._cursors
        self._cursors = {}
        commit = self.db.write(functools.partial(self._commit, ops=ops, want=want, cursors=cursors))
        task = asyncio.get_running_loop().create_task(commit) if start else commit
        return _Commit(batch, ops, cursors, started, demand, task)

    def _commit(
        self,
        tx: Tx,
        *,
        ops: list[Op],
        want: set[tuple[str, str]],
        cursors: dict[tuple[str, str, str], int] | None = None,
    ) -> BatchResult:
        result = self.store.commit_batch_tx(tx, ops, want)
        if cursors:
            now = millis(self.clock)
            self.store.save_cursors_tx(tx, [(a, u, d, p, now) for (a, u, d), p in cursors.items()])
        return result

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

    def _route_items(self, items: Sequence[tuple[str, Event, str | None]]) -> None:
        """Fan out committed events, in position order, a run at a time (fanout.py)."""
        for app, audience, events in split_runs(items):
            self._route_run(app, audience, events)

    def _route_run(self, app: str, audience: str | None, events: list[Event]) -> None:
        first = events[0]
        key = (app, first.conv)
        members = self._members.get(key)
        if first.kind == "join" and members is not None:  # a join is a run of its own
            members[first.subject] = first.role
            channels = self._user_channels.get((app, first.subject))
            if channels is not None:  # tracked only for users online here
                channels.add(first.conv)
                self._announce_join(app, first.subject, members)
            elif self._remote.devices((app, first.subject))[0]:  # online on another node
                self._announce_join(app, first.subject, members)
        run = Run(events)
        recent = self.recent
        rec = self.recorder
        for event, encodings in zip(events, run.encodings, strict=True):
            # Held for catch-up readers, with the encodings the fan-out makes (shared).
            recent.add(app, audience, event, encodings)
            # A sampled telemetry trace follows this event to each connection (rare).
            if rec is not None:
                trace = rec.trace_for(app, event.pos)
                if trace is not None:
                    run.traced.append((event.pos, trace))
        if audience is not None:
            self._deliver(app, audience, run)
        elif first.conv.startswith("dm:"):
            _, a, b = first.conv.split(":")
            self._deliver(app, a, run)
            if b != a:
                self._deliver(app, b, run)
        elif members is not None:
            for user in members:
                self._deliver(app, user, run)
        if first.kind == "leave" and members is not None:
            members.pop(first.subject, None)
            self._user_channels.get((app, first.subject), set()).discard(first.conv)

    def _deliver(self, app: str, user: str, run: Run) -> None:
        endpoints = self._online.get((app, user))
        if not endpoints:
            return
        self.stats["fanout_offers"] += len(endpoints) * len(run.events)
        for endpoint in endpoints:
            endpoint.offer_run(run)

    # -- cluster -------------------------------------------------------------------

    async def _announce_commit(self, ops: Sequence[Op], result: BatchResult) -> None:
        """Publish this node's commit, one record per app, and wait until every one of
        them has been routed here.

        A record whose app is routed up to just before it (the usual case: the other
        nodes' earlier commits have arrived) is routed right here, in the writer's task;
        any other goes to the sequencer task, which holds it until the positions before
        it arrive or are read from storage.  Handing every record to the sequencer task
        cost two trips through this node's busy event loop per commit (the task's wake,
        then the writer's), during which the writer sat idle and the next batch queued."""
        by_app: dict[str, list[Item]] = {}
        for op, outcome in zip(ops, result.outcomes, strict=True):
            if outcome.event is not None and not outcome.duplicate:
                by_app.setdefault(op.app, []).append(Item(op.app, outcome.audience, outcome.event))
        assert self.bus is not None
        waiting: list[asyncio.Future[None]] = []
        records: list[CommitRecord] = []
        for app, items in by_app.items():
            record = CommitRecord(
                self.node, app, items[0].event.pos, result.last_pos[app], tuple(items)
            )
            data = encode_record(record)
            if len(data) > self.bus.max_payload:
                data = encode_record(CommitRecord(self.node, app, record.first, record.last))
            try:
                await self.bus.publish(data, app)
                self.cluster_stats["published"] += 1
            except BusError as exc:
                # The other nodes find the range as a gap and read it from storage.
                self.cluster_stats["publish_errors"] += 1
                log.warning(
                    "announcing positions %d-%d of app %s failed: %s",
                    record.first,
                    record.last,
                    app,
                    exc,
                )
            routed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._fanned_waiters.append((app, record.last, routed))
            waiting.append(routed)
            records.append(record)
        # Every app's record is on its way to the other nodes before any is routed here.
        for record in records:
            await self._route_own(record)
        for routed in waiting:
            await routed

    async def _route_own(self, record: CommitRecord) -> None:
        """Route this node's ``record`` now if its app is routed up to just before it;
        else hand it to the sequencer task (``_announce_commit``)."""
        seq = self._sequencer
        if seq is None:
            self._take(record)
            return
        async with self._route_lock:
            # Under the lock: the sequencer task has routed every record it released.
            if seq.fanned(record.app) != record.first - 1:
                self._take(record)
                return
            try:
                await self._route_records(seq.offer(record, self.clock.monotonic()))
                self.cluster_stats["own_routed_inline"] += 1
            except Exception:
                # As in _sequence: what was released and not routed becomes a gap; this
                # record goes to the sequencer task, which routes it (or reads it).
                log.exception("cluster fan-out of this node's commit failed")
                seq.rewind(self._fanned, self.clock.monotonic())
                self._take(record)

    def _on_bus(self, data: bytes) -> None:
        """A message from the bus (any node's, our own included)."""
        self.cluster_stats["received"] += 1
        try:
            record = decode_record(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.cluster_stats["bad_records"] += 1
            log.warning("dropping a malformed cluster record: %s", exc)
            return
        if record.node == self.node:
            return  # our own commits were handed over directly
        if isinstance(record, CommitRecord):
            self._take(record)
            return
        if isinstance(record, DeviceClaim):
            if self.on_device_claim is not None:
                self.on_device_claim(record)
            return
        try:
            self._presence_inbox.put_nowait(record)
        except asyncio.QueueFull:
            self.cluster_stats["presence_drops"] += 1

    def _take(self, record: CommitRecord) -> None:
        try:
            self._inbox.put_nowait(record)
        except asyncio.QueueFull:
            self.cluster_stats["inbox_drops"] += 1

    async def _sequence(self) -> None:
        """Route every node's commits in position order (cluster mode only)."""
        seq = self._sequencer
        assert seq is not None
        mono = self.clock.monotonic
        sync_s = self.settings.cluster.sync_interval_ms / 1000
        last_sync = mono()
        while True:
            deadline = seq.next_deadline()
            wait = sync_s if deadline is None else max(deadline - mono(), 0.0)
            records: list[CommitRecord] = []
            # asyncio.timeout, not wait_for: wait_for wraps the get in a new task each
            # time, two more trips through the event loop before a record is routed (and
            # on 3.11 it can swallow a cancellation, see _presence_loop).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, sync_s)):
                    records.append(await self._inbox.get())
            while not self._inbox.empty():
                records.append(self._inbox.get_nowait())
            failed = False
            async with self._route_lock:
                try:
                    ready: list[CommitRecord] = []
                    for record in records:
                        ready.extend(seq.offer(record, mono()))
                    await self._route_records(ready)
                    now = mono()
                    if not records and now - last_sync >= sync_s:
                        last_sync = now
                        seq.note_horizon(await self.db.read(self.store.last_positions_tx), now)
                    missing = seq.gap(mono())
                    if missing is not None:
                        await self._fill(*missing)
                except Exception:
                    # Storage failed mid-way: what was not routed is read again as a gap.
                    log.exception("cluster fan-out failed")
                    seq.rewind(self._fanned, mono())
                    failed = True
            if failed:
                await asyncio.sleep(seq.gap_timeout)

    async def _stored(self, app: str, after: int, upto: int) -> AsyncIterator[CommitRecord]:
        """Positions ``after < pos <= upto`` of ``app`` read from storage, as records of a
        page each."""
        while after < upto:
            rows = await self.db.read(
                functools.partial(
                    events_range_tx, app=app, after=after, upto=upto, limit=GAP_FILL_PAGE
                )
            )
            end = rows[-1][2].pos if len(rows) == GAP_FILL_PAGE else upto
            items = tuple(Item(app, audience, event) for app, audience, event in rows)
            yield CommitRecord("", app, after + 1, end, items)
            after = end

    async def _fill(self, app: str, after: int, upto: int) -> None:
        """Route positions ``after < pos <= upto`` of ``app`` that never arrived over the
        bus."""
        seq = self._sequencer
        assert seq is not None
        self.cluster_stats["gap_fills"] += 1
        async for record in self._stored(app, after, upto):
            self.cluster_stats["filled_events"] += len(record.items or ())
            await self._route_records(seq.offer(record, self.clock.monotonic()))

    async def _resync(self, app: str | None, upto: int | None = None) -> None:
        """Route committed positions of ``app`` (None: of every app) after its
        ``fanned_pos`` (up to ``upto``, or all) that were never routed: a commit reported
        as failed may have landed (one node)."""
        if app is None:
            committed = await self.db.read(self.store.last_positions_tx)
        else:
            committed = {
                app: upto
                if upto is not None
                else await self.db.read(functools.partial(self.store.last_pos_tx, app=app))
            }
        for one, last in sorted(committed.items()):
            async for record in self._stored(one, self.fanned_pos(one), last):
                n = len(record.items or ())
                self.stats["resynced_events"] += n
                log.warning(
                    "routing %d events of positions %d-%d of app %s from storage",
                    n,
                    record.first,
                    record.last,
                    one,
                )
                await self._route_records([record])

    async def _route_records(self, records: list[CommitRecord]) -> None:
        if not records:
            return
        await self._load_members(records)
        for record in records:
            items = record.items
            if items is None:
                rows = await self.db.read(
                    functools.partial(
                        events_range_tx,
                        app=record.app,
                        after=record.first - 1,
                        upto=record.last,
                        limit=record.last - record.first + 1,
                    )
                )
                items = tuple(Item(app, audience, event) for app, audience, event in rows)
                await self._load_members(
                    [CommitRecord("", record.app, record.first, record.last, items)]
                )
            if record.node != self.node:
                self.cluster_stats["remote_events"] += len(items)
            self._route_items([(item.app, item.event, item.audience) for item in items])
            self._fanned[record.app] = record.last
        waiters = self._fanned_waiters
        if waiters:
            keep = []
            for app, last, fut in waiters:
                if last <= self.fanned_pos(app):
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((app, last, fut))
            self._fanned_waiters = keep

    async def _load_members(self, records: list[CommitRecord]) -> None:
        """Cache the membership, as of its app's ``fanned_pos``, of channels these records
        touch."""
        want = {
            (item.app, item.event.conv)
            for record in records
            for item in record.items or ()
            if item.audience is None
            and item.event.conv.startswith("ch:")
            and (item.app, item.event.conv) not in self._members
        }
        if not want:
            return
        at = {key: self.fanned_pos(key[0]) for key in want}

        def read(tx: Tx) -> dict[tuple[str, str], dict[str, str]]:
            return {key: members_as_of_tx(tx, key[0], key[1], at[key]) for key in want}

        self._remember_members(await self.db.read(read))

    async def _presence_loop(self) -> None:
        """Tell the cluster who is connected here; learn who is connected elsewhere."""
        mono = self.clock.monotonic
        interval = self.settings.cluster.presence_interval_ms / 1000
        await self._publish(PresenceQuery(self.node))
        next_beat = mono()
        while True:
            if mono() >= next_beat:
                next_beat = mono() + interval
                await self._publish_presence_list()
                await self._remote_changed(self._remote.expire(mono()))
            # asyncio.timeout, not wait_for: on 3.11 wait_for returns the item when a
            # message arrives as the task is cancelled, swallowing the cancellation, and
            # Hub.aclose then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(next_beat - mono(), 0.0)):
                    message = await self._presence_inbox.get()
                try:
                    if isinstance(message, PresenceQuery):
                        next_beat = mono()  # a node started: send the full list now
                    else:
                        await self._remote_changed(self._remote.apply(message, mono()))
                except Exception:
                    log.exception("cluster presence update from %s failed", message.node)

    async def claim_device(self, app: str, user: str, device: str, ts: int) -> None:
        """Tell the other nodes ``device`` logged in here (docs/protocol.md §3.5)."""
        if self.bus is not None:
            await self._publish(DeviceClaim(self.node, app, user, device, ts))

    async def _publish(self, message: PresenceRecord | PresenceQuery | DeviceClaim) -> None:
        assert self.bus is not None
        try:
            await self.bus.publish(encode_record(message))
        except BusError as exc:  # the next full list repairs it
            self.cluster_stats["publish_errors"] += 1
            log.warning("publishing presence failed: %s", exc)

    async def _publish_presence_list(self) -> None:
        entries = [
            Online(app, user, len(devices), self._since.get((app, user), 0))
            for (app, user), devices in self._online.items()
            if devices
        ]
        parts = max(1, -(-len(entries) // PRESENCE_PART))
        for part in range(parts):
            chunk = tuple(entries[part * PRESENCE_PART : (part + 1) * PRESENCE_PART])
            await self._publish(
                PresenceRecord(self.node, self._epoch, chunk, full=True, part=part, parts=parts)
            )

    async def _publish_presence(self, app: str, user: str) -> None:
        if self.bus is None:
            return
        key = (app, user)
        online = Online(app, user, len(self._online.get(key, ())), self._since.get(key, 0))
        await self._publish(PresenceRecord(self.node, self._epoch, (online,)))

    async def _remote_changed(self, changed: dict[tuple[str, str], int]) -> None:
        """Announce users whose cluster-wide presence flipped with a remote change."""
        for (app, user), remote_before in sorted(changed.items()):
            local = len(self._online.get((app, user), ()))
            remote_now = self._remote.devices((app, user))[0]
            if local or (remote_before > 0) == (remote_now > 0):
                continue  # online here anyway, or still on (off) elsewhere
            channels = set(
                await self.db.read(functools.partial(self.store.channels_of_tx, app=app, user=user))
            )
            await self._announce(app, user, remote_now > 0, remote_now, channels)

    # -- reading ---------------------------------------------------------------

    async def _warm_recent(self) -> None:
        """Hold the newest events at start-up: after a restart every device resumes
        near the end, and one read then serves them all.

        Positions are per app, so there is no "newest N" across apps: each app gets an
        equal share of the bound, read as its newest events (the apps with the highest
        positions first, at most ``WARM_APPS_MAX`` of them; the others start with
        nothing held, complete above their current position)."""
        apps = sorted(self._fanned.items(), key=lambda item: (-item[1], item[0]))
        warm, cold = apps[:WARM_APPS_MAX], apps[WARM_APPS_MAX:]
        share = max(RECENT_EVENTS_MAX // max(len(warm), 1), 1)
        floors = {app: last for app, last in cold}

        def read(tx: Tx) -> dict[str, list[tuple[str | None, Event]]]:
            return {app: self.store.newest_events_tx(tx, app, last, share) for app, last in warm}

        loaded = await self.db.read(read)
        for app, rows in loaded.items():
            floors[app] = rows[0][1].pos - 1 if len(rows) == share else 0
        self.recent = RecentEvents(RECENT_EVENTS_MAX, RECENT_BYTES_MAX, floors)
        for app, rows in loaded.items():
            for audience, event in rows:
                self.recent.add(app, audience, event, {})

    async def catchup(
        self, app: str, user: str, after: int, upto: int, limit: int
    ) -> list[tuple[Event, dict[str, bytes]]]:
        """A catch-up page of the user's feed, ``after < pos <= upto`` (``upto`` at most
        the app's ``fanned_pos``), each event with its shared encodings (filled in by
        callers)."""
        recent = self.recent
        if recent.covers(app, after):
            # Membership read after upto was fanned out: the windows feed_tx would use.
            windows = await self.db.read(
                functools.partial(self.store.memberships_tx, app=app, user=user)
            )
            if recent.covers(app, after):  # (nothing it needs was evicted meanwhile)
                self.stats["catchup_reads"] += 1
                return recent.feed(app, user, windows, after, upto, limit)
        self.stats["catchup_storage_reads"] += 1
        return [(event, {}) for event in await self.feed(app, user, after, upto, limit)]

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
        key = (app, user, device)
        pending = max(self._cursors.get(key, -1), self._saving.get(key, -1))
        stored = await self.db.read(lambda tx: self.store.device_cursor_tx(tx, app, user, device))
        if pending >= 0:
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
            self._keep_cursors(pending)

    def _keep_cursors(self, pending: dict[tuple[str, str, str], int]) -> None:
        """A write that carried ``pending`` failed: they wait for the next one."""
        for key, pos in pending.items():
            self.note_ack(*key, pos)

    def set_retention(self, on: bool) -> None:
        """Run the retention sweeps here (the node holding the desk lease) or stop them."""
        if on and self._retention is None:
            self._retention = asyncio.create_task(self._sweeper(), name="hub-retention")
            self._tasks.append(self._retention)
        elif not on and self._retention is not None:
            self._retention.cancel()
            self._tasks.remove(self._retention)
            self._retention = None

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
        await self._publish_presence(endpoint.app, endpoint.user)
        remote = self._remote.devices(key)[0]
        if first and not remote:  # online nowhere else in the cluster either
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
            if not self._remote.devices(key)[0]:  # and not online on another node
                await self._announce(endpoint.app, endpoint.user, False, 0, channels)
        await self._publish_presence(endpoint.app, endpoint.user)

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
        devices = len(self._online.get((app, user), ())) + self._remote.devices((app, user))[0]
        if not devices:
            return
        change = PresenceChange(user=user, online=True, devices=devices, ts=millis(self.clock))
        for other in members:
            if other != user:
                for endpoint in self._online.get((app, other), ()):
                    endpoint.push_presence(change)

    def presence(self, app: str, users: Iterable[str]) -> list[UserPresence]:
        out = []
        for user in users:
            key = (app, user)
            local = len(self._online.get(key, ()))
            remote, remote_since = self._remote.devices(key)
            since = self._since.get(key, 0)
            if remote_since and (not since or remote_since < since):
                since = remote_since
            out.append(
                UserPresence(
                    user=user, online=bool(local + remote), devices=local + remote, since=since
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

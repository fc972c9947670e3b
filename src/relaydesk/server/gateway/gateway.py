"""The WebSocket gateway: the thin I/O shell around the protocol (docs/protocol.md §3).

Each connection runs its receive loop in the ASGI handler task and its sender
(``Connection.run_sender``) in a child task of the same task group, so nothing
outlives the connection.  One reaper task checks every connection's deadlines
(login, heartbeat, token expiry) once a second.

What a frame means is decided by the pure ``ServerSession``
(``protocol/server_session.py``); this shell feeds it bytes and carries out the one
action it returns (``_run``): queue a reply, close, or do the I/O it asks for (hub
commits, storage reads, presence) and hand the result back to the session.
Telemetry observes through ``SessionObserver`` (``_telemetry.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from relaydesk.clock import Clock, millis
from relaydesk.config import Settings
from relaydesk.protocol.codec import server_codec
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import SUBPROTOCOLS, Error, Frame, Moved
from relaydesk.protocol.server_session import (
    Action,
    Attach,
    Close,
    Commit,
    DeleteIntent,
    Intent,
    JoinIntent,
    LeaveIntent,
    LockIntent,
    MetaIntent,
    NoteAck,
    PublishIntent,
    QueryHistory,
    QueryLocks,
    QueryMeta,
    QueryPresence,
    QueryWhere,
    QueryWho,
    ReadIntent,
    ServerSession,
    SessionLimits,
    StateIntent,
)
from relaydesk.server.cluster import DeviceClaim
from relaydesk.server.features import LockService, MetadataService, PresenceStateService
from relaydesk.server.gateway._telemetry import LoginObserver, TelemetryObserver
from relaydesk.server.gateway.connection import CLOSE_DRAIN_S, Connection, Sink
from relaydesk.server.gateway.wire import Flusher
from relaydesk.server.routing.hub import Hub
from relaydesk.storage.locks import LockOp
from relaydesk.storage.messages import DeleteOp, JoinOp, LeaveOp, Op, Outcome, PublishOp, ReadOp
from relaydesk.storage.metadata import MetaOp
from relaydesk.storage.presence_state import StateOp
from relaydesk.telemetry.recorder import Recorder

log = logging.getLogger("relaydesk.gateway")

ABNORMAL_CLOSURE = 1006  # RFC 6455 §7.1.5: closed without a close frame
NO_STATUS = 1005  # a close frame without a status code, or (uvicorn) a lost connection

# A defect (or a storage failure) while handling frames is logged with its traceback
# at most once per this many seconds; the ones in between are counted and the count
# is logged with the next.  Client errors (ProtocolError) are never logged per frame.
DEFECT_LOG_INTERVAL_S = 10.0

# Largest reply (a history page) in bytes, and at most a quarter of the output budget.
MAX_REPLY_BYTES = 1024 * 1024

# A connection still not closed this long after the gateway decided to close it (past
# the sender's own wait for pending pubacks) has a sender stuck on a peer that does
# not read: the reaper writes the close itself.
CLOSE_STUCK_S = CLOSE_DRAIN_S + 3.0
# A draining node moves this many connections every DRAIN_TICK_S: 1,000/s, so the
# other nodes see a reconnect ramp, not a storm (docs/operations.md "Draining a node").
DRAIN_BATCH = 100
DRAIN_TICK_S = 0.1

# Why a connection ended, for telemetry's connection history (docs/telemetry.md).
_END_REASONS = {
    ErrorCode.HEARTBEAT_TIMEOUT: "heartbeat_timeout",
    ErrorCode.TOKEN_EXPIRED: "auth_expiry",
    ErrorCode.SERVER_SHUTDOWN: "server_shutdown",
    ErrorCode.SERVER_DRAINING: "server_shutdown",  # moved by the operator: not a fault
    ErrorCode.DEVICE_REPLACED: "client_close",  # the client logged in again elsewhere
}


class Gateway:
    """Accepts WebSocket connections and speaks protocol v1 on them."""

    def __init__(
        self, hub: Hub, settings: Settings, clock: Clock, recorder: Recorder | None = None
    ) -> None:
        self.hub = hub
        self.metadata = MetadataService(hub)  # §5.11
        # §5.12; in a cluster, TTL clocks start only once other nodes' presence is heard.
        settle_s = 3 * settings.cluster.presence_interval_ms / 1000 if hub.bus else 0.0
        self.locks = LockService(hub, settle_s=settle_s)
        self.states = PresenceStateService(hub, settle_s=settle_s)  # §5.13
        self.recorder = recorder  # telemetry; None: off
        self.settings = settings
        self.clock = clock
        g = settings.gateway
        self.limits = SessionLimits(
            auth_timeout_s=g.auth_timeout_ms / 1000,
            heartbeat_timeout_s=g.heartbeat_timeout_ms / 1000,
            publish_rate=g.publish_rate,
            publish_burst=g.publish_burst,
            flood_rejections=g.flood_rejections,
            max_body=g.max_body,
            max_frame=g.max_frame,
            max_inflight=g.max_inflight,
            # Any one reply fits well inside the output budget (history pages are cut).
            max_reply_bytes=max(1024, min(MAX_REPLY_BYTES, g.send_queue_bytes // 4)),
            heartbeat_ms=g.heartbeat_ms,
            node=settings.server.node_id,
            region=settings.server.region,
        )
        self.connections: set[Connection] = set()
        # The live connection of each (app, user, device): the newest login wins and
        # the one it replaces is closed with DEVICE_REPLACED (docs/protocol.md §3.5).
        self._devices: dict[tuple[str, str, str], Connection] = {}
        hub.on_device_claim = self._claimed_elsewhere
        self._reaper: asyncio.Task[None] | None = None
        self.stats = {"accepted": 0, "rejected_upgrades": 0, "protocol_errors": 0, "defects": 0}
        self._defect_logged = -DEFECT_LOG_INTERVAL_S
        self._defects_unlogged = 0
        # Draining (docs/operations.md "Draining a node"): new logins are moved at once,
        # live connections are moved DRAIN_BATCH per DRAIN_TICK_S by one task.
        self.draining = False
        self._drain_reason = ""
        self._drain_hints: list[str] = []
        self._drainer: asyncio.Task[None] | None = None
        # The native path (wire.py): one write pass per loop turn for every connection,
        # and the clean-up tasks of connections that ended.
        self.flusher = Flusher(recorder)
        # One codec per subprotocol, shared by every connection (msgspec encoders and
        # decoders keep no state between calls): not two decoders per connection.
        self._codecs = {p: server_codec(p) for p in SUBPROTOCOLS}
        self._endings: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="gateway-reaper")

    # -- draining ------------------------------------------------------------------

    def set_draining(self, draining: bool, reason: str, hints: list[str]) -> None:
        """Start or stop moving clients off this node; ``hints``: where to, best first."""
        self.draining = draining
        self._drain_reason = reason or "node draining"
        self._drain_hints = hints
        if draining and self._drainer is None:
            self._drainer = asyncio.create_task(self._move_all(), name="gateway-drain")
        elif not draining and self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None

    async def _move_all(self) -> None:
        """Tell every connection to move, DRAIN_BATCH at a time, while draining.

        Pacing spreads the reconnects over the other nodes (a node of 5,000 clients
        empties in about 5 s at the defaults) instead of a storm in one loop turn."""
        while self.draining:
            batch = [c for c in self.connections if not c.closing][:DRAIN_BATCH]
            for conn in batch:
                self._move(conn)
            await asyncio.sleep(DRAIN_TICK_S if batch else 0.5)

    def _move(self, conn: Connection) -> None:
        code = ErrorCode.SERVER_DRAINING
        conn.send_frame(Moved(reason=self._drain_reason, urls=list(self._drain_hints)))
        conn.end_reason = conn.end_reason or _END_REASONS[code]
        conn.close(int(code), code.name, Error(code=int(code), msg=self._drain_reason))

    async def aclose(self) -> None:
        self.set_draining(False, "", [])
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for conn in list(self.connections):
            conn.end_reason = conn.end_reason or "server_shutdown"
            code = ErrorCode.SERVER_SHUTDOWN
            conn.close(code, "server shutting down", Error(code=code, msg="server shutting down"))
        for _ in range(50):
            if not self.connections:
                break
            await asyncio.sleep(0.02)
        if self._endings:
            await asyncio.wait(list(self._endings), timeout=2.0)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            mono, wall = self.clock.monotonic(), self.clock.time()
            loop_now = asyncio.get_running_loop().time()
            for conn in list(self.connections):
                if conn.closing:
                    if loop_now - conn.closing_since > CLOSE_STUCK_S:
                        # Its sender cannot write (the peer does not read) and its
                        # receive loop may be waiting for a frame: close past both.
                        await conn.force_close()
                    continue
                err = conn.session.expired(mono, wall)
                if err is not None:
                    self._fail(conn, err)

    # -- the ASGI WebSocket handler -------------------------------------------------

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        offered = scope.get("subprotocols") or []
        chosen = next((p for p in offered if p in SUBPROTOCOLS), None)
        if chosen is None:
            # Refusing the upgrade answers HTTP 403; the reason is in docs/protocol.md §1.
            self.stats["rejected_upgrades"] += 1
            await send({"type": "websocket.close", "code": 1002})
            return
        await send({"type": "websocket.accept", "subprotocol": chosen})
        client = scope.get("client") or ("?", 0)
        conn = self._open(chosen, f"{client[0]}:{client[1]}", send, None)
        try:
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(conn.run_sender())
                await self._receive_loop(conn, receive)
                if not sender.done():
                    conn.close(1000, "bye")
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(sender), 1.0)
                    sender.cancel()
                    # A sender stuck on a peer that does not read never wrote the
                    # close: write it past the sender (the transport drops the peer).
                    await conn.force_close()
        except* (OSError, RuntimeError) as group:  # the socket went away mid-write
            conn.end_reason = conn.end_reason or "transport_error"
            log.debug("connection %s ended: %s", conn.client_addr, group.exceptions)
        finally:
            await self._ended(conn)

    def _open(self, chosen: str, client_addr: str, send: Any, sink: Sink | None) -> Connection:
        """A new connection speaking subprotocol ``chosen`` (either path)."""
        g = self.settings.gateway
        codec = self._codecs[chosen]
        session = ServerSession(
            self.limits,
            self.clock.monotonic(),
            codec,
            self.hub.token_secrets,
            LoginObserver(self.recorder, self.hub.token_secrets),
        )
        conn = Connection(
            self.hub,
            send,
            codec,
            session,
            queue_items=g.send_queue_items,
            queue_bytes=g.send_queue_bytes,
            page=g.catchup_page,
            client_addr=client_addr,
            fault_drop_device=g.fault_drop_writes_device,
            sink=sink,
        )
        self.connections.add(conn)
        self.stats["accepted"] += 1
        return conn

    async def _ended(self, conn: Connection) -> None:
        """The connection is gone (either path): forget it, detach it from the hub."""
        self.connections.discard(conn)
        key = (conn.app, conn.user, conn.device)
        if self._devices.get(key) is conn:
            del self._devices[key]
        conn.session.closed()
        if conn.tel is not None and self.recorder is not None:
            self.recorder.detach(conn.tel, conn.end_reason or "client_close")
        conn.active = False
        if conn.attached:
            conn.attached = False
            await self.hub.detach(conn)

    # -- the native path (server/gateway/wire.py): called by WireProtocol ---------------

    def wire_opened(self, chosen: str, client_addr: str, sink: Sink) -> Connection:
        return self._open(chosen, client_addr, None, sink)

    def wire_frame(self, conn: Connection, data: bytes | str) -> Action | None:
        """Handle one message synchronously; returns an action that needs I/O (the
        caller awaits ``wire_action`` on it before the next frame), else None."""
        if conn.closing:
            return None
        return self._frame(conn, data)

    async def wire_action(self, conn: Connection, action: Any) -> None:
        try:
            await self._run(conn, action)
        except Exception:
            self._log_defect(action)
            self._internal(conn, action)

    def wire_failed(self, conn: Connection, code: int) -> None:
        """The WebSocket layer closed the connection for a protocol error (4031, 1002...)."""
        self.stats["protocol_errors"] += 1
        conn.end_reason = conn.end_reason or "protocol_error"
        conn.close(code or 1002, "protocol error")

    def wire_backlogged(self, conn: Connection) -> None:
        """Reading paused for unwritten replies: not drained in time means not reading."""
        if conn.backlog_timer is not None:
            return
        drain_s = self.settings.gateway.reply_drain_timeout_ms / 1000

        def expired() -> None:
            conn.backlog_timer = None
            if conn.replies_backlogged and not conn.closing:
                self.stats["protocol_errors"] += 1
                conn.slow_reader(f"replies unread for {drain_s:g}s; read your socket")

        conn.backlog_timer = asyncio.get_running_loop().call_later(drain_s, expired)

    def wire_drained(self, conn: Connection) -> None:
        if conn.backlog_timer is not None:
            conn.backlog_timer.cancel()
            conn.backlog_timer = None

    def wire_ended(self, conn: Connection, *, lost: bool) -> None:
        """The transport is gone: clean up in a task the gateway owns (hub.detach awaits)."""
        self.wire_drained(conn)
        conn.end_reason = conn.end_reason or ("transport_error" if lost else "client_close")
        conn.transport_gone()
        task = asyncio.get_running_loop().create_task(self._ended(conn))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _receive_loop(self, conn: Connection, receive: Any) -> None:
        drain_s = self.settings.gateway.reply_drain_timeout_ms / 1000
        while not conn.closing:
            if conn.replies_backlogged and not await conn.replies_drained(drain_s):
                # Its replies have not moved for the whole drain timeout: not reading.
                self.stats["protocol_errors"] += 1
                conn.slow_reader(f"replies unread for {drain_s:g}s; read your socket")
                return
            message = await receive()
            if message["type"] == "websocket.disconnect":
                # Lost without a closing handshake (reset, dead link): telemetry must not
                # count it as the client leaving.  uvicorn reports that as 1006, or as
                # 1005 *without* a "reason" (a received close frame always carries one).
                code = message.get("code")
                lost = code == ABNORMAL_CLOSURE or (code == NO_STATUS and "reason" not in message)
                if code == ErrorCode.FRAME_TOO_LARGE:
                    # Refused by the transport from the frame header (websocket.py).
                    self.stats["protocol_errors"] += 1
                    conn.end_reason = conn.end_reason or "protocol_error"
                conn.end_reason = conn.end_reason or ("transport_error" if lost else "client_close")
                return
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            action = self._frame(conn, data)
            if action is not None:
                try:
                    await self._run(conn, action)
                except Exception:
                    self._log_defect(action)
                    self._internal(conn, action)

    def _frame(self, conn: Connection, data: bytes | str) -> Action | None:
        """Run the session on one message and carry out what needs no I/O; returns the
        action that does (login, history, presence...), else None."""
        clock = self.clock
        action: Action | None = None
        try:
            action = conn.session.receive(data, clock.monotonic(), millis(clock), conn.taken)
            # The hot kinds (publish, replies) are carried out without a coroutine.
            if action.__class__ is Commit:
                self._commit(conn, action)
            elif isinstance(action, Frame | Close) or action is None:
                self._apply(conn, action)
            elif isinstance(action, NoteAck):
                self.hub.note_ack(conn.app, conn.user, conn.device, action.pos)
            else:
                return action
        except Exception:
            # A defect or a storage failure: report INTERNAL for this request
            # (nothing was applied) and keep the connection.
            self._log_defect(action)
            self._internal(conn, action)
        return None

    async def _run(self, conn: Connection, action: Action) -> None:
        """Carry out what the session decided (the only I/O a frame causes)."""
        session = conn.session
        if isinstance(action, Commit):
            self._commit(conn, action)
        elif isinstance(action, NoteAck):
            self.hub.note_ack(conn.app, conn.user, conn.device, action.pos)
        elif isinstance(action, QueryHistory):
            try:
                items, more = await self.hub.history(
                    conn.app, conn.user, action.conv, action.before, action.after, action.limit
                )
            except ProtocolError as exc:
                self._apply(conn, session.fail(exc, action))
                return
            self._apply(conn, session.history_page(action, items, more))
        elif isinstance(action, QueryPresence):
            users = self.hub.presence(conn.app, action.users)
            self._apply(conn, session.presence_state(action, users))
        elif isinstance(action, QueryMeta):
            try:
                major, found = await self.metadata.read(
                    conn.app, conn.user, action.scope, action.target
                )
            except ProtocolError as exc:
                self._apply(conn, session.fail(exc, action))
                return
            self._apply(conn, session.meta_state(action, major, found))
        elif isinstance(action, QueryLocks):
            try:
                locks = await self.locks.list(conn.app, conn.user, action.channel.channel)
            except ProtocolError as exc:
                self._apply(conn, session.fail(exc, action))
                return
            self._apply(conn, session.locks(action, locks))
        elif isinstance(action, QueryWho):
            try:
                who = await self.states.who_now(conn.app, conn.user, action.channel.channel)
            except ProtocolError as exc:
                self._apply(conn, session.fail(exc, action))
                return
            self._apply(conn, session.who(action, who))
        elif isinstance(action, QueryWhere):
            self._apply(conn, await self.states.where_now(action.rid, conn.app, action.user))
        elif isinstance(action, Attach):
            await self._login(conn, action)
        else:
            self._apply(conn, action)

    def _commit(self, conn: Connection, commit: Commit) -> None:
        session = conn.session

        def done(o: Outcome) -> None:
            self._apply(conn, session.committed(commit, o.error, o.event, o.duplicate, o.role))

        self.hub.submit(self._op(conn, commit.intent), done)

    def _apply(self, conn: Connection, action: Frame | Close | None) -> None:
        if action is None:
            return
        if isinstance(action, Close):
            self.stats["protocol_errors"] += 1
            conn.end_reason = conn.end_reason or _END_REASONS.get(action.code, "protocol_error")
            conn.close(int(action.code), action.code.name, action.final)
            return
        if action.__class__ is Error:
            self.stats["protocol_errors"] += 1
        conn.send_frame(action)

    def _log_defect(self, action: Action | None) -> None:
        """Log the current exception, rate limited (DEFECT_LOG_INTERVAL_S)."""
        self.stats["defects"] += 1
        now = self.clock.monotonic()
        if now - self._defect_logged < DEFECT_LOG_INTERVAL_S:
            self._defects_unlogged += 1
            return
        skipped, self._defects_unlogged = self._defects_unlogged, 0
        self._defect_logged = now
        log.exception(
            "handling a %s failed (%d more since the last report, not logged)",
            type(action).__name__,
            skipped,
        )

    def _internal(self, conn: Connection, action: Action | None) -> None:
        """Answer the request ``action`` came from with INTERNAL."""
        exc = ProtocolError(ErrorCode.INTERNAL, "internal error")
        if isinstance(action, Commit):
            self._apply(conn, conn.session.committed(action, exc))
        else:
            self._apply(conn, conn.session.fail(exc, action))

    def _replace(self, older: Connection) -> None:
        exc = ProtocolError(
            ErrorCode.DEVICE_REPLACED, f"device {older.device!r} logged in on another connection"
        )
        self._fail(older, exc)

    def _claimed_elsewhere(self, claim: DeviceClaim) -> None:
        """Another node logged ``claim.device`` in: close ours if it is the older login
        (equal times: the node id decides, so two racing logins never both survive)."""
        conn = self._devices.get((claim.app, claim.user, claim.device))
        if conn is None:
            return
        if (conn.login_ms, self.settings.server.node_id) < (claim.ts, claim.node):
            del self._devices[(claim.app, claim.user, claim.device)]
            self._replace(conn)

    def _fail(self, conn: Connection, exc: ProtocolError) -> None:
        self._apply(conn, conn.session.fail(exc))

    @staticmethod
    def _op(conn: Connection, intent: Intent) -> Op:
        """The storage operation for ``intent``, on behalf of ``conn``'s device."""
        app, user, device = conn.app, conn.user, conn.device
        if isinstance(intent, PublishIntent):
            return PublishOp(
                app=app,
                sender=user,
                device=device,
                conv=intent.conv,
                client_id=intent.client_id,
                body=intent.body,
                enc=intent.enc,
                ts=intent.ts,
            )
        if isinstance(intent, JoinIntent):
            return JoinOp(
                app=app,
                actor=user,
                device=device,
                channel=intent.channel,
                user=intent.user,
                role=intent.role,
                via=intent.via,
                ts=intent.ts,
            )
        if isinstance(intent, LeaveIntent):
            return LeaveOp(app=app, user=user, device=device, channel=intent.channel, ts=intent.ts)
        if isinstance(intent, MetaIntent):
            return MetaOp(
                app=app,
                actor=user,
                device=device,
                conv=intent.conv,
                scope=intent.scope,
                target=intent.target,
                op=intent.op,
                items=intent.items,
                major=intent.major,
                ts=intent.ts,
                lock=intent.lock,
            )
        if isinstance(intent, LockIntent):
            return LockOp(
                app=app,
                actor=user,
                device=device,
                conv=intent.channel,
                op=intent.op,
                name=intent.name,
                ts=intent.ts,
                ttl_s=intent.ttl_s,
                wait=intent.wait,
            )
        if isinstance(intent, StateIntent):
            return StateOp(
                app=app,
                actor=user,
                device=device,
                conv=intent.channel,
                user=user,
                state=intent.state,
                ts=intent.ts,
            )
        if isinstance(intent, ReadIntent):
            return ReadOp(
                app=app, user=user, device=device, conv=intent.conv, seq=intent.seq, ts=intent.ts
            )
        assert isinstance(intent, DeleteIntent)
        return DeleteOp(
            app=app, user=user, device=device, conv=intent.conv, seq=intent.seq, ts=intent.ts
        )

    async def _login(self, conn: Connection, attach: Attach) -> None:
        if self.draining:
            self._move(conn)  # not a login: nothing of the device is touched
            return
        claims, hello = attach.claims, attach.hello
        conn.app, conn.user, conn.device = claims.app, claims.sub, hello.device
        conn.region, conn.net, conn.sdk = hello.region, hello.net, hello.sdk
        key = (conn.app, conn.user, conn.device)
        older = self._devices.get(key)
        self._devices[key] = conn
        conn.login_ms = millis(self.clock)
        if older is not None and older is not conn:
            # One live connection per device: the older one is closed before the new
            # one reads the stored cursor, so the acks it sent so far count.
            self._replace(older)
        # ... and on the other nodes of a cluster (the newest login wins there too).
        await self.hub.claim_device(conn.app, conn.user, conn.device, conn.login_ms)
        cursor = hello.cursor
        if cursor is None:
            cursor = await self.hub.device_cursor(conn.app, conn.user, conn.device) or 0
        cursor = min(cursor, self.hub.fanned_pos(conn.app))
        welcome = conn.session.welcome(
            claims, hello, cursor, secrets.token_hex(8), millis(self.clock)
        )
        # Register presence before the client hears it is in, so a presence query
        # sent by anyone after this welcome already sees the device (the feed is
        # still in catch-up mode, so live offers meanwhile are ignored, not lost).
        conn.attached = True
        await self.hub.attach(conn)
        conn.send_frame(welcome)
        if self.recorder is not None:
            conn.tel = self.recorder.attach(
                conn.app,
                conn.user,
                conn.device,
                region=conn.region,
                net=conn.net,
                sdk=conn.sdk,
                resumed=hello.cursor is not None,
            )
            conn.session.observer = TelemetryObserver(conn.tel)
        conn.start_feed(cursor)
        conn.active = True

"""The WebSocket gateway: the thin I/O shell around the protocol (docs/protocol.md §3).

Each connection runs its receive loop in the ASGI handler task and its sender
(``Connection.run_sender``) in a child task of the same task group, so nothing
outlives the connection.  One reaper task checks every connection's deadlines
(login, heartbeat, token expiry) once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from typing import Any

from relaydesk.clock import Clock, millis
from relaydesk.config import Settings
from relaydesk.protocol.addresses import channel_conversation, resolve
from relaydesk.protocol.codec import server_codec
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import (
    SUBPROTOCOLS,
    Ack,
    AuthOk,
    ClientFrame,
    Delete,
    Error,
    Hello,
    HistoryPage,
    HistoryQuery,
    Invite,
    Join,
    Joined,
    Leave,
    Ok,
    Ping,
    Pong,
    PresenceQuery,
    PresenceState,
    Probe,
    PubAck,
    Publish,
    Read,
    Refresh,
    Welcome,
)
from relaydesk.protocol.server_session import ServerSession, SessionLimits
from relaydesk.protocol.tokens import Claims, verify_token
from relaydesk.server.gateway.connection import Connection
from relaydesk.server.routing.hub import Hub
from relaydesk.storage.messages import DeleteOp, JoinOp, LeaveOp, Outcome, PublishOp, ReadOp
from relaydesk.telemetry.recorder import Recorder

log = logging.getLogger("relaydesk.gateway")

RESOLVED_MAX = 64  # per-connection cache of resolved publish addresses
ABNORMAL_CLOSURE = 1006  # RFC 6455 §7.1.5: closed without a close frame
NO_STATUS = 1005  # a close frame without a status code, or (uvicorn) a lost connection

# Why a connection ended, for telemetry's connection history (docs/telemetry.md).
_END_REASONS = {
    ErrorCode.HEARTBEAT_TIMEOUT: "heartbeat_timeout",
    ErrorCode.TOKEN_EXPIRED: "auth_expiry",
    ErrorCode.SERVER_SHUTDOWN: "server_shutdown",
}


class Gateway:
    """Accepts WebSocket connections and speaks protocol v1 on them."""

    def __init__(
        self, hub: Hub, settings: Settings, clock: Clock, recorder: Recorder | None = None
    ) -> None:
        self.hub = hub
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
        )
        self.connections: set[Connection] = set()
        self._claims: dict[Connection, Claims] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.stats = {"accepted": 0, "rejected_upgrades": 0, "protocol_errors": 0}

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="gateway-reaper")

    async def aclose(self) -> None:
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

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            mono, wall = self.clock.monotonic(), self.clock.time()
            for conn in list(self.connections):
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
        g = self.settings.gateway
        client = scope.get("client") or ("?", 0)
        conn = Connection(
            self.hub,
            send,
            server_codec(chosen),
            ServerSession(self.limits, self.clock.monotonic()),
            queue_items=g.send_queue_items,
            queue_bytes=g.send_queue_bytes,
            page=g.catchup_page,
            client_addr=f"{client[0]}:{client[1]}",
            fault_drop_device=g.fault_drop_writes_device,
        )
        self.connections.add(conn)
        self.stats["accepted"] += 1
        try:
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(conn.run_sender())
                await self._receive_loop(conn, receive)
                if not sender.done():
                    conn.close(1000, "bye")
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(sender), 1.0)
                    sender.cancel()
        except* (OSError, RuntimeError) as group:  # the socket went away mid-write
            conn.end_reason = conn.end_reason or "transport_error"
            log.debug("connection %s ended: %s", conn.client_addr, group.exceptions)
        finally:
            self.connections.discard(conn)
            self._claims.pop(conn, None)
            conn.session.closed()
            if conn.tel is not None and self.recorder is not None:
                self.recorder.detach(conn.tel, conn.end_reason or "client_close")
            conn.active = False
            if conn.attached:
                conn.attached = False
                await self.hub.detach(conn)

    async def _receive_loop(self, conn: Connection, receive: Any) -> None:
        max_frame = self.settings.gateway.max_frame
        while not conn.closing:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                # Lost without a closing handshake (reset, dead link): telemetry must not
                # count it as the client leaving.  uvicorn reports that as 1006, or as
                # 1005 *without* a "reason" (a received close frame always carries one).
                code = message.get("code")
                lost = code == ABNORMAL_CLOSURE or (code == NO_STATUS and "reason" not in message)
                conn.end_reason = conn.end_reason or ("transport_error" if lost else "client_close")
                return
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            if len(data) > max_frame:
                self._fail(
                    conn,
                    ProtocolError(
                        ErrorCode.FRAME_TOO_LARGE, f"frame of {len(data)} bytes; limit {max_frame}"
                    ),
                )
                continue
            frame: ClientFrame | None = None
            try:
                frame = conn.codec.decode(data)
                err = conn.session.admit(frame, self.clock.monotonic())
                if err is not None:
                    raise err
                await self._dispatch(conn, frame)
            except ProtocolError as exc:
                self._fail(conn, exc, frame)
            except Exception:
                # A defect or a storage failure: report INTERNAL for this request
                # (nothing was applied) and keep the connection.
                log.exception("handling a %s frame failed", type(frame).__name__)
                self._fail(conn, ProtocolError(ErrorCode.INTERNAL, "internal error"), frame)

    def _fail(self, conn: Connection, exc: ProtocolError, frame_ref: Any = None) -> None:
        self.stats["protocol_errors"] += 1
        rid = getattr(frame_ref, "rid", None)
        mid = frame_ref.id if isinstance(frame_ref, Publish) else None
        err = Error(code=int(exc.code), msg=exc.message, rid=rid, id=mid)
        if mid is not None and conn.tel is not None:
            conn.tel.rec.publish_failed(conn.tel)
        if exc.code.closes:
            conn.end_reason = conn.end_reason or _END_REASONS.get(exc.code, "protocol_error")
            conn.close(int(exc.code), exc.code.name, err)
        else:
            conn.send_frame(err)

    # -- frames ------------------------------------------------------------------------

    async def _dispatch(self, conn: Connection, frame: ClientFrame) -> None:
        now_ms = millis(self.clock)
        if isinstance(frame, Publish):
            if conn.inflight >= self.settings.gateway.max_inflight:
                raise ProtocolError(ErrorCode.RATE_LIMITED, "too many unacknowledged publishes")
            target = conn.resolved.get(frame.to)
            if target is None:
                target = resolve(frame.to, conn.user)
                if len(conn.resolved) >= RESOLVED_MAX:
                    conn.resolved.clear()
                conn.resolved[frame.to] = target
            op = PublishOp(
                app=conn.app,
                sender=conn.user,
                device=conn.device,
                conv=target,
                client_id=frame.id,
                body=frame.body,
                enc=frame.enc,
                ts=now_ms,
            )
            conn.inflight += 1
            # Telemetry "received": the pub frame is decoded and admitted.
            recv = self.clock.monotonic() if conn.tel is not None else 0.0

            def published(
                outcome: Outcome, conn: Connection = conn, mid: str = frame.id, recv: float = recv
            ) -> None:
                conn.inflight -= 1
                tel = conn.tel
                if outcome.error is not None:
                    if tel is not None:
                        tel.rec.publish_failed(tel)
                    conn.send_frame(
                        Error(code=int(outcome.error.code), msg=outcome.error.message, id=mid)
                    )
                else:
                    ev = outcome.event
                    assert ev is not None
                    if tel is not None:
                        tel.rec.published(tel, recv, ev.pos, ev.conv, not outcome.duplicate)
                    conn.send_frame(
                        PubAck(
                            id=mid,
                            conv=ev.conv,
                            seq=ev.seq,
                            pos=ev.pos,
                            ts=ev.ts,
                            dup=outcome.duplicate,
                        )
                    )

            self.hub.submit(op, published)
        elif isinstance(frame, Ack):
            if frame.pos > conn.taken:
                raise ProtocolError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"ack {frame.pos} is beyond what was sent ({conn.taken})",
                )
            self.hub.note_ack(conn.app, conn.user, conn.device, frame.pos)
            if conn.tel is not None:
                conn.tel.acked(frame.pos)
        elif isinstance(frame, Ping):
            conn.send_frame(Pong(ts=frame.ts, server_ts=now_ms))
        elif isinstance(frame, Hello):
            await self._login(conn, frame)
        elif isinstance(frame, Probe):
            # Fire and forget: implausible reports are rejected or clamped and
            # counted by telemetry, never answered (docs/telemetry.md §probes).
            if conn.tel is not None:
                conn.tel.rec.probe(conn.tel, frame)
        elif isinstance(frame, Read):
            conv = resolve(frame.conv, conn.user)
            self.hub.submit(
                ReadOp(
                    app=conn.app,
                    user=conn.user,
                    device=conn.device,
                    conv=conv,
                    seq=frame.seq,
                    ts=now_ms,
                ),
                functools.partial(self._reply, conn, None, None),
            )
        elif isinstance(frame, Delete):
            conv = resolve(frame.conv, conn.user)
            self.hub.submit(
                DeleteOp(
                    app=conn.app,
                    user=conn.user,
                    device=conn.device,
                    conv=conv,
                    seq=frame.seq,
                    ts=now_ms,
                ),
                functools.partial(self._reply, conn, frame.rid, Ok(rid=frame.rid)),
            )
        elif isinstance(frame, Join):
            conv = channel_conversation(frame.channel)
            grant = self._claims[conn].grant_for(frame.channel)
            join_op = JoinOp(
                app=conn.app,
                actor=conn.user,
                device=conn.device,
                channel=conv,
                user=conn.user,
                role=grant or "member",
                via="grant" if grant else "public",
                ts=now_ms,
            )

            def joined(o: Outcome, rid: int = frame.rid, ch: str = frame.channel) -> None:
                self._reply(conn, rid, Joined(rid=rid, channel=ch, conv=conv.id, role=o.role), o)

            self.hub.submit(join_op, joined)
        elif isinstance(frame, Leave):
            conv = channel_conversation(frame.channel)
            self.hub.submit(
                LeaveOp(app=conn.app, user=conn.user, device=conn.device, channel=conv, ts=now_ms),
                functools.partial(self._reply, conn, frame.rid, Ok(rid=frame.rid)),
            )
        elif isinstance(frame, Invite):
            conv = channel_conversation(frame.channel)
            invite_op = JoinOp(
                app=conn.app,
                actor=conn.user,
                device=conn.device,
                channel=conv,
                user=frame.user,
                role=frame.role,
                via="invite",
                ts=now_ms,
            )
            self.hub.submit(
                invite_op, functools.partial(self._reply, conn, frame.rid, Ok(rid=frame.rid))
            )
        elif isinstance(frame, HistoryQuery):
            conv = resolve(frame.conv, conn.user)
            try:
                items, more = await self.hub.history(
                    conn.app, conn.user, conv, frame.before, frame.after, frame.limit
                )
            except ProtocolError as exc:
                self._fail(conn, exc, frame)
                return
            conn.send_frame(HistoryPage(rid=frame.rid, conv=conv.id, items=items, more=more))
        elif isinstance(frame, PresenceQuery):
            conn.send_frame(
                PresenceState(rid=frame.rid, users=self.hub.presence(conn.app, frame.users))
            )
        elif isinstance(frame, Refresh):
            claims = verify_token(
                frame.token, self.hub.token_secrets, now=self.clock.time(), expected_app=conn.app
            )
            if claims.sub != conn.user:
                raise ProtocolError(ErrorCode.TOKEN_INVALID, "refresh token is for another user")
            self._claims[conn] = claims
            conn.session.refreshed(claims.exp)
            conn.send_frame(AuthOk(rid=frame.rid, exp=claims.exp))

    def _expired_login(self, hello: Hello, exc: ProtocolError) -> None:
        """Record a login refused for an expired token in the connection history, so a
        client that keeps coming back with it shows as a reconnect loop (diagnosis).

        Only expiry is recorded: ``verify_token`` checks it after the signature, so the
        token's app, user and device are authentic (re-read here ignoring expiry); forged
        or unknown-app tokens must not write rows under an app.
        """
        assert self.recorder is not None
        claims = verify_token(hello.token, self.hub.token_secrets, now=0.0)
        self.recorder.login_failed(
            claims.app,
            claims.sub,
            hello.device,
            int(exc.code),
            region=hello.region,
            net=hello.net,
            sdk=hello.sdk,
        )

    def _reply(self, conn: Connection, rid: int | None, ok: Any, outcome: Outcome) -> None:
        if outcome.error is not None:
            conn.send_frame(Error(code=int(outcome.error.code), msg=outcome.error.message, rid=rid))
        elif ok is not None:
            conn.send_frame(ok)

    async def _login(self, conn: Connection, hello: Hello) -> None:
        try:
            claims = verify_token(hello.token, self.hub.token_secrets, now=self.clock.time())
        except ProtocolError as exc:
            if exc.code is ErrorCode.TOKEN_EXPIRED and self.recorder is not None:
                self._expired_login(hello, exc)
            raise
        if claims.dev is not None and claims.dev != hello.device:
            raise ProtocolError(ErrorCode.TOKEN_INVALID, "token is pinned to another device")
        conn.app, conn.user, conn.device = claims.app, claims.sub, hello.device
        conn.region, conn.net, conn.sdk = hello.region, hello.net, hello.sdk
        cursor = hello.cursor
        if cursor is None:
            cursor = await self.hub.device_cursor(conn.app, conn.user, conn.device) or 0
        cursor = min(cursor, self.hub.fanned_pos)
        self._claims[conn] = claims
        conn.session.logged_in(claims.exp)
        # Register presence before the client hears it is in, so a presence query
        # sent by anyone after this welcome already sees the device (the feed is
        # still in catch-up mode, so live offers meanwhile are ignored, not lost).
        conn.attached = True
        await self.hub.attach(conn)
        s = self.settings
        conn.send_frame(
            Welcome(
                user=conn.user,
                device=conn.device,
                session=secrets.token_hex(8),
                node=s.server.node_id,
                region=s.server.region,
                heartbeat_ms=s.gateway.heartbeat_ms,
                timeout_ms=s.gateway.heartbeat_timeout_ms,
                server_ts=millis(self.clock),
                cursor=cursor,
                max_body=s.gateway.max_body,
                max_frame=s.gateway.max_frame,
                exp=claims.exp,
                publish_rate=s.gateway.publish_rate,
            )
        )
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
        conn.start_feed(cursor)
        conn.active = True

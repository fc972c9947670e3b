"""The native WebSocket path for ``/v1/ws``: websockets' sans-I/O protocol on the raw
transport, with no ASGI message, no task and no coroutine per frame.

Theory of operation (docs/protocol.md §1.1)
-------------------------------------------
One port serves HTTP and WebSocket.  Every connection starts in uvicorn's HTTP
protocol (with the ``[http]`` limits of ``server/listener.py``); when it asks for a
WebSocket upgrade on ``/v1/ws`` the listener hands the raw transport to
:class:`WireProtocol` instead of uvicorn's ASGI WebSocket protocol.  Any other
upgrade and every plain request stay with uvicorn.

``WireProtocol`` feeds the bytes it receives to a websockets ``ServerProtocol``
(handshake, framing, ping/pong, close handshake, the frame limit in bytes) and
each complete message to the gateway, which runs the pure session on it
synchronously; only a frame whose action needs I/O (login, history, presence)
starts a task, and reading pauses until it is done, so frames stay in order.

Writing: a connection never writes from the hub's fan-out.  ``offer`` and
``send_frame`` queue the bytes (already encoded once per commit and codec by the
hub) and mark the connection dirty in the :class:`Flusher`, which runs once per
event-loop turn (``call_soon``, no timer): everything committed in that turn goes
out as one ``msgs`` frame per connection.  A lone message on an idle server is
written in the next loop turn, never held for a batch.  While a transport is over
its high-water mark (``pause_writing``) nothing more is written to it; the output
waits in the connection's bounded queues under the output budget (SLOW_READER,
4042), and ``resume_writing`` pumps again.

Memory: an idle logged-in connection holds this protocol, the websockets
``ServerProtocol``, its ``Connection`` and ``ServerSession`` and no task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from websockets.datastructures import Headers
from websockets.extensions.base import ServerExtensionFactory
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.typing import Subprotocol

from relaydesk.protocol.codec import Codec
from relaydesk.protocol.frames import SUBPROTOCOLS, ClientFrame
from relaydesk.server.gateway.websocket import CLOSE_GRACE_S, _LimitedServerProtocol

if TYPE_CHECKING:
    from relaydesk.server.gateway.connection import Connection
    from relaydesk.server.gateway.gateway import Gateway
    from relaydesk.telemetry.recorder import ConnTelemetry, Recorder

log = logging.getLogger("relaydesk.gateway.wire")
# websockets logs every connection's open and close at INFO: not a line per client in
# a node's log at the default level (errors and warnings still pass).
_ws_log = logging.getLogger("relaydesk.gateway.wire.websockets")
_ws_log.setLevel(logging.WARNING)

# After our close frame, how long a peer that reads may take to answer it before the
# TCP connection is closed anyway (RFC 6455 §7.1.1: the server closes TCP first).
CLOSE_TIMEOUT_S = 10.0

__all__ = ["CLOSE_TIMEOUT_S", "Flusher", "WireProtocol"]


class Flusher:
    """Pumps every connection that has output, once per event-loop turn.

    One per gateway.  ``schedule`` is O(1) and idempotent per turn; the pass runs in
    ``call_soon``, after the callbacks of this turn (a commit batch's whole fan-out)
    have queued their events: writes coalesce per turn, and an idle loop runs the
    pass at once.

    Telemetry (issue 20) stays out of the writes' way: the pass takes one timestamp
    before its first write, the connections only note what they wrote
    (``written``), and the recorder is told after every connection of the pass has
    been written to, all stamped with that one time (before the bytes, so an ack can
    only follow it).  With telemetry on, the last connection of a pass is written no
    later than with it off."""

    __slots__ = (
        "_dirty",
        "_loop",
        "_recorder",
        "_scheduled",
        "frames",
        "passes",
        "written",
    )

    def __init__(self, recorder: Recorder | None = None) -> None:
        self._dirty: dict[Connection, None] = {}  # insertion-ordered set
        # WebSocket frames of the batches written in this pass, by (codec, items):
        # connections given the same events share one encoding and one framing.
        # Emptied after every pass.
        self.frames: dict[object, bytes] = {}
        # The telemetry of each connection given a live batch in this pass (what it
        # wrote is noted on it: ConnTelemetry.wrote_pos, wrote_n).
        self.written: list[ConnTelemetry] = []
        self._recorder = recorder  # None: telemetry off
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.passes = 0

    def schedule(self, conn: Connection) -> None:
        self._dirty[conn] = None
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self.passes += 1
        dirty, self._dirty = self._dirty, {}
        recorder = self._recorder
        stamp = recorder.mono() if recorder is not None else 0.0
        written = self.written
        try:
            for conn in dirty:
                try:
                    conn.pump(written)
                except Exception:  # one broken connection must not stop the others
                    log.exception("writing to %s failed", conn.client_addr)
        finally:
            self.frames.clear()
            if written:
                self.written = []
                assert recorder is not None  # only connections with telemetry add
                recorder.written_pass(written, stamp)


class WireProtocol(asyncio.Protocol):
    """One upgraded ``/v1/ws`` connection (see the module docstring)."""

    __slots__ = (
        "_catchup",
        "_close_timer",
        "_ended",
        "_gateway",
        "_paused",
        "_pending",
        "_reading_paused",
        "_task",
        "_writable_waiter",
        "conn",
        "transport",
        "ws",
    )

    def __init__(
        self,
        gateway: Gateway,
        max_size: int,
        extensions: Sequence[ServerExtensionFactory] | None = None,
    ) -> None:
        self._gateway = gateway
        self.ws = _LimitedServerProtocol(
            extensions=extensions,
            max_size=max_size,
            select_subprotocol=_first_offered,
            logger=_ws_log,
        )
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self._paused = False  # the transport's buffer is over its high-water mark
        self._reading_paused = False
        # Frames already parsed while a frame's I/O (login, history) runs: reading is
        # paused meanwhile, so this holds at most what one read brought.
        self._pending: list[Frame] | None = None
        self._task: asyncio.Task[None] | None = None  # a frame's I/O action
        self._catchup: asyncio.Task[None] | None = None  # only while catching up
        self._writable_waiter: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._ended = False  # the gateway was told (wire_ended)

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is an asyncio.Transport in behaviour, not by class.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        if self.conn is None and ws.state is State.CONNECTING:
            for event in events:
                if isinstance(event, Request):
                    self._handshake(event)
            self._flush_ws()
            return
        if events:
            self._frames(events)
        self._flush_ws()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush_ws()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        waiter = self._writable_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
        for task in (self._task, self._catchup):
            if task is not None and not task.done():
                task.cancel()
        self._end(lost=self.ws.close_rcvd is None and self.ws.close_sent is None)

    def _end(self, *, lost: bool) -> None:
        """The connection is over for the gateway (once): our close is written, or
        the transport is gone.  A transport still flushing our close frame lingers
        at most CLOSE_TIMEOUT_S (CLOSE_GRACE_S if the peer is not reading)."""
        conn = self.conn
        if conn is None or self._ended:
            return
        self._ended = True
        self._gateway.wire_ended(conn, lost=lost)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiter = self._writable_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.conn is not None:
            self._gateway.flusher.schedule(self.conn)

    # -- the handshake ----------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        ws = self.ws
        gateway = self._gateway
        chosen = _first_offered(ws, _offered(request.headers))
        if chosen is None:
            # docs/protocol.md §1: an upgrade that offers neither subprotocol is refused.
            gateway.stats["rejected_upgrades"] += 1
            response = ws.reject(403, "offer a relaydesk subprotocol (docs/protocol.md §1)\n")
            ws.send_response(response)
            return
        response = ws.accept(request)
        ws.send_response(response)
        if response.status_code != 101:
            return
        ws.chosen = chosen
        # The parser's generator keeps the request alive for the whole connection:
        # drop its headers (~2.5 KiB per idle connection; nothing reads them again).
        request.headers = Headers()
        transport = self.transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.conn = gateway.wire_opened(chosen, f"{peer[0]}:{peer[1]}", self)

    # -- frames in ----------------------------------------------------------------------

    def _frames(self, events: Sequence[object]) -> None:
        conn = self.conn
        if conn is None:
            return
        pending = self._pending
        gateway = self._gateway
        for i, event in enumerate(events):
            if not isinstance(event, Frame):
                continue
            if pending is not None:
                pending.append(event)
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                payload = self._payload(event)
                if payload is None:
                    break
                action = gateway.wire_frame(conn, payload)
                if action is not None:
                    # I/O first (login, history): later frames wait, reading pauses.
                    pending = self._pending = [e for e in events[i + 1 :] if isinstance(e, Frame)]
                    self._pause_reading()
                    self._task = asyncio.get_running_loop().create_task(
                        self._run_then_resume(action)
                    )
                    break
            elif opcode is Opcode.CLOSE:
                conn.end_reason = conn.end_reason or "client_close"
        if self.ws.parser_exc is not None:
            close = self.ws.close_sent
            gateway.wire_failed(conn, close.code if close is not None else 0)
        elif pending is None and conn.replies_backlogged and not conn.closing:
            self._backlogged()

    def _payload(self, frame: Frame) -> bytes | str | None:
        """The message as the session takes it (text decoded); None: invalid UTF-8,
        the connection is failed with 1007 (RFC 6455 §8.1)."""
        if frame.opcode is Opcode.TEXT:
            try:
                return bytes(frame.data).decode()
            except UnicodeDecodeError:
                self.ws.fail(CloseCode.INVALID_DATA, "text frame is not UTF-8")
                self._flush_ws()
                if self.conn is not None:
                    self._gateway.wire_failed(self.conn, int(CloseCode.INVALID_DATA))
                return None
        return bytes(frame.data)

    async def _run_then_resume(self, action: object) -> None:
        conn = self.conn
        assert conn is not None
        gateway = self._gateway
        await gateway.wire_action(conn, action)
        while self._pending:
            event = self._pending.pop(0)
            if event.opcode is Opcode.CLOSE:
                conn.end_reason = conn.end_reason or "client_close"
                continue
            if event.opcode is not Opcode.TEXT and event.opcode is not Opcode.BINARY:
                continue
            payload = self._payload(event)
            if payload is None:
                break
            follow = gateway.wire_frame(conn, payload)
            if follow is not None:
                await gateway.wire_action(conn, follow)
        self._pending = None
        self._task = None
        if conn.replies_backlogged and not conn.closing:
            self._backlogged()
        else:
            self._resume_reading()

    def _backlogged(self) -> None:
        """Unwritten replies fill half the budget: read no further request until they
        drain (the transport pushes back on the client); not drained in time: the
        client is not reading (SLOW_READER)."""
        conn = self.conn
        assert conn is not None
        self._pause_reading()
        self._gateway.wire_backlogged(conn)

    def replies_drained(self, conn: Connection) -> None:
        if self._pending is not None:
            return
        if not conn.closing:
            self._gateway.wire_drained(conn)
        # Closing too: the peer's answer to our close frame must still be read, or
        # the closing handshake waits out CLOSE_TIMEOUT_S (requests are ignored).
        self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -- bytes out (the connection's Sink) ----------------------------------------------

    @property
    def writable(self) -> bool:
        return not self._paused

    def write(self, data: bytes, binary: bool) -> None:
        ws = self.ws
        if ws.state is not State.OPEN:
            return
        if binary:
            ws.send_binary(data)
        else:
            ws.send_text(data)
        self._flush_ws()

    def write_batch(self, codec: Codec[ClientFrame], items: list[bytes]) -> None:
        ws = self.ws
        transport = self.transport
        if ws.extensions or ws.state is not State.OPEN or transport is None:
            # Compressed (per connection), or closing: the protocol object frames it.
            self.write(codec.encode_batch(items), codec.binary)
            return
        # Server frames are not masked: without extensions the bytes of a frame depend
        # only on its payload, so one framing serves every connection of this pass.
        frames = self._gateway.flusher.frames
        # One event (the usual batch below peak): its bytes are the key (an item's
        # encoding differs per codec; bytes are not tracked by the cyclic GC, a tuple
        # per connection per pass would be).
        key: object = items[0] if len(items) == 1 else (codec, *items)
        frame = frames.get(key)
        if frame is None:
            opcode = Opcode.BINARY if codec.binary else Opcode.TEXT
            frame = Frame(opcode, codec.encode_batch(items)).serialize(mask=False, extensions=[])
            frames[key] = frame
        transport.write(frame)

    def write_close(self, code: int, reason: str) -> None:
        ws = self.ws
        if ws.state is State.OPEN:
            ws.send_close(code, reason)
            self._flush_ws()
        if self._close_timer is None and self.transport is not None:
            loop = asyncio.get_running_loop()
            # A peer that reads answers the close; one that does not is dropped after
            # a grace (its buffers are freed), as on the ASGI path.
            grace = CLOSE_TIMEOUT_S if not self._paused else CLOSE_GRACE_S
            self._close_timer = loop.call_later(grace, self._drop)
        self._end(lost=False)

    def schedule(self, conn: Connection) -> None:
        self._gateway.flusher.schedule(conn)

    def start_catchup(self, conn: Connection) -> None:
        if self._catchup is None or self._catchup.done():
            self._catchup = asyncio.get_running_loop().create_task(self._run_catchup(conn))

    async def _run_catchup(self, conn: Connection) -> None:
        try:
            await conn.run_catchup(self._until_writable)
        except (OSError, ConnectionError):
            pass  # the transport went away; connection_lost cleans up
        except Exception:
            # A storage failure while reading the feed: this connection cannot go on
            # in order; the client reconnects and resumes from its cursor.
            log.exception("catch-up of %s failed", conn.client_addr)
            conn.end_reason = conn.end_reason or "transport_error"
            conn.close(1011, "internal error")

    async def _until_writable(self) -> None:
        if not self._paused:
            return
        waiter = self._writable_waiter
        if waiter is None or waiter.done():
            waiter = self._writable_waiter = asyncio.get_running_loop().create_future()
        await waiter
        self._writable_waiter = None

    def _flush_ws(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # SEND_EOF: the closing handshake is done, the server closes TCP
                transport.close()
                return
        if self.ws.close_expected() and self._close_timer is None:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._drop)

    def _drop(self) -> None:
        """The close handshake did not finish: close if flushed, else abort."""
        self._close_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            if transport is not None and self._paused:
                transport.abort()
            return
        if self._paused:
            transport.abort()
        else:
            transport.close()


def _offered(headers: Headers) -> list[str]:
    return [
        p.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for p in value.split(",")
        if p.strip()
    ]


def _first_offered(_: object, offered: Sequence[str]) -> Subprotocol | None:
    """The first subprotocol in the client's offer that the server speaks (§1)."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return Subprotocol(name)
    return None

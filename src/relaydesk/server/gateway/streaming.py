"""The HTTP-streaming fallback transport under ``/v1/stream`` (docs/protocol.md §9).

Theory of operation
-------------------
Some corporate proxies and captive portals refuse or stall the WebSocket upgrade.
This module carries protocol v1 over plain HTTP instead, and changes nothing about
what a frame means: each fallback *stream* is handed to the gateway as if it were a
WebSocket, through the narrowest interface the gateway has, its ASGI WebSocket
messages (``Gateway.handle(scope, receive, send)``).  The session state machine,
the output budget, the catch-up/live switch, heartbeats, drain and telemetry are
therefore the same code for both transports.

* **Open** -- ``POST /v1/stream`` whose body is the ``hello`` frame (one JSON line).
  The token in it is verified here and the stream is bound to its ``(app, user)``;
  the answer is a streamed ``text/event-stream`` body: an ``open`` event with the
  stream id, then one ``data:`` line per server frame, then a ``close`` event.
* **Send** -- ``POST /v1/stream/{id}`` with ``Authorization: Bearer <token>`` and
  frames as newline-separated JSON.  The token must name the stream's app and user
  (another client's stream id is refused with 403 FORBIDDEN, so an id that leaks
  cannot be used to act for its owner); the batch is bounded (``MAX_BATCH_BYTES``,
  ``MAX_BATCH_FRAMES``, each line ``gateway.max_frame``) and refused whole with 413.
* **Close** -- ``DELETE /v1/stream/{id}`` (same authorisation): the client leaves on
  purpose; a stream whose request just goes away is a lost link instead.
* **Bounds** -- each stream's inbound frames wait in a queue of ``INBOX_FRAMES``;
  a POST that finds it full waits (back-pressure, like TCP under a WebSocket).
  Outbound frames are written straight to the response by the connection's sender,
  so a client that stops reading the stream meets the WebSocket's output budget
  (SLOW_READER, 4042); if the close cannot be written either, the TCP connection
  is aborted after ``CLOSE_GRACE_S`` through the listener's ``relaydesk.abort``
  scope extension (server/listener.py).

A stream ends when the client's request goes away (a lost link: the session's
feed resumes from the cursor on the next stream, exactly as after a lost
WebSocket), when the session closes it, or on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import SUBPROTOCOL_JSON
from relaydesk.protocol.tokens import verify_token
from relaydesk.server.gateway.gateway import ABNORMAL_CLOSURE, Gateway

log = logging.getLogger("relaydesk.gateway.streaming")

STREAM_PATH: Final = "/v1/stream"
PROBE_PATH: Final = "/v1/stream/probe"

# Frames waiting for the session per stream: two pages of the SDK's default publish
# window is plenty to keep a batch in flight while the gateway handles the last one;
# a POST beyond it waits (back-pressure), so memory per stream stays bounded.
INBOX_FRAMES: Final = 64
# A POST batch: at most this many frames and bytes.  The SDK sends at most its window
# (256) per POST; a burst beyond it is split by the client, not buffered here.
MAX_BATCH_FRAMES: Final = 256
MAX_BATCH_BYTES: Final = 256 * 1024
# The open request carries one hello frame.
MAX_OPEN_BYTES: Final = 16 * 1024
# After the session decided to close, a response the client does not read is
# aborted this long later (its last bytes cannot be delivered anyway).
CLOSE_GRACE_S: Final = 2.0
# Some buffering proxies hold a response until a few KiB have passed; an SSE comment
# of this size at the start pushes the open event through them (docs/protocol.md §9.4).
PADDING_BYTES: Final = 2048

_NO_STREAM: Final = "no such stream (ended or never opened): open a new one"

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class _Ended(Exception):
    pass


class _Inbox:
    """Frames from POSTs to the session, bounded; ``end`` wakes everyone."""

    def __init__(self, limit: int) -> None:
        self._items: deque[str] = deque()
        self._limit = limit
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.ended: int | None = None  # the WebSocket-style close code once ended

    async def put(self, text: str) -> None:
        while len(self._items) >= self._limit and self.ended is None:
            self._writable.clear()
            await self._writable.wait()
        if self.ended is not None:
            raise _Ended
        self._items.append(text)
        self._readable.set()

    def end(self, code: int) -> None:
        if self.ended is None:
            self.ended = code
        self._readable.set()
        self._writable.set()

    async def get(self) -> dict[str, Any]:
        # Frames already accepted (answered 204) are handed over before the end, as a
        # WebSocket's frames before its close frame are: the closing ack counts.
        while not self._items:
            if self.ended is not None:
                return {"type": "websocket.disconnect", "code": self.ended}
            self._readable.clear()
            await self._readable.wait()
        text = self._items.popleft()
        self._writable.set()
        return {"type": "websocket.receive", "text": text}


class _Stream:
    """One fallback stream: the gateway's view (a WebSocket) over one HTTP response."""

    def __init__(self, sid: str, app: str, user: str, http_send: Send) -> None:
        self.sid = sid
        self.app = app
        self.user = user
        self.inbox = _Inbox(INBOX_FRAMES)
        self._http_send = http_send
        self._connected = False
        self.complete = False  # the response body is finished
        self.writing = False  # a write to the response is in progress
        self.frames_out = 0

    # -- the ASGI WebSocket side, as the gateway sees it -------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            await self._write(self._open_event())
        elif kind == "websocket.send":
            text = message.get("text")
            if text is None:  # never: the stream is JSON only
                text = bytes(message.get("bytes") or b"").decode()
            self.frames_out += 1
            await self._write(b"data: " + text.encode() + b"\n\n")
        elif kind == "websocket.close":
            # The session closed: no more frames are read, the response ends.
            self.inbox.end(int(message.get("code", 1000)))
            if self.writing:
                return  # the sender is stuck on an unread response: the handler aborts
            await self.finish(int(message.get("code", 1000)), str(message.get("reason", "")))

    # -- the HTTP response ---------------------------------------------------------------

    def _open_event(self) -> bytes:
        info = msgspec.json.encode(
            {
                "stream": self.sid,
                "post": f"{STREAM_PATH}/{self.sid}",
                "max_batch_frames": MAX_BATCH_FRAMES,
                "max_batch_bytes": MAX_BATCH_BYTES,
            }
        )
        return b":" + b" " * PADDING_BYTES + b"\n\nevent: open\ndata: " + info + b"\n\n"

    async def _write(self, body: bytes) -> None:
        if self.complete:
            return
        self.writing = True
        try:
            await self._http_send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            self.writing = False

    async def finish(self, code: int, reason: str) -> None:
        if self.complete:
            return
        self.complete = True
        close = msgspec.json.encode({"code": code, "reason": reason})
        await self._http_send(
            {"type": "http.response.body", "body": b"event: close\ndata: " + close + b"\n\n"}
        )


def _error(code: ErrorCode, message: str) -> tuple[int, bytes]:
    status = {
        ErrorCode.TOKEN_INVALID: 401,
        ErrorCode.TOKEN_EXPIRED: 401,
        ErrorCode.TOKEN_WRONG_APP: 401,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.NOT_FOUND: 404,
        ErrorCode.FRAME_TOO_LARGE: 413,
        ErrorCode.MESSAGE_TOO_LARGE: 413,
    }.get(code, 400)
    body = msgspec.json.encode(
        {"error": {"code": int(code), "name": code.name, "message": message}}
    )
    return status, body


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StreamGateway:
    """ASGI app for ``/v1/stream``: opens streams into ``gateway``, takes their POSTs."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.streams: dict[str, _Stream] = {}
        self.stats = {"opened": 0, "posts": 0, "refused": 0, "hijacks_refused": 0, "aborted": 0}

    @staticmethod
    def handles(scope: dict[str, Any]) -> bool:
        path = str(scope.get("path", ""))
        return scope["type"] == "http" and (
            path == STREAM_PATH or path.startswith(STREAM_PATH + "/")
        )

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope.get("method", "GET")
        try:
            if path == PROBE_PATH and method == "GET":
                await self._probe(scope, send)
            elif path == STREAM_PATH and method == "POST":
                await self._open(scope, receive, send)
            elif path.startswith(STREAM_PATH + "/") and method in ("POST", "DELETE"):
                await self._post(scope, receive, send, path[len(STREAM_PATH) + 1 :])
            else:
                raise _Refused(ErrorCode.NOT_FOUND, f"no route {method} {path}")
        except _Refused as exc:
            self.stats["refused"] += 1
            await _answer(send, *_error(exc.code, exc.message))

    # -- probe (doctor) ----------------------------------------------------------------

    async def _probe(self, scope: dict[str, Any], send: Send) -> None:
        """What the node saw of this request: the headers a proxy on the path adds."""
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope["headers"]}
        seen = {k: headers[k] for k in ("via", "forwarded", "x-forwarded-for") if k in headers}
        client = scope.get("client") or ("?", 0)
        body = msgspec.json.encode({"stream": True, "client": client[0], "proxy_headers": seen})
        await _answer(send, 200, body)

    # -- open --------------------------------------------------------------------------

    async def _open(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        body = await _read_body(receive, MAX_OPEN_BYTES)
        line = body.strip()
        if not line or b"\n" in line:
            raise _Refused(ErrorCode.BAD_FRAME, "the open request carries one hello frame")
        try:
            hello = msgspec.json.decode(line)
        except msgspec.DecodeError:
            raise _Refused(ErrorCode.BAD_FRAME, "the hello frame is not JSON") from None
        if not isinstance(hello, dict) or hello.get("t") != "hello":
            raise _Refused(ErrorCode.NOT_AUTHENTICATED, "the first frame must be hello")
        hub = self.gateway.hub
        try:
            claims = verify_token(
                str(hello.get("token", "")), hub.token_secrets, now=hub.clock.time()
            )
        except ProtocolError as exc:
            raise _Refused(exc.code, exc.message) from None
        sid = secrets.token_urlsafe(18)  # 144 random bits: not guessable
        stream = _Stream(sid, claims.app, claims.sub, send)
        self.streams[sid] = stream
        self.stats["opened"] += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache, no-store, no-transform"),
                    (b"x-accel-buffering", b"no"),  # nginx: do not buffer this response
                    (b"x-relaydesk-stream", sid.encode()),
                ],
            }
        )
        await stream.inbox.put(line.decode())
        ws_scope = {
            "type": "websocket",
            "path": STREAM_PATH,
            "subprotocols": [SUBPROTOCOL_JSON],
            "client": scope.get("client"),
            "headers": scope.get("headers", []),
            "transport": "stream",
        }
        try:
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(self._watch_disconnect(receive, stream))
                await self.gateway.handle(ws_scope, stream.receive, stream.send)
                watcher.cancel()
        finally:
            self.streams.pop(sid, None)
            stream.inbox.end(ABNORMAL_CLOSURE)
            if not stream.complete:
                await self._end_response(scope, stream)

    async def _watch_disconnect(self, receive: Receive, stream: _Stream) -> None:
        """The client's request went away: to the gateway, a lost WebSocket."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                stream.inbox.end(ABNORMAL_CLOSURE)
                stream.complete = True  # nothing more can be written
                return

    async def _end_response(self, scope: dict[str, Any], stream: _Stream) -> None:
        code = stream.inbox.ended or 1000
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                await stream.finish(code, "stream closed")
        except TimeoutError:
            # The client does not read its stream: drop the connection, free its buffers.
            self.stats["aborted"] += 1
            abort = scope.get("extensions", {}).get("relaydesk.abort")
            if abort is not None:
                abort()

    # -- send ------------------------------------------------------------------------

    async def _post(self, scope: dict[str, Any], receive: Receive, send: Send, sid: str) -> None:
        self.stats["posts"] += 1
        stream = self.streams.get(sid)
        token = _bearer(scope)
        hub = self.gateway.hub
        try:
            claims = verify_token(token, hub.token_secrets, now=hub.clock.time())
        except ProtocolError as exc:
            raise _Refused(exc.code, exc.message) from None
        if stream is None:
            raise _Refused(ErrorCode.NOT_FOUND, _NO_STREAM)
        if (claims.app, claims.sub) != (stream.app, stream.user):
            self.stats["hijacks_refused"] += 1
            raise _Refused(ErrorCode.FORBIDDEN, "this stream belongs to another client")
        if scope.get("method") == "DELETE":
            stream.inbox.end(1000)  # the client closes: not a lost link
            await _answer(send, 204, b"")
            return
        body = await _read_body(receive, MAX_BATCH_BYTES)
        lines = [line for line in body.split(b"\n") if line.strip()]
        if len(lines) > MAX_BATCH_FRAMES:
            raise _Refused(
                ErrorCode.FRAME_TOO_LARGE,
                f"{len(lines)} frames in one POST; at most {MAX_BATCH_FRAMES}",
            )
        limit = self.gateway.settings.gateway.max_frame
        for line in lines:
            if len(line) > limit:
                raise _Refused(ErrorCode.FRAME_TOO_LARGE, f"a frame over the {limit}-byte limit")
        try:
            for line in lines:
                await stream.inbox.put(line.decode(errors="replace"))
        except _Ended:
            raise _Refused(ErrorCode.NOT_FOUND, _NO_STREAM) from None
        await _answer(send, 204, b"")


def _bearer(scope: dict[str, Any]) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == b"authorization":
            scheme, _, token = value.decode(errors="replace").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return str(token).strip()
    raise _Refused(ErrorCode.TOKEN_INVALID, "missing Authorization: Bearer credentials")


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Refused(ErrorCode.BAD_FRAME, "the request body did not arrive")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _Refused(ErrorCode.FRAME_TOO_LARGE, f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    if body:
        headers.append((b"content-type", b"application/json"))
    with contextlib.suppress(OSError, RuntimeError):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

"""The SDK's HTTP-streaming fallback link and the transport choice (docs/protocol.md §9).

Theory of operation
-------------------
``StreamLink`` is a ``Link`` (client/transport.py) over two kinds of HTTP request, so
the session, the runner and every delivery rule are the ones a WebSocket uses:

* the first ``send`` is always the session's ``hello``: it opens the stream
  (``POST /v1/stream`` with the hello as body); the response is a server-sent-event
  stream that ``recv`` reads one ``data:`` line (one frame) at a time;
* every later ``send`` files the frame in a bounded outbox (``MAX_PENDING_FRAMES``;
  a sender beyond it waits) and the link's one *poster* task sends everything
  filed as one ``POST /v1/stream/{id}`` batch, one batch in flight at a time, so
  frames keep their order and a slow link carries many frames per round trip;
* the token for those POSTs is the one in ``hello`` (and in each ``refresh``): the
  server binds the stream to its app and user;
* any refusal or network error ends the link (``LinkClosed``); the runner then
  reconnects and the session resumes from its cursor, as after a lost WebSocket.

``TransportChoice`` is the pure rule for which transport to try (``AutoOpener`` is its
shell): a WebSocket first; after an upgrade that was refused or stalled, the stream,
for ``STICKY_S`` seconds before the WebSocket is tried again.  A connection refused
at the TCP level is the node being down, not a blocked upgrade: no fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import websockets

from relaydesk.client.transport import Link, LinkClosed, Opener, open_websocket
from relaydesk.clock import Clock, SystemClock
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import SUBPROTOCOL_JSON

log = logging.getLogger("relaydesk.client.streaming")

# Frames filed and not yet posted: a publish window and its acks fit; beyond it the
# session's writer waits, as it would on a full WebSocket buffer.
MAX_PENDING_FRAMES = 512
# One POST carries at most this much (the server's documented limits, §9.3).
MAX_BATCH_FRAMES = 256
MAX_BATCH_BYTES = 256 * 1024
# After a refused or stalled upgrade, the stream is used this long for that node.
STICKY_S = 600.0
# An upgrade with no answer within this many seconds counts as stalled.
UPGRADE_STALL_S = 5.0

TransportName = Literal["auto", "websocket", "stream"]

_STATUS_CODES = {401: ErrorCode.TOKEN_INVALID, 403: ErrorCode.FORBIDDEN}


def stream_url(ws_url: str) -> str:
    """The fallback's base URL for a node's WebSocket URL (ws→http, wss→https)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path
    if path.endswith("/v1/ws"):
        path = path[: -len("/v1/ws")]
    return urlunsplit((scheme, parts.netloc, path.rstrip("/") + "/v1/stream", "", ""))


class _Token(msgspec.Struct):
    t: str
    token: str = ""


_peek = msgspec.json.Decoder(_Token)


class StreamLink:
    """``Link`` over the HTTP-streaming fallback of one node."""

    def __init__(self, url: str, open_timeout: float) -> None:
        self.url = url
        self._open_timeout = open_timeout
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(open_timeout, read=None),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
        )
        self._token = ""
        self.sid = ""
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._opened = asyncio.Event()
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._idle = asyncio.Event()  # nothing filed and no POST in flight
        self._idle.set()
        self._poster: asyncio.Task[None] | None = None
        self._closed: LinkClosed | None = None
        self.posts = 0

    @property
    def subprotocol(self) -> str:
        return SUBPROTOCOL_JSON

    # -- send ----------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        if self._closed is not None:
            raise self._closed
        try:
            frame = _peek.decode(data)
        except msgspec.DecodeError:
            frame = None
        if frame is not None and frame.token:
            self._token = frame.token  # hello and refresh carry the current token
        if self._response is None:
            await self._open(data)
            return
        while len(self._pending) >= MAX_PENDING_FRAMES and self._closed is None:
            self._room.clear()
            await self._room.wait()
        if self._closed is not None:
            raise self._closed
        self._pending.append(data)
        self._idle.clear()
        self._wake.set()

    async def _open(self, hello: bytes) -> None:
        try:
            request = self._http.build_request("POST", self.url, content=hello)
            async with asyncio.timeout(self._open_timeout):
                response = await self._http.send(request, stream=True)
        except (httpx.HTTPError, TimeoutError) as exc:
            self._end(LinkClosed(None, f"stream open failed: {exc}"))
            raise self._closed from None  # type: ignore[misc]
        if response.status_code != 200:
            body = await response.aread()
            await response.aclose()
            self._end(_refusal(response.status_code, body))
            raise self._closed from None  # type: ignore[misc]
        self._response = response
        self.sid = response.headers.get("x-relaydesk-stream", "")
        self._lines = response.aiter_lines()
        self._poster = asyncio.create_task(self._post_loop(), name="relaydesk-stream-poster")
        self._opened.set()

    async def _post_loop(self) -> None:
        headers = {"content-type": "application/x-ndjson"}
        while self._closed is None:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: list[bytes] = []
            size = 0
            while self._pending and len(batch) < MAX_BATCH_FRAMES:
                if batch and size + len(self._pending[0]) + 1 > MAX_BATCH_BYTES:
                    break
                data = self._pending.pop(0)
                batch.append(data)
                size += len(data) + 1
            self._room.set()
            headers["authorization"] = f"Bearer {self._token}"
            try:
                response = await self._http.post(
                    f"{self.url}/{self.sid}", content=b"\n".join(batch), headers=headers
                )
            except httpx.HTTPError as exc:
                self._end(LinkClosed(None, f"stream post failed: {exc}"))
                return
            self.posts += 1
            if response.status_code != 204:
                self._end(_refusal(response.status_code, response.content))
                return

    # -- receive -------------------------------------------------------------------------

    async def recv(self) -> bytes | str:
        await self._opened.wait()
        if self._closed is not None:
            raise self._closed
        assert self._lines is not None
        event, data = "", ""
        try:
            async for line in self._lines:
                if line.startswith(":"):
                    continue  # a comment: padding
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].lstrip(" ")
                elif line == "":
                    if event == "close":
                        info = msgspec.json.decode(data or "{}")
                        self._end(LinkClosed(info.get("code"), str(info.get("reason", ""))))
                        raise self._closed  # type: ignore[misc]
                    if event == "" and data:
                        return data
                    event, data = "", ""
        except httpx.HTTPError as exc:
            self._end(LinkClosed(None, f"stream read failed: {exc}"))
            raise self._closed from None  # type: ignore[misc]
        self._end(LinkClosed(None, "stream ended"))
        raise self._closed  # type: ignore[misc]

    # -- close ---------------------------------------------------------------------------

    def _end(self, exc: LinkClosed) -> None:
        if self._closed is None:
            self._closed = exc
        self._opened.set()
        self._room.set()
        self._wake.set()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        leaving = self._closed is None and self.sid and code == 1000
        if leaving:
            # What was filed last (the closing ack) still goes out, as a WebSocket
            # writes it before its close frame.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._idle.wait()
        self._end(LinkClosed(code, reason))
        if self._poster is not None:
            self._poster.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poster
        if leaving and not self._http.is_closed:
            # Said on purpose (not a lost link): the server records a client close.
            # (A concurrent aclose may have closed the HTTP client meanwhile: then the
            # link is over already and there is nothing left to say.)
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._http.delete(
                        f"{self.url}/{self.sid}", headers={"authorization": f"Bearer {self._token}"}
                    )
        if self._response is not None:
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._response.aclose()
        with contextlib.suppress(httpx.HTTPError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._http.aclose()


def _refusal(status: int, body: bytes) -> LinkClosed:
    """A refused stream request as a close: the documented error code when there is one."""
    code: int | None = None
    message = f"HTTP {status}"
    try:
        error = msgspec.json.decode(body).get("error", {})
        code, message = int(error["code"]), str(error.get("message", message))
    except (msgspec.DecodeError, AttributeError, KeyError, TypeError, ValueError):
        code = _STATUS_CODES.get(status)
    if code == ErrorCode.NOT_FOUND:
        code = None  # the stream ended under us: a lost link, reconnect
    return LinkClosed(code, message)


async def open_stream(url: str, subprotocols: Sequence[str], open_timeout: float) -> Link:
    """A fallback ``Link`` to the node whose WebSocket URL is ``url`` (opens on ``hello``)."""
    del subprotocols  # the stream carries the JSON subprotocol only (§9)
    return StreamLink(stream_url(url), open_timeout)


class TransportChoice:
    """Which transport to try for a node, from what happened before (pure; ``now``)."""

    def __init__(self, sticky_s: float = STICKY_S) -> None:
        self.sticky_s = sticky_s
        self._fell_back: dict[str, float] = {}

    def pick(self, url: str, now: float) -> Literal["websocket", "stream"]:
        since = self._fell_back.get(url)
        if since is not None and now - since < self.sticky_s:
            return "stream"
        self._fell_back.pop(url, None)
        return "websocket"

    def upgrade_failed(self, url: str, now: float) -> None:
        """The upgrade was refused or stalled: use the stream for a while."""
        self._fell_back[url] = now


class AutoOpener:
    """An ``Opener``: WebSocket, or the stream when the upgrade is refused or stalls."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        stall_s: float = UPGRADE_STALL_S,
        websocket: Opener = open_websocket,
        stream: Opener = open_stream,
        choice: TransportChoice | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.stall_s = stall_s
        self._websocket = websocket
        self._stream = stream
        self.choice = choice or TransportChoice()
        self.fallbacks = 0
        self.last: Literal["websocket", "stream"] | None = None

    async def __call__(self, url: str, subprotocols: Sequence[str], open_timeout: float) -> Link:
        now = self.clock.monotonic()
        if self.choice.pick(url, now) == "websocket":
            try:
                link = await self._websocket(url, subprotocols, min(open_timeout, self.stall_s))
                self.last = "websocket"
                return link
            except (websockets.InvalidHandshake, TimeoutError) as exc:
                # Refused (a proxy answering 403, a portal's page) or stalled.
                log.info("WebSocket upgrade to %s failed (%s); using the stream", url, exc)
                self.choice.upgrade_failed(url, self.clock.monotonic())
                self.fallbacks += 1
        self.last = "stream"
        return await self._stream(url, subprotocols, open_timeout)


def opener_for(transport: TransportName, clock: Clock | None = None) -> Opener:
    """The opener of ``connect(transport=...)``."""
    if transport == "websocket":
        return open_websocket
    if transport == "stream":
        return open_stream
    return AutoOpener(clock)


__all__: Sequence[str] = [
    "AutoOpener",
    "StreamLink",
    "TransportChoice",
    "open_stream",
    "opener_for",
    "stream_url",
]

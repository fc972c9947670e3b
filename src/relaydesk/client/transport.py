"""The asyncio shell around ``ClientSession``: sockets, timers and tasks.

Theory of operation
-------------------
All protocol decisions live in the pure ``ClientSession``
(``relaydesk.protocol.client_session``); this module only moves bytes and time.
It is the one place in the SDK that creates tasks:

* ``SessionRunner.run`` is the supervisor, a single task owned by the
  ``Client`` and cancelled by ``Client.aclose``.  It loops: get a token, open a
  ``Link``, run one connection, wait the session's back-off, repeat, until the
  session is CLOSED or FAILED.
* Each connection runs in its own ``asyncio.TaskGroup`` with three tasks: the
  reader (decode, ``session.receive``, complete futures), the writer (wakes on
  ``wake()`` or the session's next deadline, calls ``session.poll`` and writes
  what the session wants sent) and, with a token provider, the refresher.
  When any of them ends, the others are cancelled, the link is closed, and
  ``session.connection_lost`` decides between reconnecting and giving up.

Nothing here buffers: frames go from the session straight to the socket
(websockets' own write buffer is bounded by ``write_limit`` and applies
back-pressure on ``send``), and received frames go straight into the session,
whose outbox and feed buffer are bounded (see its theory of operation).

``Link`` is the narrow transport interface (httpx-style), so tests and other
transports can stand in for WebSockets.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol
from urllib.parse import quote

import httpx
import jwt
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.extensions.base import ClientExtensionFactory
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.typing import Subprotocol

from relaydesk.aio import wait_event
from relaydesk.client.connlog import ConnectionLog
from relaydesk.client.endpoints import Endpoints
from relaydesk.clock import Clock
from relaydesk.protocol.client_session import (
    ClientSession,
    Completion,
    ConnectionState,
    LocalProtocolError,
    ReconnectPolicy,
)
from relaydesk.protocol.codec import Codec, client_codec
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Ack, Refresh, ServerFrame

log = logging.getLogger("relaydesk.client")

TokenProvider = Callable[[], Awaitable[str]]
"""An async callable returning a fresh token (docs/protocol.md §2.2)."""

# Largest frame accepted from the server.  Catch-up batches are cut by the server
# well below this; the bound only stops a broken peer from exhausting memory.
MAX_INBOUND_FRAME = 16 * 1024 * 1024


class LinkClosed(Exception):
    """The link is gone; ``code`` is the peer's close code when one arrived."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"link closed ({code}): {reason}")
        self.code = code
        self.reason = reason


class Link(Protocol):
    """One open, message-oriented connection to a gateway."""

    @property
    def subprotocol(self) -> str: ...

    async def send(self, data: bytes) -> None:
        """Write one frame; raises ``LinkClosed``."""
        ...

    async def recv(self) -> bytes | str:
        """Read one frame; raises ``LinkClosed``."""
        ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None: ...


Opener = Callable[[str, Sequence[str], float], Awaitable[Link]]


class WebSocketLink:
    """``Link`` over a websockets asyncio client connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._text = ws.subprotocol is not None and ws.subprotocol.endswith(".json")

    @property
    def extensions(self) -> list[str]:
        """The WebSocket extensions negotiated (``permessage-deflate`` or none)."""
        return [ext.name for ext in self._ws.protocol.extensions]

    @property
    def subprotocol(self) -> str:
        return str(self._ws.subprotocol or "")

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send(data.decode() if self._text else data)
        except websockets.ConnectionClosed as exc:
            raise LinkClosed(exc.rcvd.code if exc.rcvd else None) from None

    async def recv(self) -> bytes | str:
        try:
            return await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise LinkClosed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)


async def open_websocket(url: str, subprotocols: Sequence[str], open_timeout: float) -> Link:
    """Open a WebSocket to ``url`` offering ``subprotocols`` (docs/protocol.md §1)."""
    return await _open(url, subprotocols, open_timeout, None)


def websocket_opener(*, deflate: bool = False, context_takeover: bool = False) -> Opener:
    """An ``opener`` for ``connect``: with ``deflate`` it offers permessage-deflate
    (RFC 7692), which the server accepts only if its operator enabled it, else the
    connection goes on uncompressed.  Context takeover is off in both directions
    unless ``context_takeover`` (then the server decides, per its own setting)."""
    if not deflate:
        return open_websocket
    no_takeover = not context_takeover
    extensions = [
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=no_takeover,
            client_no_context_takeover=no_takeover,
            compress_settings={"memLevel": 5},
        )
    ]

    async def open_deflate(url: str, subprotocols: Sequence[str], open_timeout: float) -> Link:
        return await _open(url, subprotocols, open_timeout, extensions)

    return open_deflate


async def _open(
    url: str,
    subprotocols: Sequence[str],
    open_timeout: float,
    extensions: Sequence[ClientExtensionFactory] | None,
) -> WebSocketLink:
    ws = await ws_connect(
        url,
        subprotocols=[Subprotocol(p) for p in subprotocols],
        open_timeout=open_timeout,
        ping_interval=None,  # the protocol has its own heartbeat (§6)
        compression=None,
        extensions=extensions,
        max_size=MAX_INBOUND_FRAME,
        close_timeout=2,
        proxy=None,
    )
    if ws.subprotocol not in subprotocols:
        await ws.close(1002, "no subprotocol")
        raise LinkClosed(1002, f"server chose subprotocol {ws.subprotocol!r}")
    return WebSocketLink(ws)


def _told_to_move(s: ClientSession) -> bool:
    """The node sent ``moved`` and then ``error{4061}`` on this link (§3.6)."""
    error = s.last_error
    return s.moved is not None and error is not None and error.code == ErrorCode.SERVER_DRAINING


class SessionRunner:
    """Drives one ``ClientSession`` over successive links until it is closed or failed."""

    def __init__(
        self,
        session: ClientSession,
        *,
        endpoints: Endpoints,
        subprotocol: str,
        token: str | TokenProvider,
        clock: Clock,
        reconnect: ReconnectPolicy,
        open_timeout: float,
        on_completions: Callable[[list[Completion]], None],
        on_items: Callable[[], None],
        on_state: Callable[[ConnectionState], None],
        save_cursor: Callable[[int], Awaitable[None]],
        opener: Opener = open_websocket,
        rand: Callable[[], float] = random.random,
        refresh: Callable[[], Awaitable[list[str]]] | None = None,
        connection_log: ConnectionLog | None = None,
    ) -> None:
        self.session = session
        self.log = connection_log or ConnectionLog()
        self._logged_rtt: float | None = None
        self._logged_error: object = None
        self.endpoints = endpoints
        self.url = ""  # the node of the current (or last) connection
        self._directory = refresh
        self._subprotocol = subprotocol
        self._codec: Codec[ServerFrame] = client_codec(subprotocol)
        self._token = token
        self._clock = clock
        self._policy = reconnect
        self._open_timeout = open_timeout
        self._on_completions = on_completions
        self._on_items = on_items
        self._on_state = on_state
        self._save_cursor = save_cursor
        self._opener = opener
        self._wake = asyncio.Event()
        self._retry_now = asyncio.Event()  # a network change ends a back-off wait early
        self._refreshed = asyncio.Event()  # set when ``auth_ok`` moved the expiry
        self._exp = session.exp
        self._link: Link | None = None
        self._state = session.state
        self.last_close: tuple[int | None, str] | None = None
        self.last_failure: str | None = None  # why the last connection attempt failed
        self._closing: set[asyncio.Task[None]] = set()  # links left when moved, closing

    # -- called by the Client ------------------------------------------------------

    def wake(self) -> None:
        """The session has something to send or a new deadline: let the writer look."""
        self._wake.set()
        self._publish()

    def network_changed(self) -> None:
        """The device changed networks: drop the link and reconnect at once (§6.2)."""
        self.session.network_changed(self._clock.monotonic())
        self._retry_now.set()
        self.wake()

    async def aclose(self) -> None:
        """Send a last ack, close the link (the owner then cancels the supervisor task)."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        link = self._link
        if link is None:
            return
        try:
            async with asyncio.timeout(2.0):
                if self.session.flush_ack():
                    for frame in self.session.take_outgoing():
                        if isinstance(frame, Ack):
                            await self._save_cursor(frame.pos)
                        await link.send(self._codec.encode(frame))
                await link.aclose(1000, "client closed")
        except (LinkClosed, OSError, TimeoutError):
            pass

    # -- supervisor ----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, run, back off, reconnect, until the session is terminal."""
        s = self.session
        if self._directory is not None:
            await self._ask_directory()
        while not s.terminal:
            code: int | None = None
            url = self.url = self.endpoints.current(self._clock.monotonic())
            round_failed = True
            try:
                token = await self._fetch_token()
                link = await self._opener(url, [self._subprotocol], self._open_timeout)
            except (
                OSError,
                TimeoutError,
                LinkClosed,
                websockets.InvalidHandshake,
                websockets.InvalidURI,
            ) as exc:
                if isinstance(exc, websockets.InvalidURI):
                    raise
                log.info("connect to %s failed: %s", url, exc)
                self.last_failure = f"{url}: {type(exc).__name__}: {exc}"
                self.log.connect_failed(self._ms(), url, f"{type(exc).__name__}: {exc}")
                round_failed = self.endpoints.failed(url, self._clock.monotonic())
                s.connection_lost(None, self._clock.monotonic())
                self._publish()
            except Exception:  # a token provider that failed: retry later like a network error
                log.exception("token provider failed")
                s.connection_lost(None, self._clock.monotonic())
                self._publish()
            else:
                if link.subprotocol != self._codec.name:
                    # The fallback stream carries JSON only (docs/protocol.md §9).
                    self._codec = client_codec(link.subprotocol)
                self.endpoints.connected(url, self._clock.monotonic())
                self.log.connected(self._ms(), self._clock.monotonic(), url)
                s.moved = None
                s.connection_opened(token, self._clock.monotonic())
                self._link = link
                try:
                    code = await self._run_link(link)
                except Exception:  # a defect here must not strand every pending call
                    log.exception("connection task failed; reconnecting")
                    await self._close_quietly(link, 1011, "client error")
                finally:
                    self._link = None
                    reason = self.last_close[1] if self.last_close and code is not None else ""
                    self.log.closed(self._ms(), self._clock.monotonic(), url, code, reason)
                now = self._clock.monotonic()
                if code == ErrorCode.SERVER_DRAINING:
                    hints: list[str] = s.moved.urls if s.moved is not None else []
                    self.endpoints.drained(url, hints, now)
                if not s.terminal:
                    s.connection_lost(code, now, elsewhere=self.endpoints.elsewhere(now))
                self._publish()
            if s.terminal:
                break
            delay = s.reconnect_delay(self._policy)
            if not round_failed:
                delay = 0.0  # another node is still to be tried in this round
            elif self._directory is not None and code is None:
                await self._ask_directory()  # every node failed: nodes may have moved
            log.info("reconnecting in %.2fs (attempt %d)", delay, s.attempt)
            self.log.waiting(self._ms(), delay)
            self._retry_now.clear()
            if await wait_event(self._retry_now, delay):
                s.reconnect_delay(self._policy)  # consumed: the retry is now

    async def _ask_directory(self) -> None:
        """A fresh ranking from the edge directory; on any failure keep the list we have."""
        assert self._directory is not None
        try:
            urls = await self._directory()
        except Exception as exc:  # unreachable directory: the known nodes still work
            log.info("edge directory unavailable: %s", exc)
            return
        self.endpoints.replace(urls, self._clock.monotonic())

    async def _fetch_token(self) -> str:
        if isinstance(self._token, str):
            return self._token
        return await self._token()

    async def _run_link(self, link: Link) -> int | None:
        """Run one connection until it ends; return the peer's close code."""
        result: list[int | None] = [None]

        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._read(link, result)),
                tg.create_task(self._write(link)),
            ]
            if not isinstance(self._token, str):
                tasks.append(tg.create_task(self._refresh()))

            def stop_all(_: asyncio.Task[None]) -> None:
                for t in tasks:
                    t.cancel()

            for t in tasks:
                t.add_done_callback(stop_all)
        if result[0] == ErrorCode.SERVER_DRAINING and self.session.moved is not None:
            # Told to move: reconnect now; the close finishes in the background.
            closing = asyncio.get_running_loop().create_task(
                self._close_quietly(link, 1000, "moved")
            )
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            return result[0]
        try:
            await asyncio.wait_for(link.aclose(), 2.0)
        except (LinkClosed, OSError, TimeoutError):
            pass
        return result[0]

    async def _read(self, link: Link, result: list[int | None]) -> None:
        s = self.session
        try:
            while True:
                data = await link.recv()
                frame = self._codec.decode(data)
                s.receive(frame, self._clock.monotonic())
                self._after_receive()
                if _told_to_move(s):
                    # ``moved``, then ``error{4061}``: the node said where to go and that
                    # it closes now; its close frame adds nothing, and a slow path or a
                    # loaded node can hold it (or its TCP close) for seconds, keeping
                    # this client on the node it is asked to leave (docs/protocol.md §3.6).
                    code = ErrorCode.SERVER_DRAINING
                    self.last_close = (int(code), code.name)
                    result[0] = int(code)
                    return
        except LinkClosed as exc:
            self.last_close = (exc.code, exc.reason)
            result[0] = exc.code
            if s.last_error is not None and exc.code is None:
                result[0] = s.last_error.code  # the error frame said why (§7)
            log.info("link closed: %s %s", exc.code, exc.reason)
        except (ProtocolError, LocalProtocolError) as exc:
            # The server broke the contract: drop the link and resume from the cursor.
            log.warning("protocol violation from server: %s", exc)
            result[0] = None
            await self._close_quietly(link, int(ErrorCode.BAD_FRAME), "protocol violation")
        except OSError as exc:
            log.info("link failed: %s", exc)

    def _ms(self) -> int:
        return int(self._clock.time() * 1000)

    def _after_receive(self) -> None:
        s = self.session
        if s.rtt is not None and s.rtt != self._logged_rtt:
            self._logged_rtt = s.rtt
            self.log.rtt(self._ms(), self._clock.monotonic(), self.url, s.rtt)
        if s.last_error is not None and s.last_error is not self._logged_error:
            self._logged_error = s.last_error
            self.log.error(self._ms(), self.url, int(s.last_error.code), s.last_error.msg)
        done = s.take_completions()
        if done:
            self._on_completions(done)
        if s.buffered:
            self._on_items()
        if s.exp != self._exp:
            self._exp = s.exp
            self._refreshed.set()
        self._wake.set()
        self._publish()

    async def _write(self, link: Link) -> None:
        s = self.session
        try:
            while True:
                now = self._clock.monotonic()
                alive = s.poll(now, int(self._clock.time() * 1000))
                for frame in s.take_outgoing():
                    if isinstance(frame, Ack):
                        await self._save_cursor(frame.pos)
                    await link.send(self._codec.encode(frame))
                done = s.take_completions()
                if done:
                    self._on_completions(done)
                if not alive:
                    log.info("no word from the server within the timeout; reconnecting")
                    await self._close_quietly(link, 4050, "heartbeat timeout")
                    return
                if s.resync_wanted:
                    await self._close_quietly(link, 1000, "resync")
                    return
                if s.terminal:
                    return
                self._wake.clear()
                timeout = max(
                    0.0, s.next_deadline(self._clock.monotonic()) - self._clock.monotonic()
                )
                await wait_event(self._wake, timeout)
        except LinkClosed:
            return
        except OSError as exc:
            log.info("write failed: %s", exc)

    async def _refresh(self) -> None:
        """Fetch a new token from the provider ahead of expiry (docs/protocol.md §2.2)."""
        s = self.session
        while True:
            exp = s.exp
            if exp is None or not s.logged_in:
                await asyncio.sleep(1.0)
                continue
            left = exp - self._clock.time()
            margin = min(60.0, max(2.0, left * 0.2))
            if left > margin:
                await asyncio.sleep(left - margin)
                continue
            try:
                token = await self._fetch_token()
            except Exception:
                log.exception("token provider failed; retrying")
                await asyncio.sleep(5.0)
                continue
            s.request(Refresh(rid=s.next_rid(), token=token))
            self.wake()
            # The auth_ok updates ``s.exp``; wait for it (the link may end first).
            self._refreshed.clear()
            if not await wait_event(self._refreshed, 10.0):
                log.warning("no auth_ok within 10s; trying again")

    async def _close_quietly(self, link: Link, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(link.aclose(code, reason), 2.0)
        except (LinkClosed, OSError, TimeoutError):
            pass

    def _publish(self) -> None:
        state = self.session.state
        if state is not self._state:
            self._state = state
            self._on_state(state)


async def fetch_edges(
    directory: str, token: str, region: str, *, timeout_s: float = 5.0
) -> list[str]:
    """The ranked node URLs for this token's app and ``region`` from the edge directory
    (``GET /v1/apps/{app}/edges``, docs/scaling.md) of any node at ``directory``."""
    app = jwt.decode(token, options={"verify_signature": False}).get("app")
    if not isinstance(app, str):
        raise ValueError("the token names no app")
    async with httpx.AsyncClient(base_url=directory.rstrip("/"), timeout=timeout_s) as http:
        response = await http.get(
            f"/v1/apps/{quote(app, safe='')}/edges",
            params={"region": region or "local"},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        return [str(edge["url"]) for edge in response.json()["edges"]]

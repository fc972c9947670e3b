"""A corporate proxy in a box: relays HTTP, refuses or stalls WebSocket upgrades.

Used by the fallback tests, ``doctor``'s tests and the weak-network benchmark to put
a WebSocket-hostile middlebox between a client and a node (docs/protocol.md §9).
Each accepted connection's first request head is read (at most ``MAX_HEAD`` bytes);
a request asking for ``Upgrade: websocket`` is answered ``403`` (``mode="refuse"``)
or held without an answer until the client gives up (``mode="stall"``); any other
request is forwarded upstream with a ``Via`` header added, as a real proxy does,
and the connection is then relayed byte for byte both ways.

Ownership: every handler task is tracked; ``aclose`` cancels and awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

BlockMode = Literal["refuse", "stall"]

# A request head larger than this is refused (real proxies cap it at 8-64 KiB).
MAX_HEAD = 64 * 1024
VIA = b"1.1 relaydesk-netsim-blocker"


class UpgradeBlocker:
    """Listens on ``listen_address``; relays to ``upstream``; blocks upgrades."""

    def __init__(self, upstream: tuple[str, int], mode: BlockMode) -> None:
        self.upstream = upstream
        self.mode = mode
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.upgrades_blocked = 0
        self.requests_relayed = 0

    @property
    def listen_address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def _start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host, port)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            if len(head) > MAX_HEAD:
                return
            if b"upgrade: websocket" in head.lower():
                self.upgrades_blocked += 1
                if self.mode == "refuse":
                    writer.write(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n"
                        b"content-length: 24\r\nconnection: close\r\nvia: " + VIA + b"\r\n\r\n"
                        b"WebSocket not permitted\n"
                    )
                    await writer.drain()
                else:
                    await reader.read()  # stall: answer nothing until the client leaves
                return
            self.requests_relayed += 1
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            line, _, rest = head.partition(b"\r\n")
            up_writer.write(line + b"\r\nvia: " + VIA + b"\r\n" + rest)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(_pipe(reader, up_writer))
                    tg.create_task(_pipe(up_reader, writer))
            finally:
                up_writer.close()
        except (OSError, ExceptionGroup):
            return
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> UpgradeBlocker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(64 * 1024):
            dst.write(data)
            await dst.drain()
    finally:
        with contextlib.suppress(OSError):
            dst.write_eof()


async def open_upgrade_blocker(
    upstream: tuple[str, int],
    mode: BlockMode = "refuse",
    listen: tuple[str, int] = ("127.0.0.1", 0),
) -> UpgradeBlocker:
    """Start a blocker relaying to ``upstream`` (see the module docstring)."""
    blocker = UpgradeBlocker(upstream, mode)
    await blocker._start(*listen)
    return blocker

"""A minimal protocol client on raw websockets, for gateway tests (no SDK logic)."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from relaydesk.protocol.codec import client_codec
from relaydesk.protocol.frames import SUBPROTOCOL_MSGPACK, Event, Hello, Messages, ServerFrame


class Raw:
    def __init__(self, ws: ClientConnection, subprotocol: str) -> None:
        self.ws = ws
        self.codec = client_codec(subprotocol)
        self.events: list[Event] = []
        self.frames: list[Any] = []

    @classmethod
    async def open(cls, url: str, subprotocol: str = SUBPROTOCOL_MSGPACK, **kw: Any) -> Raw:
        ws = await connect(url, subprotocols=[subprotocol], max_size=2**24, **kw)  # type: ignore[list-item]
        return cls(ws, subprotocol)

    @classmethod
    async def login(
        cls,
        url: str,
        token: str,
        device: str = "d1",
        cursor: int | None = None,
        subprotocol: str = SUBPROTOCOL_MSGPACK,
    ) -> Raw:
        raw = await cls.open(url, subprotocol)
        await raw.send(Hello(token=token, device=device, cursor=cursor))
        await raw.expect("welcome")
        await raw.expect("synced")
        return raw

    async def send(self, frame: Any) -> None:
        await self.ws.send(
            self.codec.encode(frame) if self.codec.binary else self.codec.encode(frame).decode()
        )

    async def recv(self, timeout: float = 5.0) -> ServerFrame:
        frame = self.codec.decode(await asyncio.wait_for(self.ws.recv(), timeout))
        if isinstance(frame, Messages):
            self.events.extend(frame.items)
        self.frames.append(frame)
        return frame

    async def expect(self, tag: str, timeout: float = 5.0) -> Any:
        """Read frames until one tagged ``tag`` (events are collected on the way)."""
        while True:
            frame = await self.recv(timeout)
            if type(frame).__struct_config__.tag == tag:
                return frame

    async def events_until(self, n: int, timeout: float = 10.0) -> list[Event]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.events) < n:
            await self.recv(max(0.01, deadline - loop.time()))
        return self.events

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        try:
            while True:
                await self.recv(timeout)
        except Exception:
            pass
        await self.ws.wait_closed()
        return self.ws.close_code, self.ws.close_reason

    async def aclose(self) -> None:
        await self.ws.close()


class NonReader:
    """A client that sends frames and never reads (docs/protocol.md §8.1 SLOW_READER).

    Built on websockets' sans-I/O client protocol over a plain socket with a small
    receive buffer, so nothing reads on its behalf: after the handshake the server's
    replies pile up in the server.  ``drain`` reads everything at the end and returns
    the close code the server sent.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: Any
    ) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.codec = client_codec(SUBPROTOCOL_MSGPACK)
        self.sent = 0

    @classmethod
    async def open(cls, url: str, rcvbuf: int = 4096) -> NonReader:
        import socket
        from urllib.parse import urlsplit

        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        protocol = ClientProtocol(parse_uri(url), subprotocols=[SUBPROTOCOL_MSGPACK])  # type: ignore[list-item]
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        head = await reader.readuntil(b"\r\n\r\n")
        protocol.receive_data(head)
        assert protocol.handshake_exc is None, protocol.handshake_exc
        protocol.events_received()
        # asyncio's stream would otherwise keep reading up to twice its 64 KiB limit on
        # our behalf, and the kernel's buffers are what the server must fill: stop reading.
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        return cls(reader, writer, protocol)

    async def send(self, frame: Any) -> None:
        self.protocol.send_binary(self.codec.encode(frame))
        self.writer.write(b"".join(self.protocol.data_to_send()))
        self.sent += 1
        try:  # the server may stop reading us (backpressure): do not wait on it
            await asyncio.wait_for(self.writer.drain(), 0.05)
        except TimeoutError:
            pass

    async def drain(self, timeout: float = 20.0) -> int | None:
        """Read all the server wrote until it closes; the close code it sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.writer.transport.resume_reading()  # type: ignore[attr-defined]
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 20), deadline - loop.time())
            except (ConnectionError, TimeoutError):
                break
            if not data:
                self.protocol.receive_eof()
                break
            self.protocol.receive_data(data)
            self.protocol.events_received()
            if self.protocol.close_rcvd is not None:
                break
        self.writer.close()
        rcvd = self.protocol.close_rcvd
        return None if rcvd is None else int(rcvd.code)

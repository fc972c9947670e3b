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

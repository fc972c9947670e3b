"""kill -9 over the HTTP-streaming fallback (docs/protocol.md §9): nothing acknowledged
is lost or repeated when the node dies under a publisher and a recipient that both
use ``/v1/stream``, and the recipient restarts from its stored cursor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import relaydesk
from relaydesk.client import Client, MemoryCursorStore, Message, ReconnectPolicy, SendReceipt
from relaydesk.client.streaming import StreamLink

N = 600
FAST = ReconnectPolicy(base_s=0.05, max_s=0.5)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigkill_over_the_stream_loses_and_repeats_nothing(
    make_server: Callable[..., Any],
) -> None:
    server = make_server(config={"gateway": {"publish_rate": 100_000, "publish_burst": 100_000}})
    store = MemoryCursorStore()

    def open_recipient() -> Any:
        return relaydesk.connect(
            server.ws_url,
            server.token("rcpt"),
            device="r1",
            cursor_store=store,
            reconnect=FAST,
            transport="stream",
        )

    publisher: Client = await relaydesk.connect(
        server.ws_url, server.token("pub"), device="p1", reconnect=FAST, transport="stream"
    )
    recipient: Client = await open_recipient()
    assert isinstance(publisher._runner._link, StreamLink)
    received: list[Message] = []
    receipts: list[SendReceipt] = []

    async def consume(client: Client) -> None:
        async for ev in client.events():
            if isinstance(ev, Message):
                received.append(ev)

    async def when(predicate: Callable[[], bool], limit: float = 60.0) -> None:
        async with asyncio.timeout(limit):
            while not predicate():
                await asyncio.sleep(0.01)

    try:
        consumer = asyncio.ensure_future(consume(recipient))
        sends = [asyncio.ensure_future(publisher.send("user:rcpt", f"u{i}")) for i in range(N)]
        await when(lambda: len(received) >= N // 3)
        await asyncio.to_thread(server.kill)
        unconfirmed = len(publisher.unsent())
        consumer.cancel()
        await recipient.aclose()
        await asyncio.to_thread(server.start)
        recipient = await open_recipient()
        consumer = asyncio.ensure_future(consume(recipient))
        for fut in sends:
            receipts.append(await asyncio.wait_for(fut, 60))
        await when(lambda: len(received) >= N, 30)
        await asyncio.sleep(0.3)  # a duplicate would show up now
        consumer.cancel()
        acked = sorted(receipts, key=lambda r: r.seq)
        assert [m.id for m in received] == [r.id for r in acked], "lost or repeated"
        assert [m.text for m in received] == [f"u{i}" for i in range(N)]
        assert unconfirmed > 0  # the kill hit publishes in flight
        assert publisher.statistics().connects >= 2
    finally:
        await publisher.aclose()
        await recipient.aclose()

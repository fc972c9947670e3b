"""Crash: SIGKILL the server twice under load; nothing acknowledged is lost or repeated.

A publisher sends 5,000 messages to a user and 5,000 to a channel through the
SDK while the server is killed with SIGKILL twice and restarted on the same
data.  Every message the publisher got a puback for must reach the recipient
(whose client also restarts, resuming from its stored cursor) exactly once, in
the order it was sent (BRIEF §4; docs/protocol.md §5).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import relaydesk
from relaydesk.client import Client, MemoryCursorStore, Message, ReconnectPolicy, SendReceipt

N = 5_000
FAST = ReconnectPolicy(base_s=0.05, max_s=0.5)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigkill_twice_loses_and_repeats_nothing(make_server: Callable[..., Any]) -> None:
    # A publish rate above what we send: order is then exactly send order (a
    # RATE_LIMITED retry may legitimately land after later messages).
    server = make_server(config={"gateway": {"publish_rate": 100_000, "publish_burst": 100_000}})
    started = time.monotonic()
    store = MemoryCursorStore()

    def open_recipient() -> Any:
        return relaydesk.connect(
            server.ws_url,
            server.token("rcpt", channels={"crash": "member"}),
            device="r1",
            cursor_store=store,
            reconnect=FAST,
        )

    publisher: Client = await relaydesk.connect(
        server.ws_url,
        server.token("pub", channels={"crash": "owner"}),
        device="p1",
        reconnect=FAST,
        window=256,
    )
    recipient: Client = await open_recipient()
    try:
        await publisher.join("crash")
        await recipient.join("crash")
        received: list[Message] = []
        receipts: list[SendReceipt] = []

        async def consume(client: Client) -> None:
            async for ev in client.events():
                if isinstance(ev, Message) and ev.sender == "pub":
                    received.append(ev)

        consumer = asyncio.ensure_future(consume(recipient))

        async def publish() -> None:
            sends = []
            for i in range(N):
                sends.append(asyncio.ensure_future(publisher.send("user:rcpt", f"u{i}")))
                sends.append(asyncio.ensure_future(publisher.send("channel:crash", f"c{i}")))
                if i % 500 == 499:
                    await asyncio.sleep(0)  # let the writer drain between bursts
            for fut in sends:
                receipts.append(await fut)

        producer = asyncio.ensure_future(publish())
        unconfirmed_at_kill: list[int] = []

        async def when(predicate: Callable[[], bool], limit: float = 60.0) -> None:
            async with asyncio.timeout(limit):
                while not predicate():
                    await asyncio.sleep(0.01)

        # Kill 1: mid-stream; the recipient process "restarts" too (new client,
        # resuming from its stored cursor).
        await when(lambda: len(received) >= 1500)
        await asyncio.to_thread(server.kill)
        unconfirmed_at_kill.append(len(publisher.unsent()))
        consumer.cancel()
        await recipient.aclose()
        await asyncio.sleep(0.2)
        await asyncio.to_thread(server.start)
        recipient = await open_recipient()
        consumer = asyncio.ensure_future(consume(recipient))
        # Kill 2: later, with publishes in flight.
        await when(lambda: len(received) >= 6000)
        await asyncio.to_thread(server.kill)
        unconfirmed_at_kill.append(len(publisher.unsent()))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.start)

        await asyncio.wait_for(producer, 60)
        assert len(receipts) == 2 * N
        await when(lambda: len(received) >= 2 * N, 30)
        await asyncio.sleep(0.3)  # anything extra (a duplicate) would show up now
        consumer.cancel()

        for conv, prefix in (("dm:pub:rcpt", "u"), ("ch:crash", "c")):
            acked = sorted((r for r in receipts if r.conv == conv), key=lambda r: r.seq)
            got = [m for m in received if m.conv == conv]
            assert len(acked) == N
            assert [m.id for m in got] == [r.id for r in acked], f"{conv}: lost or repeated"
            assert [m.seq for m in got] == [r.seq for r in acked]
            assert [m.text for m in got] == [f"{prefix}{i}" for i in range(N)], "send order"
        # The kills really hit a stream in flight, and the publisher reconnected.
        assert all(n > 0 for n in unconfirmed_at_kill), unconfirmed_at_kill
        assert publisher.statistics().connects >= 3
        print(
            f"unconfirmed at kills {unconfirmed_at_kill}, dup pubacks "
            f"{sum(r.dup for r in receipts)}, publisher {publisher.statistics()}"
        )
        assert time.monotonic() - started < 90
    finally:
        await publisher.aclose()
        await recipient.aclose()

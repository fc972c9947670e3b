"""kill -9 of the node while encrypted messages and their key bundles are in flight:
afterwards every acknowledged encrypted message decrypts on every entitled device."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from client.e2ee_kit import e2ee_server, open_device
from relaydesk.client import Message, SendReceipt
from relaydesk.client.crypto import KeyDirectoryError
from relaydesk.e2ee import RotationPolicy

pytestmark = pytest.mark.slow
COUNT = 12


async def test_kill_9_during_key_sharing_loses_no_key(make_server: Callable[..., Any]) -> None:
    server = e2ee_server(make_server)
    server.add_members(["alice", "bob", "carol"], channel="room")
    async with AsyncExitStack() as stack:
        # Rotation every 3 messages: key sharing is going on all the time.
        alice = await open_device(stack, server, "alice", "a1", policy=RotationPolicy(3))
        readers = [await open_device(stack, server, "bob", f"b{i}") for i in range(3)]
        readers.append(await open_device(stack, server, "carol", "c1"))
        got: dict[str, dict[int, bytes]] = {r.client.device: {} for r in readers}

        async def pump(reader: Any) -> None:
            async for event in reader.events():
                if isinstance(event, Message) and event.conv == "ch:room":
                    got[reader.client.device][event.seq] = event.body

        pumps = [asyncio.create_task(pump(r)) for r in readers]
        receipts: list[SendReceipt] = []

        async def send_all() -> None:
            for i in range(COUNT):
                while True:
                    try:
                        receipts.append(await alice.send("channel:room", f"crash {i}"))
                        break
                    except (httpx.HTTPError, KeyDirectoryError, OSError):
                        await asyncio.sleep(0.2)  # the node is down: the app retries

        sending = asyncio.create_task(send_all())
        while len(receipts) < 3:
            await asyncio.sleep(0.01)
        server.kill()  # mid-stream: bundles and messages in flight
        server.start()
        async with asyncio.timeout(120):
            await sending
            wanted = {r.seq for r in receipts}
            while any(set(g) < wanted for g in got.values()):
                await asyncio.sleep(0.1)
        for p in pumps:
            p.cancel()
        for device, seen in got.items():
            assert {seq: seen[seq] for seq in wanted} == {
                r.seq: f"crash {i}".encode() for i, r in enumerate(receipts)
            }, device

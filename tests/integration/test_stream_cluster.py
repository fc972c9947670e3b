"""The HTTP-streaming fallback through a cluster (docs/protocol.md §9): a user on the
stream on one node and a user on a WebSocket on the other exchange messages both ways,
each exactly once and in order, and the stream user's device moves across nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from cluster_kit import cluster_config

import relaydesk
from relaydesk.client import Client, MemoryCursorStore, Message, ReconnectPolicy
from relaydesk.client.streaming import StreamLink

pytestmark = [pytest.mark.services, pytest.mark.slow]

FAST = ReconnectPolicy(base_s=0.1, max_s=0.5)


async def _take(client: Client, sender: str, n: int) -> list[str]:
    out: list[str] = []
    async with asyncio.timeout(20):
        async for ev in client.events():
            if isinstance(ev, Message) and ev.sender == sender:
                out.append(ev.text)
                if len(out) == n:
                    return out
    return out


async def test_stream_and_websocket_users_on_two_nodes(
    make_server: Callable[..., Any], pg_url: str, nats_url: str
) -> None:
    a = make_server(cluster_config(pg_url, nats_url, "node-a", leader=True), name="a")
    b = make_server(cluster_config(pg_url, nats_url, "node-b", leader=False), name="b")
    a.add_members(["alice", "bob"])
    # The app keeps alice's cursor (§4.2): the node she comes back to need not have
    # flushed the device's stored cursor yet.
    store = MemoryCursorStore()
    async with (
        relaydesk.connect(
            a.ws_url,
            a.token("alice"),
            device="a1",
            reconnect=FAST,
            transport="stream",
            cursor_store=store,
        ) as alice,
        relaydesk.connect(b.ws_url, b.token("bob"), device="b1", reconnect=FAST) as bob,
    ):
        assert isinstance(alice._runner._link, StreamLink)
        for i in range(40):
            await alice.send("channel:room", f"a{i}")
            await bob.send("user:alice", f"b{i}")
        assert await _take(bob, "alice", 40) == [f"a{i}" for i in range(40)]
        assert await _take(alice, "bob", 40) == [f"b{i}" for i in range(40)]
    # alice's device comes back on the other node, over the stream, and resumes there.
    async with relaydesk.connect(b.ws_url, b.token("bob"), device="b1", reconnect=FAST) as bob:
        await bob.send("user:alice", "while you were away")
    async with relaydesk.connect(
        b.ws_url,
        b.token("alice"),
        device="a1",
        reconnect=FAST,
        transport="stream",
        cursor_store=store,
    ) as alice_b:
        assert await _take(alice_b, "bob", 1) == ["while you were away"]

"""Two real nodes, one PostgreSQL database, fan-out over NATS (scale-out, BRIEF §1).

Each node is a ``relaydesk serve`` process; users on different nodes talk in a channel
and directly.  Every acknowledged message reaches every recipient exactly once and in
order, including across a SIGKILL of one node while messages are in flight: its users
reconnect (to the same address, as behind a load balancer that restarts the node) and
resume from their cursor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cluster_kit import cluster_config

import relaydesk
from relaydesk.client import Client, Message, ReconnectPolicy

pytestmark = [pytest.mark.services, pytest.mark.slow]

FAST = ReconnectPolicy(base_s=0.1, max_s=0.5)


async def _collect(client: Client, into: list[Message]) -> None:
    async for ev in client.events():
        if isinstance(ev, Message):
            into.append(ev)


async def _until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _from(messages: list[Message], sender: str) -> list[str]:
    return [m.body.decode() for m in messages if m.sender == sender]


async def test_users_on_two_nodes_exchange_messages_across_a_node_crash(
    make_server: Callable[..., Any], pg_url: str, nats_url: str
) -> None:
    a = make_server(cluster_config(pg_url, nats_url, "node-a", leader=True), name="a")
    b = make_server(cluster_config(pg_url, nats_url, "node-b", leader=False), name="b")
    a.add_members(["alice", "bob"])
    got: dict[str, list[Message]] = {"alice": [], "bob": []}

    def sdk(server: Any, user: str) -> Any:
        return relaydesk.connect(
            server.ws_url, server.token(user), device=f"{user}-1", reconnect=FAST
        )

    async with sdk(a, "alice") as alice, sdk(b, "bob") as bob:
        readers = [
            asyncio.create_task(_collect(alice, got["alice"])),
            asyncio.create_task(_collect(bob, got["bob"])),
        ]
        await alice.send("channel:room", "hi from a")
        await bob.send("user:alice", "hi from b")
        await _until(lambda: _from(got["alice"], "bob") == ["hi from b"])
        await _until(lambda: _from(got["bob"], "alice") == ["hi from a"])

        async def online(client: Client, user: str) -> bool:
            [state] = await client.presence([user])
            return state.online

        # Presence is cluster-wide: each sees the other, connected to the other node.
        deadline = time.monotonic() + 10
        while not (await online(alice, "bob") and await online(bob, "alice")):
            assert time.monotonic() < deadline, "presence did not cross the nodes"
            await asyncio.sleep(0.1)

        # 400 messages each way; node b dies (SIGKILL) in the middle and comes back.
        async def stream(client: Client, tag: str) -> None:
            for i in range(400):
                await client.send("channel:room", f"{tag} {i}", id=f"{tag}-{i}")

        streams = [
            asyncio.create_task(stream(alice, "a")),
            asyncio.create_task(stream(bob, "b")),
        ]
        await _until(lambda: len(got["bob"]) > 150)
        await asyncio.to_thread(b.kill)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(b.start)
        await asyncio.wait_for(asyncio.gather(*streams), 60)
        await _until(
            lambda: (
                len(_from(got["alice"], "bob")) == 401 and len(_from(got["bob"], "alice")) == 401
            )
        )
        # Both nodes are up again: each one's commits now reach the other over the bus.
        await alice.send("channel:room", "a last", id="a-last")
        await bob.send("channel:room", "b last", id="b-last")
        await _until(lambda: "a last" in _from(got["bob"], "alice"))
        await _until(lambda: "b last" in _from(got["alice"], "bob"))
        await asyncio.sleep(0.5)  # anything duplicated would arrive now
        for reader in readers:
            reader.cancel()

    for user, other, tag in (("alice", "bob", "b"), ("bob", "alice", "a")):
        positions = [m.pos for m in got[user]]
        assert positions == sorted(set(positions)), f"{user}: out of order or duplicated"
        assert _from(got[user], other)[1:] == [
            *(f"{tag} {i}" for i in range(400)),
            f"{tag} last",
        ], f"{user} lost, duplicated or reordered {other}'s messages"
    # The banner says which node is which.
    assert "(leader: runs the desk's background jobs)" in a.log_path.read_text()
    assert "(follower)" in b.log_path.read_text()
    # The nodes saw each other's commits over the bus, not only from storage.
    for server in (a, b):
        cluster = httpx.get(server.http_url + "/readyz").json()["cluster"]
        assert cluster["remote_events"] > 0, cluster

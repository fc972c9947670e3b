"""Agora-style features on two real nodes (PostgreSQL + NATS): the database decides
every race, not one node's memory (docs/protocol.md §5.11-§5.12)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from cluster_kit import cluster_config

import relaydesk
from relaydesk.client import Client, MetadataChange, ReconnectPolicy, RevisionConflict

pytestmark = [pytest.mark.services, pytest.mark.slow]

FAST = ReconnectPolicy(base_s=0.1, max_s=0.5)
OWNER = {"room": "owner"}


def sdk(server: Any, user: str, device: str = "d") -> Any:
    return relaydesk.connect(
        server.ws_url, server.token(user, channels=OWNER), device=device, reconnect=FAST
    )


async def test_metadata_cas_and_lock_races_across_two_nodes(
    make_server: Callable[..., Any], pg_url: str, nats_url: str
) -> None:
    a = make_server(cluster_config(pg_url, nats_url, "node-a", leader=True), name="a")
    b = make_server(cluster_config(pg_url, nats_url, "node-b", leader=False), name="b")
    clients: list[Client] = []
    try:
        for i in range(8):
            clients.append(await sdk(a if i % 2 else b, f"w{i}"))
        for c in clients:
            await c.join("room")
        base = await clients[0].set_metadata("channel", "room", {"turn": "start"})
        for round_ in range(3):
            results = await asyncio.gather(
                *(
                    c.set_metadata("channel", "room", {"turn": f"{round_}-{i}"}, major=base)
                    for i, c in enumerate(clients)
                ),
                return_exceptions=True,
            )
            won = [r for r in results if isinstance(r, int)]
            lost = [r for r in results if isinstance(r, RevisionConflict)]
            assert won == [base + 1] and len(lost) == len(clients) - 1, results
            assert {e.revision for e in lost} == {base + 1}
            base += 1
        # Every member, on either node, saw the same changes in the same order.
        for c in (clients[0], clients[1]):
            seen: list[int] = []
            it = c.events()
            async with asyncio.timeout(10):
                while len(seen) < 4:
                    ev = await anext(it)
                    if isinstance(ev, MetadataChange):
                        seen.append(ev.major)
            assert seen == [base - 3, base - 2, base - 1, base]
        snap_a = await clients[1].get_metadata("channel", "room")
        snap_b = await clients[0].get_metadata("channel", "room")
        assert snap_a == snap_b and snap_a.major == base

        # Locks: eight acquirers on two nodes at once; one holds, seven queue, and the
        # lock passes down the queue in its order, one holder at a time.
        await clients[0].set_lock("room", "mic", ttl_s=30)
        held = await asyncio.gather(*(c.acquire_lock("room", "mic", wait=True) for c in clients))
        assert held.count(True) == 1
        [lock] = await clients[1].locks("room")
        assert len(lock.waiters) == 7 and lock.holder not in lock.waiters
        by_user = {c.user: c for c in clients}
        order = [lock.holder, *lock.waiters]
        for i, user in enumerate(order):
            [now] = await by_user[user].locks("room")
            assert now.holder == user and list(now.waiters) == order[i + 1 :]
            await by_user[user].release_lock("room", "mic")
        [last] = await clients[0].locks("room")
        assert last.holder == "" and last.waiters == ()
    finally:
        for c in clients:
            await c.aclose()

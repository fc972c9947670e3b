"""Feed positions are per app (docs/protocol.md §4.2): a device never sees another
app's traffic as gaps in its positions, live, in catch-up, or through a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from raw_client import Raw
from test_cluster_hubs import Endpoint, make_cluster, until

from relaydesk.clock import millis
from relaydesk.protocol.addresses import resolve
from relaydesk.protocol.frames import Publish
from relaydesk.server.routing.hub import Hub
from relaydesk.storage.messages import PublishOp

APPS = {
    "appa": "secret-of-app-a-0123456789abcdefghij",
    "appb": "secret-of-app-b-0123456789abcdefghij",
}
N = 25


@pytest.mark.slow  # a server process: 5-6 s, past 10 s on a busy machine
async def test_a_device_sees_contiguous_positions_while_another_app_publishes(
    make_server: Callable[..., Any],
) -> None:
    srv = make_server({"apps": [{"id": app, "secret": key} for app, key in APPS.items()]})

    def token(app: str, user: str) -> str:
        return srv.token(user, app=app, secret=APPS[app])

    bob = await Raw.login(srv.ws_url, token("appa", "bob"), device="b1", cursor=0)
    dave = await Raw.login(srv.ws_url, token("appb", "dave"), device="d1", cursor=0)
    alice = await Raw.login(srv.ws_url, token("appa", "alice"), device="a1")
    carol = await Raw.login(srv.ws_url, token("appb", "carol"), device="c1")

    async def send(raw: Raw, to: str, tag: str) -> list[int]:
        positions = []
        for i in range(N):
            await raw.send(Publish(id=f"{tag}{i}", to=to, body=f"{tag}{i}".encode()))
            positions.append((await raw.expect("puback")).pos)
        return positions

    # The two apps' publishes interleave in the server's group commits.
    sent_a, sent_b = await asyncio.gather(
        send(alice, "user:bob", "a"), send(carol, "user:dave", "b")
    )
    assert sent_a == list(range(1, N + 1)) and sent_b == list(range(1, N + 1))
    for raw in (bob, dave):  # live delivery
        events = await raw.events_until(N)
        assert [e.pos for e in events] == list(range(1, N + 1))
    # Catch-up of a new device from the start of the feed.
    late = await Raw.login(srv.ws_url, token("appa", "bob"), device="b2", cursor=0)
    assert [e.pos for e in await late.events_until(N)] == list(range(1, N + 1))
    # A cursor is clamped to the device's own app's position, not another's.
    ahead = await Raw.login(srv.ws_url, token("appa", "bob"), device="b3", cursor=10**6)
    assert ahead.frames[0].cursor == N
    for raw in (bob, dave, alice, carol, late, ahead):
        await raw.aclose()


async def test_cluster_nodes_sequence_each_app_on_its_own(tmp_path: Path) -> None:
    """Two hubs on one database and a bus: each app's positions are contiguous and
    reach every node in order, whichever node committed them."""
    async with make_cluster(tmp_path) as (a, b, _):
        bob = Endpoint("bob")
        dave = Endpoint("dave")
        dave.app = "appb"
        await b.attach(bob)
        await a.attach(dave)

        async def stream(hub: Hub, app: str, sender: str, to: str, tag: str) -> None:
            for i in range(N):
                op = PublishOp(
                    app=app,
                    sender=sender,
                    device="d1",
                    conv=resolve(to, sender),
                    client_id=f"{tag}{i}",
                    body=b"x",
                    enc="",
                    ts=millis(hub.clock),
                )
                outcome = await hub.apply(op)
                assert outcome.error is None

        start_a = a.fanned_pos(bob.app)
        await asyncio.gather(
            stream(a, bob.app, "alice", "user:bob", "a"),  # committed on a, bob on b
            stream(b, "appb", "carol", "user:dave", "b"),  # committed on b, dave on a
            stream(b, bob.app, "erin", "user:bob", "e"),
        )
        await until(lambda: len(bob.events) == 2 * N and len(dave.events) == N)
        assert [e.pos for e in bob.events] == list(range(start_a + 1, start_a + 2 * N + 1))
        assert [e.pos for e in dave.events] == list(range(1, N + 1))
        for hub in (a, b):
            await until(lambda hub=hub: hub.fanned_pos("appb") == N)  # type: ignore[misc]
            await until(
                lambda hub=hub: hub.fanned_pos(bob.app) == start_a + 2 * N  # type: ignore[misc]
            )

"""Draining and node failure on a real cluster: SDK clients move, nothing lost or repeated.

Three ``relaydesk serve`` nodes on one PostgreSQL database and NATS: ``eu-1`` and
``eu-2`` in eu-west, ``us-1`` in us-east.  SDK clients in eu-west find their nodes
through the edge directory; a backend publishes to their channel all along.
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

OPERATOR = "operator-key-for-edge-tests-0123456789"
FAST = ReconnectPolicy(base_s=0.1, max_s=0.5)
USERS = [f"u{i}" for i in range(6)]


def _config(pg_url: str, nats_url: str, node: str, region: str, leader: bool) -> dict[str, Any]:
    config = cluster_config(pg_url, nats_url, node, leader=leader, region=region)
    config["cluster"]["node_heartbeat_ms"] = 300
    config["telemetry"] = {**config.get("telemetry", {}), "operator_key": OPERATOR}
    return config


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _collect(client: Client, into: list[Message]) -> None:
    async for ev in client.events():
        if isinstance(ev, Message):
            into.append(ev)


def _publisher(server: Any, count: int, tag: str) -> asyncio.Task[None]:
    async def run() -> None:
        async with httpx.AsyncClient(
            base_url=server.http_url + "/v1",
            headers={"Authorization": f"Bearer {server.secret}"},
            timeout=10,
        ) as http:
            for i in range(count):
                r = await http.post(
                    f"/apps/{server.app}/publish",
                    json={"sender": "backend", "to": "channel:room", "id": f"{tag}-{i}",
                          "text": f"{tag} {i}"},
                )  # fmt: skip
                assert r.status_code == 200, r.text
                await asyncio.sleep(0.01)

    return asyncio.create_task(run())


def _check_exactly_once(got: dict[str, list[Message]], tag: str, count: int) -> None:
    for user, messages in got.items():
        bodies = [m.body.decode() for m in messages if m.sender == "backend"]
        assert bodies == [f"{tag} {i}" for i in range(count)], f"{user}: lost/dup/reordered"
        positions = [m.pos for m in messages]
        assert positions == sorted(set(positions)), f"{user}: positions out of order"


async def test_a_drained_node_empties_and_its_clients_resume_on_the_nearest_sibling(
    make_server: Callable[..., Any], pg_url: str, nats_url: str
) -> None:
    eu1 = make_server(_config(pg_url, nats_url, "eu-1", "eu-west", True), name="eu1")
    eu2 = make_server(_config(pg_url, nats_url, "eu-2", "eu-west", False), name="eu2")
    us1 = make_server(_config(pg_url, nats_url, "us-1", "us-east", False), name="us1")
    eu1.add_members(USERS)
    ops = {"Authorization": f"Bearer {OPERATOR}"}
    await _until(lambda: len(httpx.get(eu1.http_url + "/v1/nodes", headers=ops).json()) == 3)

    got: dict[str, list[Message]] = {u: [] for u in USERS}
    clients: list[Client] = []
    # The application names one node; the directory puts it in order for eu-west.
    for user in USERS:
        clients.append(
            await relaydesk.connect(
                eu1.ws_url,
                eu1.token(user),
                device=f"{user}-phone",
                region="eu-west",
                directory=eu1.http_url,
                reconnect=FAST,
            )
        )
    readers = [asyncio.create_task(_collect(c, got[c.user])) for c in clients]
    try:
        candidates = clients[0].endpoints.candidates
        assert set(candidates[:2]) == {eu1.ws_url, eu2.ws_url}  # same region first
        assert candidates[-1] == us1.ws_url  # the far region last
        by_url = {eu1.ws_url: ("eu-1", eu1), eu2.ws_url: ("eu-2", eu2)}
        # Drain the node the directory sent the first client to.
        name, busy = by_url[clients[0].node_url]
        other = eu2 if busy is eu1 else eu1
        assert httpx.get(busy.http_url + "/readyz").json()["connections"] > 0

        publisher = _publisher(us1, 300, "m")
        await _until(lambda: all(len(v) > 30 for v in got.values()))
        started = time.monotonic()
        r = httpx.post(us1.http_url + f"/v1/nodes/{name}/drain", json={"reason": "t"}, headers=ops)
        assert r.status_code == 200, r.text
        await _until(lambda: httpx.get(busy.http_url + "/readyz").json()["connections"] == 0)
        drained_in = time.monotonic() - started
        # One heartbeat to see the flag, then 1,000 connections a second.
        assert drained_in < 5.0, drained_in
        # Everyone is on the other eu-west node, the nearest eligible one.
        await _until(lambda: all(c.node_url == other.ws_url for c in clients))
        await asyncio.wait_for(publisher, 60)
        await _until(lambda: all(len(v) >= 300 for v in got.values()), timeout=30)
        await asyncio.sleep(0.5)  # a duplicate would arrive now
        _check_exactly_once(got, "m", 300)
        # A new login on the drained node is moved at once, with where to go.
        late = await relaydesk.connect(
            [busy.ws_url, other.ws_url], eu1.token("late"), device="late-1", reconnect=FAST
        )
        assert late.node_url == other.ws_url
        assert late.endpoints.avoided == (busy.ws_url,)
        await late.aclose()
        # Undrained, the directory lists it again.
        httpx.post(us1.http_url + f"/v1/nodes/{name}/undrain", headers=ops)
        await asyncio.sleep(1.0)  # the node reads its flag on its next heartbeat
        edges = httpx.get(
            eu2.http_url + f"/v1/apps/{eu2.app}/edges",
            params={"region": "eu-west"},
            headers={"Authorization": f"Bearer {eu2.secret}"},
        ).json()
        assert {e["node"] for e in edges["edges"]} == {"eu-1", "eu-2", "us-1"}
    finally:
        for reader in readers:
            reader.cancel()
        for c in clients:
            await c.aclose()


async def test_clients_move_to_the_next_node_when_theirs_is_killed(
    make_server: Callable[..., Any], pg_url: str, nats_url: str
) -> None:
    a = make_server(_config(pg_url, nats_url, "eu-1", "eu-west", True), name="a")
    b = make_server(_config(pg_url, nats_url, "eu-2", "eu-west", False), name="b")
    a.add_members(USERS[:3])
    got: dict[str, list[Message]] = {u: [] for u in USERS[:3]}
    clients = [
        await relaydesk.connect(
            [a.ws_url, b.ws_url], a.token(u), device=f"{u}-phone", reconnect=FAST
        )
        for u in USERS[:3]
    ]
    readers = [asyncio.create_task(_collect(c, got[c.user])) for c in clients]
    try:
        assert all(c.node_url == a.ws_url for c in clients)
        publisher = _publisher(b, 300, "k")
        await _until(lambda: all(len(v) > 50 for v in got.values()))
        await asyncio.to_thread(a.kill)
        await _until(lambda: all(c.node_url == b.ws_url for c in clients))
        await asyncio.wait_for(publisher, 60)
        await _until(lambda: all(len(v) >= 300 for v in got.values()), timeout=30)
        await asyncio.sleep(0.5)
        _check_exactly_once(got, "k", 300)
        # The working fallback is remembered: a reconnect goes straight to b.
        assert all(c.endpoints.remembered == b.ws_url for c in clients)
    finally:
        for reader in readers:
            reader.cancel()
        for c in clients:
            await c.aclose()

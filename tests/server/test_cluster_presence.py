"""Presence across nodes: the remote table (pure) and two hubs joined by a bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_cluster_hubs import Endpoint, make_cluster, until

from relaydesk.server.cluster import MemoryBroker, Online, PresenceRecord, RemotePresence
from relaydesk.server.routing.hub import Hub

APP = "demo"


def rec(node: str, *entries: tuple[str, int], epoch: str = "e1", **kw: object) -> PresenceRecord:
    return PresenceRecord(
        node, epoch, tuple(Online(APP, u, n, 1000 if n else 0) for u, n in entries), **kw
    )  # type: ignore[arg-type]


def test_changes_and_full_lists_from_other_nodes() -> None:
    table = RemotePresence("a", expiry_s=3.0)
    assert table.apply(rec("a", ("alice", 1)), 0.0) == {}  # our own echo
    assert table.apply(rec("b", ("alice", 2)), 0.0) == {(APP, "alice"): 0}
    assert table.apply(rec("c", ("alice", 1)), 0.0) == {(APP, "alice"): 2}
    assert table.devices((APP, "alice")) == (3, 1000)
    assert table.apply(rec("b", ("alice", 2)), 0.5) == {}  # no change, no report
    # b's full list no longer has alice but has bob.
    assert table.apply(rec("b", ("bob", 1), full=True), 1.0) == {
        (APP, "alice"): 3,
        (APP, "bob"): 0,
    }
    assert table.devices((APP, "alice")) == (1, 1000)
    assert table.apply(rec("c", ("alice", 0)), 1.0) == {(APP, "alice"): 1}
    assert table.devices((APP, "alice")) == (0, 0)


def test_a_list_in_parts_applies_only_when_complete() -> None:
    table = RemotePresence("a", expiry_s=3.0)
    table.apply(rec("b", ("alice", 1), ("bob", 1)), 0.0)
    assert table.apply(rec("b", ("alice", 1), full=True, part=0, parts=2), 1.0) == {}
    assert table.devices((APP, "bob"))[0] == 1  # not dropped between parts
    assert table.apply(rec("b", ("carol", 1), full=True, part=1, parts=2), 1.0) == {
        (APP, "bob"): 1,
        (APP, "carol"): 0,
    }
    # A list whose first part was lost is ignored, not half-applied.
    assert table.apply(rec("b", ("dave", 1), full=True, part=1, parts=2), 2.0) == {}
    assert table.devices((APP, "alice"))[0] == 1 and table.devices((APP, "dave"))[0] == 0


def test_a_restarted_node_and_a_silent_node_are_forgotten() -> None:
    table = RemotePresence("a", expiry_s=3.0)
    table.apply(rec("b", ("alice", 1)), 0.0)
    table.apply(rec("c", ("bob", 1)), 0.0)
    # b restarted (new epoch) and has nobody now.
    assert table.apply(rec("b", epoch="e2", full=True), 1.0) == {(APP, "alice"): 1}
    assert table.expire(2.5) == {}
    assert table.expire(3.5) == {(APP, "bob"): 1}  # c silent for more than 3 s
    assert table.nodes == ["b"]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Hub, Hub, MemoryBroker]]:
    async with make_cluster(tmp_path, presence_interval_ms=100) as hubs:
        yield hubs


def states(ep: Endpoint, user: str) -> list[bool]:
    return [c.online for c in ep.presence if c.user == user]


async def test_presence_is_cluster_wide(cluster: tuple[Hub, Hub, MemoryBroker]) -> None:
    a, b, _ = cluster
    await a.ensure_channel(APP, "room", ["alice", "bob"])
    bob = Endpoint("bob")
    await b.attach(bob)
    phone, laptop = Endpoint("alice", "phone"), Endpoint("alice", "laptop")
    await a.attach(phone)
    await until(lambda: states(bob, "alice") == [True])
    [seen] = b.presence(APP, ["alice"])
    assert seen.online and seen.devices == 1 and seen.since > 0
    await b.attach(laptop)  # a second device, on the other node: no new announcement
    await a.detach(phone)
    await until(lambda: a.presence(APP, ["alice"])[0].devices == 1)
    assert states(bob, "alice") == [True]
    await b.detach(laptop)
    await until(lambda: states(bob, "alice") == [True, False])
    assert not b.presence(APP, ["alice"])[0].online
    # And from b's side: alice on a sees bob come and go.
    await a.attach(phone)
    await b.detach(bob)
    await until(lambda: states(phone, "bob")[-1:] == [False])
    assert not a.presence(APP, ["bob"])[0].online


async def test_users_of_a_crashed_node_go_offline(
    cluster: tuple[Hub, Hub, MemoryBroker],
) -> None:
    a, b, _ = cluster
    await a.ensure_channel(APP, "room", ["alice", "bob"])
    bob = Endpoint("bob")
    await b.attach(bob)
    await a.attach(Endpoint("alice"))
    await until(lambda: states(bob, "alice") == [True])
    await a.aclose()  # no detach, no goodbye: a node that died
    await until(lambda: states(bob, "alice") == [True, False], timeout=3)
    await asyncio.sleep(0)

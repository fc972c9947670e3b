"""Two hubs of one cluster: every commit reaches every node's connections, in order.

Unit test of the cluster path of ``Hub``: two hubs in one process on one SQLite
database (the counter row serialises their commits as PostgreSQL's row lock does
between machines), joined by a ``MemoryBus``.  The real deployment (PostgreSQL and
NATS, separate processes) is covered by tests/integration/test_cluster_nodes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from relaydesk.clock import SystemClock, millis
from relaydesk.config import load_settings
from relaydesk.protocol.addresses import resolve
from relaydesk.protocol.frames import Event, PresenceChange
from relaydesk.server.cluster import MemoryBroker, MemoryBus
from relaydesk.server.routing.fanout import Run
from relaydesk.server.routing.hub import Hub
from relaydesk.server.storage_setup import DEMO_APP, open_messaging_storage
from relaydesk.storage.messages import PublishOp

APP = DEMO_APP


class Endpoint:
    """What a gateway connection is to the hub: it records every offer."""

    def __init__(self, user: str, device: str = "d1") -> None:
        self.app, self.user, self.device = APP, user, device
        self.events: list[Event] = []
        self.presence: list[PresenceChange] = []

    def offer_run(self, run: Run) -> None:
        self.events.extend(run.events)

    def push_presence(self, change: PresenceChange) -> None:
        self.presence.append(change)

    def bodies(self) -> list[bytes]:
        return [e.body for e in self.events if e.kind == "msg"]


@contextlib.asynccontextmanager
async def make_cluster(
    tmp_path: Path, **cluster: int
) -> AsyncIterator[tuple[Hub, Hub, MemoryBroker]]:
    """Two started hubs, ``a`` and ``b``, on one SQLite file, joined by a MemoryBus."""
    broker = MemoryBroker()
    hubs = []
    for node in ("a", "b"):
        settings = load_settings(
            None,
            {
                "server": {"data_dir": str(tmp_path), "node_id": node},
                "cluster": {"gap_timeout_ms": 50, "sync_interval_ms": 100, **cluster},
                "demo": True,
            },
            {},
        )
        clock = SystemClock()
        db, store = open_messaging_storage(settings, clock)
        hub = Hub(db, store, settings, clock, bus=MemoryBus(broker))
        await hub.start()
        hubs.append(hub)
    try:
        yield hubs[0], hubs[1], broker
    finally:
        for hub in hubs:
            await hub.aclose()
            await hub.db.aclose()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Hub, Hub, MemoryBroker]]:
    async with make_cluster(tmp_path) as hubs:
        yield hubs


async def publish(hub: Hub, sender: str, to: str, body: str, msg_id: str) -> int:
    op = PublishOp(
        app=APP,
        sender=sender,
        device="d1",
        conv=resolve(to, sender),
        client_id=msg_id,
        body=body.encode(),
        enc="",
        ts=millis(hub.clock),
    )
    outcome = await hub.apply(op)
    assert outcome.error is None and outcome.event is not None
    return outcome.event.pos


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def in_order_once(endpoint: Endpoint) -> None:
    pos = [e.pos for e in endpoint.events]
    assert pos == sorted(set(pos)), "offers must be in position order, each once"


async def test_commits_of_both_nodes_reach_every_node_in_order(
    cluster: tuple[Hub, Hub, MemoryBroker],
) -> None:
    a, b, _ = cluster
    await a.ensure_channel(APP, "room", ["alice", "bob", "carol"])
    alice, bob, carol_a, carol_b = (
        Endpoint("alice"),
        Endpoint("bob"),
        Endpoint("carol"),
        Endpoint("carol", "d2"),
    )
    for hub, ep in ((a, alice), (b, bob), (a, carol_a), (b, carol_b)):
        await hub.attach(ep)

    async def stream(hub: Hub, sender: str, n: int) -> None:
        for i in range(n):
            await publish(hub, sender, "channel:room", f"{sender}-{i}", f"{sender}-{i}")

    await asyncio.gather(stream(a, "alice", 150), stream(b, "bob", 150))
    # Direct messages across nodes too.
    await publish(a, "alice", "user:bob", "dm-1", "dm-1")
    want = 301
    for ep in (alice, bob):
        await until(lambda ep=ep: len(ep.bodies()) == want)  # type: ignore[misc]
    for ep in (carol_a, carol_b):
        await until(lambda ep=ep: len(ep.bodies()) == want - 1)  # type: ignore[misc]
    for ep in (alice, bob, carol_a, carol_b):
        in_order_once(ep)
        for sender in ("alice", "bob"):  # per-conversation order as sent
            mine = [x for x in ep.bodies() if x.startswith(sender.encode() + b"-")]
            assert mine == [f"{sender}-{i}".encode() for i in range(150)]
    assert a.fanned_pos(APP) == b.fanned_pos(APP)
    assert a.cluster_stats["remote_events"] > 0 and b.cluster_stats["remote_events"] > 0


async def test_membership_changed_on_one_node_routes_on_the_other(
    cluster: tuple[Hub, Hub, MemoryBroker],
) -> None:
    a, b, _ = cluster
    await a.ensure_channel(APP, "room", ["alice"])
    await publish(a, "alice", "channel:room", "warm", "w")  # a caches the membership
    dave = Endpoint("dave")
    await a.attach(dave)
    await b.add_member(APP, "room", "dave")  # joined through the other node
    await publish(a, "alice", "channel:room", "hello dave", "h")
    await until(lambda: b"hello dave" in dave.bodies())
    assert b"warm" not in dave.bodies()  # before his join
    in_order_once(dave)


async def test_a_lost_announcement_is_read_from_storage(
    cluster: tuple[Hub, Hub, MemoryBroker],
) -> None:
    a, b, broker = cluster
    await a.ensure_channel(APP, "room", ["alice", "bob"])
    bob = Endpoint("bob")
    await b.attach(bob)
    broker.dropping = True  # the bus loses everything from now on
    for i in range(20):
        await publish(a, "alice", "channel:room", f"m{i}", f"m{i}")
    await until(lambda: len(bob.bodies()) == 20, timeout=5)
    in_order_once(bob)
    assert b.cluster_stats["gap_fills"] >= 1
    assert b.cluster_stats["filled_events"] >= 20
    broker.dropping = False
    # And with the bus back, announcements flow again (and fills stop).
    fills = b.cluster_stats["gap_fills"]
    await publish(a, "alice", "channel:room", "back", "back")
    await until(lambda: b"back" in bob.bodies())
    assert b.cluster_stats["gap_fills"] == fills


async def test_malformed_bus_messages_are_counted_and_dropped(
    cluster: tuple[Hub, Hub, MemoryBroker],
) -> None:
    a, b, broker = cluster
    for handler in list(broker.handlers):
        handler(b"\x93garbage")
    assert a.cluster_stats["bad_records"] == 1 and b.cluster_stats["bad_records"] == 1
    await a.ensure_channel(APP, "room", ["alice", "bob"])
    bob = Endpoint("bob")
    await b.attach(bob)
    await publish(a, "alice", "channel:room", "still fine", "ok")
    await until(lambda: bob.bodies() == [b"still fine"])


async def test_own_commits_are_routed_by_the_writer_and_wait_behind_a_lost_one(
    tmp_path: Path,
) -> None:
    """A node routes its own commit at once when it is next in its app; one committed
    after another node's commit that never arrived waits for that range, read from
    storage, and both reach connections in position order."""
    # No idle counter reads: b learns of the lost commit from its own next record only.
    async with make_cluster(tmp_path, sync_interval_ms=60_000) as (a, b, broker):
        await _own_commits_scenario(a, b, broker)


async def _own_commits_scenario(a: Hub, b: Hub, broker: MemoryBroker) -> None:
    await a.ensure_channel(APP, "room", ["alice", "bob"])
    bob = Endpoint("bob")
    await b.attach(bob)
    await until(lambda: b.fanned_pos(APP) == a.fanned_pos(APP))  # the joins, from a
    first = await publish(b, "bob", "channel:room", "first", "f")
    await until(lambda: b.cluster_stats["own_routed_inline"] == 1)
    await until(lambda: a.fanned_pos(APP) == b.fanned_pos(APP) == first)
    broker.dropping = True  # a's next announcement is lost
    await publish(a, "alice", "channel:room", "lost", "l")
    await until(lambda: a.fanned_pos(APP) == first + 1)
    broker.dropping = False
    # b is behind by a's commit: its own commit waits for the range, read from storage.
    await publish(b, "bob", "channel:room", "after", "a")
    await until(lambda: len(bob.bodies()) == 3)
    assert bob.bodies() == [b"first", b"lost", b"after"]
    in_order_once(bob)
    assert b.cluster_stats["own_routed_inline"] == 1
    assert b.cluster_stats["gap_fills"] >= 1

"""Leader election by a lease row, on SQLite and PostgreSQL, with a fake clock: one
leader at a time, takeover after expiry, self-fencing, release on shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import ENGINES, open_test_database
from relaydesk.clock import FakeClock
from relaydesk.server.cluster.lease import LeaderLease
from relaydesk.storage.engine import Database

TTL = 15.0


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as database:
        yield database


class Node:
    def __init__(self, db: Database, clock: FakeClock, name: str) -> None:
        self.events: list[tuple[bool, int]] = []

        async def on_change(leader: bool, epoch: int) -> None:
            self.events.append((leader, epoch))

        self.lease = LeaderLease(db, clock, holder=name, ttl_s=TTL, on_change=on_change)


async def test_one_leader_then_takeover_after_the_leader_dies(db: Database) -> None:
    clock = FakeClock(1_000.0)
    a, b = Node(db, clock, "node-a"), Node(db, clock, "node-b")
    assert await a.lease.step() and not await b.lease.step()
    for _ in range(5):  # a renews every ttl/3; b keeps trying and losing
        clock.advance(TTL / 3)
        assert await a.lease.step() and not await b.lease.step()
    # a dies (stops renewing): b takes over once the lease expired, not before.
    clock.advance(TTL - 0.1)
    assert not await b.lease.step()
    clock.advance(0.2)
    assert await b.lease.step()
    assert a.events == [(True, 1)] and b.events == [(True, 2)]
    # a comes back (a paused process): its renewal fails and it steps down.
    assert not await a.lease.step()
    assert a.events[-1] == (False, 1) and b.lease.is_leader


async def test_a_leader_that_cannot_renew_steps_down_before_anyone_takes_over(
    db: Database,
) -> None:
    clock = FakeClock(1_000.0)
    a, b = Node(db, clock, "node-a"), Node(db, clock, "node-b")
    assert await a.lease.step()
    started = clock.time()

    async def broken() -> bool:
        raise OSError("database unreachable")

    a.lease.step = broken  # type: ignore[method-assign]
    stepped_down_at = None
    while clock.time() < started + 2 * TTL:
        clock.advance(1.0)
        await a.lease._guarded_step()
        if stepped_down_at is None and not a.lease.is_leader:
            stepped_down_at = clock.time()
        if await b.lease.step():
            assert stepped_down_at is not None  # never two leaders
            assert clock.time() >= started + TTL
            break
    assert stepped_down_at is not None and stepped_down_at <= started + TTL - TTL / 3
    assert b.lease.is_leader


async def test_the_fence_closes_before_the_lease_can_expire(db: Database) -> None:
    clock = FakeClock(1_000.0)
    a = Node(db, clock, "node-a")
    assert await a.lease.step() and a.lease.holds()
    clock.advance(TTL * 2 / 3 - 0.5)
    assert a.lease.holds()
    clock.advance(1.0)  # e.g. the process was paused: jobs must not act on stale rights
    assert a.lease.is_leader and not a.lease.holds()


async def test_release_on_shutdown_and_restart_under_the_same_id(db: Database) -> None:
    clock = FakeClock(1_000.0)
    a, b = Node(db, clock, "node-a"), Node(db, clock, "node-b")
    await a.lease.start()
    assert a.lease.is_leader
    await a.lease.aclose()  # a clean shutdown hands over at once
    assert a.events == [(True, 1), (False, 1)]
    assert await b.lease.step() and b.lease.epoch == 2
    # b is killed and restarts under the same node id: it takes its lease back at once.
    b2 = Node(db, clock, "node-b")
    assert await b2.lease.step() and b2.lease.epoch == 3
    assert not await b.lease.step()  # the old process's epoch is fenced off

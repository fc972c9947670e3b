"""The hub's recent events (server/routing/recent.py) answer catch-up reads exactly as
storage does (``MessageStore.feed_tx``), on both engines, through joins, leaves,
rejoins, read markers, deletions, direct messages, two apps, eviction and refills."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import ENGINES, open_test_database
from relaydesk.protocol.addresses import Conversation, channel_conversation, resolve
from relaydesk.protocol.frames import Event
from relaydesk.server.routing.recent import RecentEvents
from relaydesk.storage import Database
from relaydesk.storage.messages import (
    DeleteOp,
    JoinOp,
    LeaveOp,
    MessageStore,
    Op,
    PublishOp,
    ReadOp,
    messaging_migrations,
)

STORE = MessageStore(retention_max_age_ms=10**12, retention_max_per_conv=10**9)
APPS = ("app1", "app2")
USERS = [f"u{i}" for i in range(5)]
CHANNELS = ["c0", "c1", "c2"]


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as database:
        database.migrate("messaging", messaging_migrations(database.dialect))
        yield database


def random_op(rng: random.Random, n: int, sent: list[tuple[str, str, Conversation, int]]) -> Op:
    app = rng.choice(APPS)
    user = rng.choice(USERS)
    channel = rng.choice(CHANNELS)
    kind = rng.random()
    if kind < 0.15:
        return JoinOp(app, user, "d", channel_conversation(channel), user, "member", "admin", n)
    if kind < 0.22:
        return LeaveOp(app, user, "d", channel_conversation(channel), n)
    if kind < 0.3:
        conv = resolve(f"channel:{channel}", user)
        return ReadOp(app, user, "d", conv, rng.randint(0, 5), n)
    if kind < 0.35 and sent:
        s_app, sender, conv, seq = rng.choice(sent)
        return DeleteOp(s_app, sender, "d", conv, seq, n)
    to = f"user:{rng.choice(USERS)}" if rng.random() < 0.3 else f"channel:{channel}"
    body = rng.randbytes(rng.randint(0, 40))
    return PublishOp(app, user, "d", resolve(to, user), f"m{n}", body, "", n)


def build(db: Database, rng: random.Random, ops: int, recent: RecentEvents) -> dict[str, int]:
    """Commit ``ops`` random operations in random batches; hold every event as the hub
    does (in position order, as routed).  Returns each app's last position."""
    sent: list[tuple[str, str, Conversation, int]] = []
    n = 0
    last: dict[str, int] = {}
    while n < ops:
        batch = [random_op(rng, n + i, sent) for i in range(rng.randint(1, 12))]
        n += len(batch)
        result = db.write_sync(lambda tx, b=batch: STORE.commit_batch_tx(tx, b, ()))
        for op, outcome in zip(batch, result.outcomes, strict=True):
            ev = outcome.event
            if ev is None or outcome.duplicate:
                continue
            recent.add(op.app, outcome.audience, ev, {})
            if isinstance(op, PublishOp):
                sent.append((op.app, op.sender, op.conv, ev.seq))
        last.update(result.last_pos)
    return last


def storage_feed(
    db: Database, app: str, user: str, after: int, upto: int, limit: int
) -> list[Event]:
    return db.read_sync(lambda tx: STORE.feed_tx(tx, app, user, after, upto, limit))


def memory_feed(
    db: Database, recent: RecentEvents, app: str, user: str, after: int, upto: int, limit: int
) -> list[Event]:
    windows = db.read_sync(lambda tx: STORE.memberships_tx(tx, app, user))
    return [ev for ev, _ in recent.feed(app, user, windows, after, upto, limit)]


@pytest.mark.parametrize("seed", range(4))
def test_memory_answers_like_storage(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    recent = RecentEvents(10**6, 10**9)
    last = build(db, rng, 400, recent)
    assert min(last.values()) > 100 and all(recent.floor(app) == 0 for app in APPS)
    checked = 0
    for _ in range(150):
        app, user = rng.choice(APPS), rng.choice(USERS)
        after = rng.randint(0, last[app])
        upto = rng.randint(after, last[app])
        limit = rng.choice([1, 5, 50, 1000])
        want = storage_feed(db, app, user, after, upto, limit)
        assert memory_feed(db, recent, app, user, after, upto, limit) == want
        checked += len(want)
    assert checked > 200  # the comparison saw real feeds, not empty pages


def test_eviction_raises_the_floor_and_what_is_held_stays_exact(db: Database) -> None:
    rng = random.Random(7)
    recent = RecentEvents(120, 10**9)
    last = build(db, rng, 500, recent)
    assert len(recent) == 120
    for app in APPS:
        floor = recent.floor(app)
        assert floor > 0 and recent.last(app) == last[app]
        assert not recent.covers(app, floor - 1) and recent.covers(app, floor)
        for user in USERS:
            want = storage_feed(db, app, user, floor, last[app], 1000)
            assert memory_feed(db, recent, app, user, floor, last[app], 1000) == want


def test_warm_start_from_the_newest_stored_events(db: Database) -> None:
    """What the hub loads when it starts answers like storage above its floor."""
    last = build(db, random.Random(9), 300, RecentEvents(10**6, 10**9))
    loaded = {
        app: db.read_sync(lambda tx, app=app: STORE.newest_events_tx(tx, app, last[app], 80))
        for app in APPS
    }
    warm = RecentEvents(10**6, 10**9, {app: rows[0][1].pos - 1 for app, rows in loaded.items()})
    for app, rows in loaded.items():
        assert len(rows) == 80 and [r[1].pos for r in rows] == sorted(r[1].pos for r in rows)
        assert rows[-1][1].pos == last[app]
        for audience, ev in rows:
            warm.add(app, audience, ev, {})
    for app in APPS:
        floor = warm.floor(app)
        for user in USERS:
            want = storage_feed(db, app, user, floor, last[app], 1000)
            assert memory_feed(db, warm, app, user, floor, last[app], 1000) == want


def test_byte_bound_evicts_oldest_first() -> None:
    recent = RecentEvents(1000, 3 * (100 + 320))
    for pos in range(1, 6):
        recent.add(
            "a",
            None,
            Event(conv="ch:r", pos=pos, seq=pos, kind="msg", sender="x", body=b"b" * 100),
            {},
        )
    assert len(recent) == 3 and recent.floor("a") == 2 and recent.floor("b") == 0
    out = recent.feed("a", "x", [("ch:r", 0, None)], 2, 5, 10)
    assert [ev.pos for ev, _ in out] == [3, 4, 5]

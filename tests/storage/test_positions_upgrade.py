"""Schema step 2 of messaging: a database written with one global position counter
upgrades to per-app counters without changing what any stored position means."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import ENGINES, open_test_database
from relaydesk.protocol.addresses import channel_conversation, resolve
from relaydesk.storage import Database, Tx
from relaydesk.storage.messages import (
    JoinOp,
    MessageStore,
    Op,
    Outcome,
    PublishOp,
    _digest,
    messaging_migrations,
)

STORE = MessageStore(retention_max_age_ms=10**12, retention_max_per_conv=10**9)


@pytest.fixture(params=ENGINES)
def old_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database at messaging version 1 (one global counter), with data in it."""
    with open_test_database(request.param, tmp_path) as database:
        database.migrate("messaging", messaging_migrations(database.dialect)[:1])
        database.write_sync(_write_version_1)
        yield database


def _write_version_1(t: Tx) -> None:
    """What the version-1 code stored: appa and appb interleaved on one counter, a
    membership window, device cursors (appc's events were all swept by retention)."""
    for app in ("appa", "appb", "appc"):
        t.execute("INSERT INTO apps (id, secret, created_ms) VALUES (?, 's', 0)", (app,))
    t.execute(  # (PostgreSQL seeded the row at version 1, SQLite did not)
        "INSERT INTO counters (name, value) VALUES ('pos', 7)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
    )
    t.execute(
        "INSERT INTO conversations (app, id, kind, last_seq, public, created_ms)"
        " VALUES ('appa', 'dm:alice:bob', 'dm', 3, 0, 0), ('appb', 'ch:room', 'ch', 1, 0, 0)"
    )
    t.execute(
        "INSERT INTO members (app, conv, user_id, role, joined_pos, left_pos) VALUES"
        " ('appa', 'dm:alice:bob', 'alice', 'member', 0, NULL),"
        " ('appa', 'dm:alice:bob', 'bob', 'member', 0, NULL),"
        " ('appb', 'ch:room', 'dave', 'owner', 2, NULL)"
    )
    rows = [  # pos, app, conv, seq, kind, sender, client id
        (1, "appa", "dm:alice:bob", 1, "msg", "alice", "a1"),
        (2, "appb", "ch:room", 0, "join", "dave", None),
        (3, "appa", "dm:alice:bob", 2, "msg", "alice", "a2"),
        (4, "appb", "ch:room", 1, "msg", "dave", "b1"),
        (5, "appa", "dm:alice:bob", 3, "msg", "bob", "a3"),
    ]
    t.executemany(
        "INSERT INTO events (pos, app, conv, seq, kind, audience, sender, device, client_id,"
        " digest, ts, body, enc, subject, role) VALUES (?, ?, ?, ?, ?, NULL, ?, 'd', ?, ?, 1,"
        " ?, '', ?, ?)",
        [
            (
                pos,
                app,
                conv,
                seq,
                kind,
                sender,
                cid,
                _digest(cid.encode(), conv) if cid else None,
                (cid or "").encode(),
                sender if kind == "join" else "",
                "owner" if kind == "join" else "",
            )
            for pos, app, conv, seq, kind, sender, cid in rows
        ],
    )
    t.execute(
        "INSERT INTO devices (app, user_id, device, cursor, seen_ms) VALUES"
        " ('appa', 'bob', 'phone', 3, 0), ('appc', 'erin', 'tablet', 6, 0)"
    )


def commit(db: Database, *ops: Op) -> list[Outcome]:
    return db.write_sync(lambda tx: STORE.commit_batch_tx(tx, ops, ())).outcomes


def pub(app: str, sender: str, to: str, cid: str) -> PublishOp:
    conv = resolve(to, sender)
    return PublishOp(app, sender, "d", conv, cid, cid.encode(), "", 9)


def test_an_old_database_upgrades_to_per_app_positions(old_db: Database) -> None:
    db = old_db
    assert db.migrate("messaging", messaging_migrations(db.dialect)) == 2
    # Every app known before continues from the old counter: no cursor, window or
    # stored position changes meaning.
    assert db.read_sync(STORE.last_positions_tx) == {"appa": 7, "appb": 7, "appc": 7}
    feed = db.read_sync(lambda tx: STORE.feed_tx(tx, "appa", "bob", 0, 7, 100))
    assert [(e.pos, e.id) for e in feed] == [(1, "a1"), (3, "a2"), (5, "a3")]
    after_cursor = db.read_sync(lambda tx: STORE.feed_tx(tx, "appa", "bob", 3, 7, 100))
    assert [e.pos for e in after_cursor] == [5]
    assert db.read_sync(lambda tx: STORE.device_cursor_tx(tx, "appa", "bob", "phone")) == 3
    room = db.read_sync(lambda tx: STORE.feed_tx(tx, "appb", "dave", 0, 7, 100))
    assert [(e.pos, e.kind) for e in room] == [(2, "join"), (4, "msg")]
    # From now on each app counts on its own; an app that is new starts at 1.
    out = commit(
        db,
        pub("appa", "alice", "user:bob", "a4"),
        pub("appb", "dave", "channel:room", "b2"),
        pub("appa", "alice", "user:bob", "a5"),
        pub("appd", "frank", "user:gina", "d1"),
        pub("appa", "alice", "user:bob", "a1"),  # an id stored before the upgrade
        JoinOp("appb", "dave", "d", channel_conversation("room"), "hal", "member", "admin", 9),
    )
    got = [(o.event.pos, o.event.seq, o.duplicate) for o in out if o.event is not None]
    assert got == [
        (8, 4, False),
        (8, 2, False),
        (9, 5, False),
        (1, 1, False),
        (1, 1, True),
        (9, 0, False),
    ]
    assert db.read_sync(STORE.last_positions_tx) == {"appa": 9, "appb": 9, "appc": 7, "appd": 1}
    # The old counter is gone: a node still running the old code fails loudly.
    tables = db.read_sync(
        lambda tx: tx.query(
            "SELECT name FROM sqlite_master WHERE name = 'counters'"
            if tx.dialect == "sqlite"
            else "SELECT tablename FROM pg_tables WHERE tablename = 'counters'"
            " AND schemaname = current_schema()"
        )
    )
    assert tables == []
    assert db.migrate("messaging", messaging_migrations(db.dialect)) == 2

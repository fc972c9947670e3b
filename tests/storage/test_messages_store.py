"""The messaging store against a real SQLite file: the group-commit body and reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relaydesk.protocol.addresses import channel_conversation, resolve
from relaydesk.protocol.errors import ErrorCode
from relaydesk.storage import Database, open_database
from relaydesk.storage.messages import (
    MIGRATIONS,
    DeleteOp,
    JoinOp,
    LeaveOp,
    MessageStore,
    Op,
    Outcome,
    PublishOp,
    ReadOp,
)

APP = "app1"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    database.migrate("messaging", MIGRATIONS)
    yield database
    database.close_sync()


STORE = MessageStore(retention_max_age_ms=1000, retention_max_per_conv=3)


def commit(db: Database, *ops: Op) -> list[Outcome]:
    return db.write_sync(lambda tx: STORE.commit_batch_tx(tx, ops, ())).outcomes


def pub(sender: str, to: str, cid: str, body: bytes = b"x", ts: int = 10) -> PublishOp:
    return PublishOp(
        app=APP,
        sender=sender,
        device=f"{sender}-d",
        conv=resolve(to, sender),
        client_id=cid,
        body=body,
        enc="",
        ts=ts,
    )


def join(
    user: str, channel: str, via: str = "grant", actor: str | None = None, role: str = "member"
) -> JoinOp:
    return JoinOp(
        app=APP,
        actor=actor or user,
        device="d",
        channel=channel_conversation(channel),
        user=user,
        role=role,
        via=via,
        ts=1,
    )


def test_migrate_is_idempotent(db: Database) -> None:
    assert db.migrate("messaging", MIGRATIONS) == 1


def test_positions_and_sequences_in_one_batch(db: Database) -> None:
    out = commit(
        db,
        pub("alice", "user:bob", "1"),
        pub("bob", "user:alice", "2"),
        join("alice", "room", role="owner"),
        pub("alice", "channel:room", "3"),
    )
    assert [(o.event.pos, o.event.seq, o.event.kind) for o in out if o.event] == [
        (1, 1, "msg"),
        (2, 2, "msg"),
        (3, 0, "join"),
        (4, 1, "msg"),
    ]
    out = commit(db, pub("alice", "user:bob", "4"))
    assert (out[0].event.pos, out[0].event.seq) == (5, 3)  # type: ignore[union-attr]


def test_dedup_within_and_across_batches_and_mismatch(db: Database) -> None:
    a, b = commit(db, pub("alice", "user:bob", "m1"), pub("alice", "user:bob", "m1"))
    assert not a.duplicate and b.duplicate and a.event == b.event
    (c,) = commit(db, pub("alice", "user:bob", "m1"))
    assert c.duplicate and c.event == a.event
    (d,) = commit(db, pub("alice", "user:bob", "m1", body=b"other"))
    assert d.error is not None and d.error.code is ErrorCode.DUPLICATE_ID_MISMATCH
    (e,) = commit(db, pub("alice", "user:carol", "m1"))  # same id, other conversation
    assert e.error is not None and e.error.code is ErrorCode.DUPLICATE_ID_MISMATCH
    (f,) = commit(db, pub("bob", "user:alice", "m1"))  # ids are per sender
    assert f.event is not None and not f.duplicate


def test_channel_rules(db: Database) -> None:
    (denied,) = commit(db, pub("alice", "channel:room", "x"))
    assert denied.error is not None and denied.error.code is ErrorCode.FORBIDDEN
    (not_public,) = commit(db, join("bob", "room", via="public"))
    assert not_public.error is not None and not_public.error.code is ErrorCode.FORBIDDEN
    owner, invite_by_member = commit(
        db, join("alice", "room", role="owner"), join("carol", "room", via="invite", actor="dave")
    )
    assert owner.role == "owner"
    assert invite_by_member.error is not None
    (invited,) = commit(db, join("carol", "room", via="invite", actor="alice"))
    assert invited.event is not None and invited.event.subject == "carol"
    (again,) = commit(db, join("carol", "room"))
    assert again.event is None and again.role == "member"  # already a member: no event
    (left,) = commit(
        db, LeaveOp(app=APP, user="carol", device="d", channel=channel_conversation("room"), ts=1)
    )
    assert left.event is not None and left.event.kind == "leave"
    (gone,) = commit(db, pub("carol", "channel:room", "y"))
    assert gone.error is not None and gone.error.code is ErrorCode.FORBIDDEN
    # another app's channel of the same name is a different conversation
    other = JoinOp(
        app="app2",
        actor="x",
        device="d",
        channel=channel_conversation("room"),
        user="x",
        role="member",
        via="public",
        ts=1,
    )
    (cross,) = commit(db, other)
    assert cross.error is not None and cross.error.code is ErrorCode.FORBIDDEN


def test_dm_participants_only(db: Database) -> None:
    op = PublishOp(
        app=APP,
        sender="mallory",
        device="d",
        conv=resolve("dm:alice:bob", "x"),
        client_id="z",
        body=b"",
        enc="",
        ts=1,
    )
    (out,) = commit(db, op)
    assert out.error is not None and out.error.code is ErrorCode.FORBIDDEN


def test_feed_respects_membership_window_and_audience(db: Database) -> None:
    commit(db, join("alice", "room", role="owner"), pub("alice", "channel:room", "1"))
    commit(db, join("bob", "room"), pub("alice", "channel:room", "2"))
    commit(
        db,
        ReadOp(
            app=APP, user="alice", device="a", conv=resolve("channel:room", "alice"), seq=2, ts=1
        ),
    )
    commit(
        db,
        LeaveOp(app=APP, user="bob", device="d", channel=channel_conversation("room"), ts=1),
        pub("alice", "channel:room", "3"),
    )

    def feed(user: str) -> list[tuple[str, int]]:
        return [
            (e.kind, e.pos)
            for e in db.read_sync(lambda tx: STORE.feed_tx(tx, APP, user, 0, 10**9, 100))
        ]

    assert feed("bob") == [("join", 3), ("msg", 4), ("leave", 6)]
    assert feed("alice") == [
        ("join", 1),
        ("msg", 2),
        ("join", 3),
        ("msg", 4),
        ("read", 5),
        ("leave", 6),
        ("msg", 7),
    ]
    limited = db.read_sync(lambda tx: STORE.feed_tx(tx, APP, "alice", 2, 5, 2))
    assert [e.pos for e in limited] == [3, 4]


def test_history_paging(db: Database) -> None:
    commit(db, *[pub("alice", "user:bob", str(i)) for i in range(1, 8)])

    def page(before: int | None = None, after: int | None = None) -> tuple[list[int], bool]:
        items, more = db.read_sync(
            lambda tx: STORE.history_tx(tx, APP, "dm:alice:bob", before, after, 3)
        )
        return [e.seq for e in items], more

    assert page() == ([5, 6, 7], True)
    assert page(before=5) == ([2, 3, 4], True)
    assert page(before=2) == ([1], False)
    assert page(after=4) == ([5, 6, 7], False)
    assert page(after=0) == ([1, 2, 3], True)


def test_delete_only_by_sender(db: Database) -> None:
    commit(db, pub("alice", "user:bob", "1", body=b"secret"))
    conv = resolve("user:bob", "alice")
    (no,) = commit(db, DeleteOp(app=APP, user="bob", device="d", conv=conv, seq=1, ts=2))
    assert no.error is not None and no.error.code is ErrorCode.FORBIDDEN
    (missing,) = commit(db, DeleteOp(app=APP, user="alice", device="d", conv=conv, seq=9, ts=2))
    assert missing.error is not None and missing.error.code is ErrorCode.NOT_FOUND
    (ok,) = commit(db, DeleteOp(app=APP, user="alice", device="d", conv=conv, seq=1, ts=2))
    assert ok.event is not None and ok.event.kind == "del" and ok.event.seq == 1
    items, _ = db.read_sync(lambda tx: STORE.history_tx(tx, APP, conv.id, None, None, 10))
    assert items[0].body == b""


def test_cursors_never_move_back(db: Database) -> None:
    db.write_sync(lambda tx: STORE.save_cursors_tx(tx, [(APP, "u", "d", 10, 1)]))
    db.write_sync(lambda tx: STORE.save_cursors_tx(tx, [(APP, "u", "d", 5, 2)]))
    assert db.read_sync(lambda tx: STORE.device_cursor_tx(tx, APP, "u", "d")) == 10
    assert db.read_sync(lambda tx: STORE.device_cursor_tx(tx, APP, "u", "x")) is None


def test_retention_by_age_and_count_keeps_positions(db: Database) -> None:
    commit(db, *[pub("alice", "user:bob", str(i), ts=5000) for i in range(1, 6)])
    commit(db, pub("alice", "user:carol", "old", ts=1))
    removed = db.write_sync(lambda tx: STORE.sweep_tx(tx, now_ms=5500))
    assert removed == 1 + 2  # one too old, two over the per-conversation count of 3
    items, _ = db.read_sync(lambda tx: STORE.history_tx(tx, APP, "dm:alice:bob", None, None, 10))
    assert [e.seq for e in items] == [3, 4, 5]
    (nxt,) = commit(db, pub("alice", "user:bob", "new"))
    assert nxt.event is not None and nxt.event.pos == 7 and nxt.event.seq == 6


def test_member_snapshot_is_taken_before_the_batch(db: Database) -> None:
    commit(db, join("alice", "room", role="owner"))
    key = (APP, "ch:room")
    result = db.write_sync(
        lambda tx: STORE.commit_batch_tx(
            tx, [pub("alice", "channel:room", "before"), join("bob", "room")], [key]
        )
    )
    # bob joins after the message in the same batch: the snapshot must not list
    # him, or live fan-out would hand him a message his feed does not contain.
    assert result.members[key] == {"alice": "owner"}

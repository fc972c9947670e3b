"""Metadata, locks and presence state in the group commit, on SQLite and PostgreSQL
(storage/metadata.py, storage/locks.py, storage/presence_state.py): one batch holding
racing operations applies exactly one, and a refused one writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import ENGINES, open_test_database
from relaydesk.protocol.addresses import channel_conversation, resolve
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import MetaEntry
from relaydesk.storage import Database
from relaydesk.storage.locks import LOCK_MIGRATIONS, LockOp, list_locks_tx
from relaydesk.storage.messages import JoinOp, MessageStore, Op, Outcome, messaging_migrations
from relaydesk.storage.metadata import METADATA_MIGRATIONS, MetaOp, read_object_tx
from relaydesk.storage.presence_state import (
    PRESENCE_STATE_MIGRATIONS,
    StateOp,
    channel_states_tx,
)

APP = "app1"
ROOM = channel_conversation("room")
STORE = MessageStore(retention_max_age_ms=10**12, retention_max_per_conv=10**6)


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as database:
        database.migrate("messaging", messaging_migrations(database.dialect))
        database.migrate("metadata", METADATA_MIGRATIONS)
        database.migrate("locks", LOCK_MIGRATIONS)
        database.migrate("presence_state", PRESENCE_STATE_MIGRATIONS)
        yield database


def commit(db: Database, *ops: Op) -> list[Outcome]:
    return db.write_sync(lambda tx: STORE.commit_batch_tx(tx, ops, ())).outcomes


def join(user: str, role: str = "member") -> JoinOp:
    return JoinOp(
        app=APP, actor=user, device="d", channel=ROOM, user=user, role=role, via="grant", ts=1
    )


def meta(actor: str, value: str, major: int = -1, scope: str = "channel") -> MetaOp:
    target = "room" if scope == "channel" else actor
    conv = ROOM if scope == "channel" else resolve(f"user:{actor}", actor)
    return MetaOp(
        app=APP,
        actor=actor,
        device="d",
        conv=conv,
        scope=scope,
        target=target,
        op="set",
        items=(MetaEntry("k", value),),
        major=major,
        ts=5,
    )


def lock(actor: str, op: str, wait: bool = False) -> LockOp:
    return LockOp(app=APP, actor=actor, device="d", conv=ROOM, op=op, name="mic", ts=7, wait=wait)


def test_metadata_cas_in_one_batch_applies_exactly_one(db: Database) -> None:
    commit(db, join("o1", "owner"), join("o2", "owner"), join("m"))
    out = commit(db, meta("o1", "a", 0), meta("o2", "b", 0), meta("m", "c"), meta("o2", "d", 1))
    assert out[0].event is not None and out[0].event.seq == 1 and out[0].event.kind == "meta"
    assert out[1].error is not None and out[1].error.code is ErrorCode.REVISION_CONFLICT
    assert out[1].error.rev == 1
    assert out[2].error is not None and out[2].error.code is ErrorCode.FORBIDDEN  # not an owner
    assert out[3].event is not None and out[3].event.seq == 2
    major, items = db.read_sync(lambda tx: read_object_tx(tx, APP, "channel", "room"))
    assert (major, items["k"].value, items["k"].rev, items["k"].by) == (2, "d", 2, "o2")
    # User metadata goes to the user's own conversation, which the feed then holds.
    [own] = commit(db, meta("m", "mine", scope="user"))
    assert own.event is not None and own.event.conv == "dm:m:m"
    assert [e.kind for e in db.read_sync(lambda tx: STORE.feed_tx(tx, APP, "m", 0, 99, 99))][
        -1:
    ] == ["meta"]


def test_lock_race_in_one_batch_and_fair_hand_over(db: Database) -> None:
    commit(db, join("o", "owner"), join("a"), join("b"), join("c"))
    commit(db, lock("o", "set"))
    out = commit(db, lock("a", "acquire"), lock("b", "acquire"), lock("c", "acquire", wait=True))
    assert out[0].event is not None
    assert out[1].error is not None and out[1].error.code is ErrorCode.LOCK_HELD
    assert out[2].event is not None
    [state] = db.read_sync(lambda tx: list_locks_tx(tx, APP, "room"))
    assert (state.holder, state.waiters) == ("a", ("c",))
    [bad, good] = commit(db, lock("b", "release"), lock("a", "release"))
    assert bad.error is not None and bad.error.code is ErrorCode.LOCK_NOT_HELD
    assert good.event is not None
    [state] = db.read_sync(lambda tx: list_locks_tx(tx, APP, "room"))
    assert (state.holder, state.waiters) == ("c", ())


def test_presence_state_is_members_only_and_an_empty_state_clears_it(db: Database) -> None:
    commit(db, join("a"))
    op = StateOp(app=APP, actor="a", device="d", conv=ROOM, user="a", state=(("x", "1"),), ts=3)
    stranger = StateOp(app=APP, actor="z", device="d", conv=ROOM, user="z", state=(), ts=3)
    [ok, refused] = commit(db, op, stranger)
    assert ok.event is not None and refused.error is not None
    assert db.read_sync(lambda tx: channel_states_tx(tx, APP, "ch:room")) == {"a": {"x": "1"}}
    commit(db, StateOp(app=APP, actor="a", device="d", conv=ROOM, user="a", state=(), ts=4))
    assert db.read_sync(lambda tx: channel_states_tx(tx, APP, "ch:room")) == {}

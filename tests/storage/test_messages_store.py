"""The messaging store against real databases (SQLite and PostgreSQL): the group-commit
body and reads."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pg import ENGINES, open_test_database, pg_schema
from relaydesk.protocol.addresses import channel_conversation, resolve
from relaydesk.protocol.errors import ErrorCode
from relaydesk.storage import Database, Tx, open_database
from relaydesk.storage.messages import (
    DeleteOp,
    JoinOp,
    LeaveOp,
    MessageStore,
    Op,
    Outcome,
    PublishOp,
    ReadOp,
    messaging_migrations,
)

APP = "app1"


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as database:
        database.migrate("messaging", messaging_migrations(database.dialect))
        yield database


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
    assert db.migrate("messaging", messaging_migrations(db.dialect)) == 2


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


# -- the batch's prefetch (commit_batch_tx reads membership, dedup and seqs up front) --


def leave(user: str, channel: str) -> LeaveOp:
    return LeaveOp(app=APP, user=user, device="d", channel=channel_conversation(channel), ts=1)


def test_a_join_earlier_in_the_batch_admits_later_publishes_and_a_leave_stops_them(
    db: Database,
) -> None:
    out = commit(
        db,
        pub("bob", "channel:room", "early"),  # before his join: refused
        join("alice", "room", role="owner"),  # creates the channel
        join("bob", "room", via="invite", actor="alice"),  # alice is owner by now
        pub("bob", "channel:room", "b1"),
        join("carol", "room", via="public"),  # created in this batch, not public
        leave("bob", "room"),
        pub("bob", "channel:room", "b2"),
        join("bob", "room"),
        pub("bob", "channel:room", "b3"),
    )
    codes = [o.error.code if o.error else None for o in out]
    assert codes == [
        ErrorCode.FORBIDDEN,
        None,
        None,
        None,
        ErrorCode.FORBIDDEN,
        None,
        ErrorCode.FORBIDDEN,
        None,
        None,
    ]
    msgs = [(o.event.id, o.event.seq) for o in out if o.event and o.event.kind == "msg"]
    assert msgs == [("b1", 1), ("b3", 2)]
    # A leave earlier in the batch makes a later leave fail; the role is the batch's.
    gone, again = commit(db, leave("alice", "room"), leave("alice", "room"))
    assert gone.event is not None and again.error is not None
    assert again.error.code is ErrorCode.NOT_FOUND


def test_dedup_in_one_batch_against_stored_and_earlier_ids(db: Database) -> None:
    commit(db, pub("alice", "user:bob", "old", body=b"v1"))
    out = commit(
        db,
        pub("alice", "user:bob", "new"),
        pub("alice", "user:bob", "old", body=b"v1"),  # stored: a duplicate of it
        pub("alice", "user:bob", "new"),  # earlier in this batch: a duplicate of that
        pub("alice", "user:bob", "old", body=b"v2"),  # stored with another body
        pub("bob", "user:alice", "old"),  # another sender's id space
    )
    first, stored_dup, batch_dup, mismatch, other = out
    assert first.event is not None and not first.duplicate
    assert stored_dup.duplicate and stored_dup.event is not None
    assert (stored_dup.event.pos, stored_dup.event.body) == (1, b"v1")
    assert batch_dup.duplicate and batch_dup.event == first.event
    assert mismatch.error is not None
    assert mismatch.error.code is ErrorCode.DUPLICATE_ID_MISMATCH
    assert other.event is not None and not other.duplicate
    assert [first.event.pos, other.event.pos] == [2, 3]  # duplicates take no position


def test_a_batch_mixing_apps_keeps_their_channels_members_and_ids_apart(db: Database) -> None:
    commit(db, join("alice", "room", role="owner"), pub("alice", "channel:room", "m1"))

    def in_app2(op: Op) -> Op:
        return msgspec.structs.replace(op, app="app2")

    out = commit(
        db,
        in_app2(pub("alice", "channel:room", "m1")),  # not a member in app2
        pub("alice", "channel:room", "m1"),  # app1: a duplicate
        in_app2(join("alice", "room", role="owner")),
        in_app2(pub("alice", "channel:room", "m1")),  # app2: new, seq 1 of app2's room
        pub("alice", "channel:room", "m2"),  # app1: seq 2
    )
    assert out[0].error is not None and out[0].error.code is ErrorCode.FORBIDDEN
    assert out[1].duplicate and out[1].event is not None and out[1].event.seq == 1
    assert out[3].event is not None and not out[3].duplicate and out[3].event.seq == 1
    assert out[4].event is not None and out[4].event.seq == 2


def test_batches_larger_than_one_prefetch_statement(db: Database) -> None:
    senders = [f"u{i}" for i in range(40)]
    commit(db, *[join(u, "big") for u in senders])
    commit(db, *[pub(senders[i % 40], "channel:big", f"a{i}") for i in range(700)])
    ops = [pub(senders[i % 40], "channel:big", f"a{i}") for i in range(0, 1400, 2)]
    ops.insert(300, pub("stranger", "channel:big", "s"))
    out = commit(db, *ops)
    assert out.pop(300).error is not None
    dups = [o for o in out if o.duplicate]
    new = [o.event for o in out if not o.duplicate and o.event]
    assert len(dups) == 350 and len(new) == 350
    assert all(o.event is not None and o.event.pos == 40 + int(o.event.id[1:]) + 1 for o in dups)
    assert [e.seq for e in new] == list(range(701, 1051))


class CountingTx:
    """A :class:`Tx` that counts the statements run through it."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.statements = 0
        self.dialect = tx.dialect

    def __getattr__(self, name: str) -> Any:
        self.statements += 1
        return getattr(self.tx, name)


@pytest.mark.parametrize("size", [10, 1000])
def test_a_batch_runs_the_same_few_statements_whatever_its_size(db: Database, size: int) -> None:
    """Statements are round trips under the cluster-wide lock on PostgreSQL: their number
    must not grow with the publishes in a batch (channels, DMs, dedup hits)."""
    commit(db, *[join(f"u{i}", "room") for i in range(10)])
    commit(db, pub("u0", "channel:room", "x0"), pub("u1", "user:u2", "y0"))
    ops: list[Op] = []
    for i in range(size):
        ops.append(pub(f"u{i % 10}", "channel:room", f"x{i}"))
        ops.append(pub(f"u{i % 3}", f"user:u{3 + i % 2}", f"y{i}"))

    def body(tx: Tx) -> int:
        counting = CountingTx(tx)
        STORE.commit_batch_tx(counting, ops, ())  # type: ignore[arg-type]
        return counting.statements

    statements = db.write_sync(body)
    # The lock; dedup (4 statements of 512 keys for 2,000 publishes), roles and
    # conversations; 6 new DMs (the conversation and 2 members each); the events;
    # last_seq of 7 conversations; the counter.  One statement per publish: > 2,000.
    assert statements <= 1 + (4 + 1 + 1) + 6 * 3 + 1 + 7 + 1, statements


@pytest.mark.services
def test_two_nodes_committing_at_once_on_postgres_allocate_positions_in_commit_order() -> None:
    """Two engines (two relaydesk nodes) commit group batches to one database from two
    threads.  The counter row lock must serialize them: every position used once, no gap,
    each batch one contiguous range committed after every lower position, and each
    conversation's seqs in position order."""
    batches, size = 40, 12
    with pg_schema() as url:
        nodes = [open_database(url), open_database(url)]
        try:
            nodes[0].migrate("messaging", messaging_migrations("postgres"))
            commit(nodes[0], join("alice", "room", role="owner"), join("bob", "room"))
            seen: list[tuple[str, list[int], int]] = []  # sender, positions, lower visible
            lock = threading.Lock()
            start = threading.Barrier(2)

            errors: list[BaseException] = []

            def run(node: Database, sender: str) -> None:
                try:
                    commit_all(node, sender)
                except BaseException as exc:  # reported below, not lost in the thread
                    errors.append(exc)

            def commit_all(node: Database, sender: str) -> None:
                start.wait()
                for b in range(batches):
                    ops: list[Op] = [
                        pub(sender, ("channel:room", "user:carol", "user:dave")[i % 3], f"{b}.{i}")
                        for i in range(size)
                    ]

                    def body(tx: Tx, ops: list[Op] = ops) -> tuple[list[int], int]:
                        result = STORE.commit_batch_tx(tx, ops, [(APP, "ch:room")])
                        positions = [o.event.pos for o in result.outcomes if o.event]
                        # Still in the transaction, after the lock: how many lower positions
                        # are committed (READ COMMITTED shows each statement the latest)?
                        lower = tx.scalar(
                            "SELECT COUNT(*) FROM events WHERE pos < ?", positions[:1]
                        )
                        return positions, int(lower)

                    positions, lower = node.write_sync(body)
                    with lock:
                        seen.append((sender, positions, lower))

            threads = [
                threading.Thread(target=run, args=(node, user))
                for node, user in zip(nodes, ("alice", "bob"), strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

            assert not errors, errors
            assert len(seen) == 2 * batches
            for _, positions, lower in seen:
                assert positions == list(range(positions[0], positions[0] + size))
                assert lower == positions[0] - 1  # every lower position committed before
            rows = nodes[1].read_sync(
                lambda tx: tx.query("SELECT pos, conv, seq, kind FROM events ORDER BY pos")
            )
            total = 2 + 2 * batches * size  # the two joins, then every message
            assert [r[0] for r in rows] == list(range(1, total + 1))
            by_conv: dict[str, list[int]] = {}
            for _, conv, seq, kind in rows:
                if kind == "msg":
                    by_conv.setdefault(conv, []).append(seq)
            assert len(by_conv) == 5  # the channel and four DMs
            for seqs in by_conv.values():
                assert seqs == list(range(1, len(seqs) + 1))  # unique, in position order
            # The nodes' batches really interleaved, or this test would prove nothing.
            order = [sender for sender, _, _ in sorted(seen, key=lambda e: e[1][0])]
            assert sum(a != b for a, b in itertools.pairwise(order)) >= 2
        finally:
            for node in nodes:
                node.close_sync()


@pytest.mark.services
def test_two_nodes_committing_batches_of_several_apps_never_deadlock_on_postgres() -> None:
    """Per-app counter rows: batches touching several apps, in opposite orders, and
    apps whose first commit both nodes race to make, commit without a deadlock, and
    every app's positions are contiguous from 1."""
    batches = 25
    with pg_schema() as url:
        nodes = [open_database(url), open_database(url)]
        try:
            nodes[0].migrate("messaging", messaging_migrations("postgres"))
            errors: list[BaseException] = []
            start = threading.Barrier(2)

            def run(node: Database, sender: str, apps: list[str]) -> None:
                try:
                    start.wait()
                    for b in range(batches):
                        batch_apps = [*apps, f"new{b}"]  # new{b}: both create its row
                        ops: list[Op] = [
                            msgspec.structs.replace(
                                pub(sender, "user:zed", f"{b}.{i}"), app=batch_apps[i % 4]
                            )
                            for i in range(8)
                        ]
                        node.write_sync(lambda tx, ops=ops: STORE.commit_batch_tx(tx, ops, ()))
                except BaseException as exc:  # reported below, not lost in the thread
                    errors.append(exc)

            threads = [
                threading.Thread(target=run, args=(nodes[0], "alice", ["a", "b", "c"])),
                threading.Thread(target=run, args=(nodes[1], "bob", ["c", "b", "a"])),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            rows = nodes[1].read_sync(
                lambda tx: tx.query("SELECT app, pos FROM events ORDER BY app, pos")
            )
            by_app: dict[str, list[int]] = {}
            for app, pos in rows:
                by_app.setdefault(app, []).append(pos)
            assert len(by_app) == 3 + batches
            for app, positions in by_app.items():
                assert positions == list(range(1, len(positions) + 1)), app
            assert nodes[1].read_sync(STORE.last_positions_tx) == {
                app: len(p) for app, p in by_app.items()
            }
        finally:
            for node in nodes:
                node.close_sync()

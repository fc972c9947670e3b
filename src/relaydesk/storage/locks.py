"""Channel locks: the SQL (docs/protocol.md §5.12).

A ``LockOp`` is an operation of the group commit (``messages.commit_batch_tx`` hands
it to ``apply_lock_tx``), decided under the lock that serialises every node's
commits: the database, not a node's memory, says who holds a lock.  The rules are
the pure ``protocol.locks.apply_lock``.  ``deadline_ms`` is the TTL clock: set while
the holder has no connected device, cleared when one comes back, and a due deadline
lets the sweeper ``expire`` the lock (``server/features/locks.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec

from relaydesk.protocol.addresses import Conversation
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Event
from relaydesk.protocol.locks import LockChange, LockState, apply_lock, encode_lock_change
from relaydesk.storage.engine import Tx

LOCK_MIGRATIONS = [
    """
    CREATE TABLE locks (
        app TEXT NOT NULL,
        channel TEXT NOT NULL,
        name TEXT NOT NULL,
        ttl_s INTEGER NOT NULL,
        holder TEXT NOT NULL DEFAULT '',
        since_ms BIGINT NOT NULL DEFAULT 0,
        waiters TEXT NOT NULL DEFAULT '[]',
        deadline_ms BIGINT,
        PRIMARY KEY (app, channel, name)
    )
    """
]


class LockOp(msgspec.Struct, frozen=True):
    """A lock operation on ``name`` of ``channel`` (``conv`` its conversation)."""

    app: str
    actor: str
    device: str
    conv: Conversation
    op: str  # set | remove | acquire | release | revoke | expire
    name: str
    ts: int
    ttl_s: int = 10
    wait: bool = False
    privileged: bool = False  # a backend or the TTL sweeper: no role check
    holder: str = ""  # expire: the holder the sweeper saw (the lock expires only if unchanged)


RoleOf = Callable[[str, str, str], "str | None"]


def _state(row: tuple[object, ...] | None, name: str) -> LockState | None:
    if row is None:
        return None
    ttl_s, holder, since, waiters = row
    return LockState(
        name, int(str(ttl_s)), str(holder), int(str(since)), tuple(json.loads(str(waiters)))
    )


def read_lock_tx(tx: Tx, app: str, channel: str, name: str) -> LockState | None:
    row = tx.one(
        "SELECT ttl_s, holder, since_ms, waiters FROM locks"
        " WHERE app = ? AND channel = ? AND name = ?",
        (app, channel, name),
    )
    return _state(row, name)


def lock_holder_tx(tx: Tx, app: str, channel: str, name: str) -> str | None:
    """Who holds lock ``name`` of ``channel`` (metadata writes under a lock)."""
    lock = read_lock_tx(tx, app, channel, name)
    return lock.holder or None if lock is not None else None


def list_locks_tx(tx: Tx, app: str, channel: str) -> list[LockState]:
    rows = tx.query(
        "SELECT name, ttl_s, holder, since_ms, waiters FROM locks"
        " WHERE app = ? AND channel = ? ORDER BY name",
        (app, channel),
    )
    return [s for r in rows if (s := _state(r[1:], str(r[0]))) is not None]


def held_locks_tx(tx: Tx) -> list[tuple[str, str, str, str, int, int | None]]:
    """Every held lock: (app, channel, name, holder, ttl_s, deadline_ms or None)."""
    return [
        (a, c, n, h, int(t), None if d is None else int(d))
        for a, c, n, h, t, d in tx.query(
            "SELECT app, channel, name, holder, ttl_s, deadline_ms FROM locks WHERE holder <> ''"
        )
    ]


def set_deadline_tx(
    tx: Tx, app: str, channel: str, name: str, holder: str, deadline_ms: int | None
) -> None:
    """Start (a number) or stop (None) the TTL clock of ``holder``'s hold on the lock.
    Starting keeps a clock already running; both do nothing if the holder changed."""
    if deadline_ms is None:
        tx.execute(
            "UPDATE locks SET deadline_ms = NULL WHERE app = ? AND channel = ? AND name = ?"
            " AND holder = ?",
            (app, channel, name, holder),
        )
    else:
        tx.execute(
            "UPDATE locks SET deadline_ms = ? WHERE app = ? AND channel = ? AND name = ?"
            " AND holder = ? AND deadline_ms IS NULL",
            (deadline_ms, app, channel, name, holder),
        )


def apply_lock_tx(tx: Tx, op: LockOp, pos: int, role_of: RoleOf) -> Event:
    """Apply ``op`` as the event at ``pos``; raises ``ProtocolError`` with nothing written."""
    channel = op.conv.channel
    owner = op.privileged
    if not op.privileged:
        role = role_of(op.app, op.conv.id, op.actor)
        if role is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of channel {channel!r}")
        owner = role == "owner"
    key = (op.app, channel, op.name)
    lock = read_lock_tx(tx, *key)
    if op.op == "expire":
        deadline = tx.scalar(
            "SELECT deadline_ms FROM locks WHERE app = ? AND channel = ? AND name = ?", key
        )
        due = deadline is not None and int(deadline) <= op.ts
        if lock is None or lock.holder != op.holder or not due:
            raise ProtocolError(ErrorCode.NOT_FOUND, "the lock is no longer due to expire")
    count = 0
    if op.op == "set" and lock is None:
        count = int(tx.scalar("SELECT COUNT(*) FROM locks WHERE app = ? AND channel = ?", key[:2]))
    after, change = apply_lock(
        lock,
        op.op,
        op.name,
        op.actor,
        owner=owner,
        now_ms=op.ts,
        ttl_s=op.ttl_s,
        wait=op.wait,
        count=count,
    )
    if after is None:
        tx.execute("DELETE FROM locks WHERE app = ? AND channel = ? AND name = ?", key)
    else:
        holder_changed = lock is None or lock.holder != after.holder
        tx.execute(
            "INSERT INTO locks (app, channel, name, ttl_s, holder, since_ms, waiters, deadline_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (app, channel, name) DO UPDATE SET"
            " ttl_s = excluded.ttl_s, holder = excluded.holder, since_ms = excluded.since_ms,"
            " waiters = excluded.waiters" + (", deadline_ms = NULL" if holder_changed else ""),
            (*key, after.ttl_s, after.holder, after.since, json.dumps(list(after.waiters))),
        )
    shown = after or lock
    assert shown is not None
    body = LockChange(
        op=change,
        name=op.name,
        ttl_s=shown.ttl_s,
        holder=after.holder if after is not None else "",
        waiters=list(after.waiters) if after is not None else [],
        by="" if op.op == "expire" else op.actor,
    )
    return Event(
        conv=op.conv.id,
        pos=pos,
        seq=0,
        kind="lock",
        sender=op.actor,
        dev=op.device,
        ts=op.ts,
        body=encode_lock_change(body),
        subject=op.name,
    )

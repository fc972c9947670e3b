"""Channel and user metadata: the SQL (docs/protocol.md §5.11).

A ``MetaOp`` is one more operation of the group commit (``messages.commit_batch_tx``
hands it to ``apply_meta_tx``): it is applied in commit order, under the same lock
that serialises every node's commits, and becomes a ``meta`` event at the next
position.  The rules of a change are the pure ``protocol.metadata.apply_change``;
this module reads the object, checks who may write it, stores the outcome.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from relaydesk.protocol.addresses import Conversation
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Event, MetaEntry, MetaItem
from relaydesk.protocol.metadata import Change, ChangeBody, apply_change, encode_change
from relaydesk.storage.engine import Tx

METADATA_MIGRATIONS = [
    """
    CREATE TABLE meta_objects (
        app TEXT NOT NULL,
        scope TEXT NOT NULL,
        target TEXT NOT NULL,
        major BIGINT NOT NULL,
        PRIMARY KEY (app, scope, target)
    );
    CREATE TABLE meta_items (
        app TEXT NOT NULL,
        scope TEXT NOT NULL,
        target TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        rev BIGINT NOT NULL,
        author TEXT NOT NULL,
        ts BIGINT NOT NULL,
        PRIMARY KEY (app, scope, target, key)
    )
    """
]


class MetaOp(msgspec.Struct, frozen=True):
    """Change the metadata of ``scope``:``target`` on behalf of ``actor``.

    ``conv`` is where the change event goes: the channel's conversation, or for user
    metadata the user's own conversation ``dm:U:U`` (every device of the user)."""

    app: str
    actor: str
    device: str
    conv: Conversation
    scope: str  # "channel" | "user"
    target: str
    op: str
    items: tuple[MetaEntry, ...]
    major: int
    ts: int
    lock: str = ""
    privileged: bool = False  # backend (app secret): no role check


RoleOf = Callable[[str, str, str], "str | None"]
LockHolder = Callable[[Tx, str, str, str], "str | None"]


def read_object_tx(tx: Tx, app: str, scope: str, target: str) -> tuple[int, dict[str, MetaItem]]:
    """The object's ``major`` (0 if never written) and its items by key."""
    major = tx.scalar(
        "SELECT major FROM meta_objects WHERE app = ? AND scope = ? AND target = ?",
        (app, scope, target),
    )
    rows = tx.query(
        "SELECT key, value, rev, author, ts FROM meta_items"
        " WHERE app = ? AND scope = ? AND target = ? ORDER BY key",
        (app, scope, target),
    )
    items = {
        key: MetaItem(key=key, value=value, rev=int(rev), by=author, ts=int(ts))
        for key, value, rev, author, ts in rows
    }
    return int(major or 0), items


def authorise_write(op: MetaOp, role_of: RoleOf) -> None:
    """Who may write: a channel's owners, a user for their own metadata, a backend."""
    if op.privileged:
        return
    if op.scope == "user":
        if op.actor != op.target:
            raise ProtocolError(ErrorCode.FORBIDDEN, "users write only their own metadata")
        return
    role = role_of(op.app, op.conv.id, op.actor)
    if role is None:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of channel {op.target!r}")
    if role != "owner":
        raise ProtocolError(ErrorCode.FORBIDDEN, "only a channel's owners write its metadata")


def apply_meta_tx(
    tx: Tx,
    op: MetaOp,
    pos: int,
    role_of: RoleOf,
    lock_holder: LockHolder | None = None,
) -> Event:
    """Apply ``op`` as the event at ``pos``; raises ``ProtocolError`` with nothing written."""
    authorise_write(op, role_of)
    if op.lock:
        if op.scope != "channel":
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, "locks belong to channels")
        holder = lock_holder(tx, op.app, op.target, op.lock) if lock_holder else None
        if holder != op.actor:
            raise ProtocolError(ErrorCode.LOCK_NOT_HELD, f"you do not hold lock {op.lock!r}")
    major, items = read_object_tx(tx, op.app, op.scope, op.target)
    applied = apply_change(major, items, Change(op.op, op.items, op.major), op.actor, op.ts)
    key = (op.app, op.scope, op.target)
    tx.execute(
        "INSERT INTO meta_objects (app, scope, target, major) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app, scope, target) DO UPDATE SET major = excluded.major",
        (*key, applied.major),
    )
    if applied.removed:
        tx.executemany(
            "DELETE FROM meta_items WHERE app = ? AND scope = ? AND target = ? AND key = ?",
            [(*key, k) for k in applied.removed],
        )
    if applied.written:
        tx.executemany(
            "INSERT INTO meta_items (app, scope, target, key, value, rev, author, ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app, scope, target, key) DO UPDATE"
            " SET value = excluded.value, rev = excluded.rev, author = excluded.author,"
            " ts = excluded.ts",
            [(*key, i.key, i.value, i.rev, i.by, i.ts) for i in applied.written],
        )
    body = ChangeBody(
        scope=op.scope,
        target=op.target,
        op=op.op,
        major=applied.major,
        items=applied.written,
        removed=applied.removed,
    )
    return Event(
        conv=op.conv.id,
        pos=pos,
        seq=applied.major,
        kind="meta",
        sender=op.actor,
        dev=op.device,
        ts=op.ts,
        body=encode_change(body),
        subject=op.target,
    )

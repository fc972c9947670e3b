"""Messaging store: conversations, membership, the event log, device cursors.

Theory of operation (docs/protocol.md §4)
-----------------------------------------
Every event (message, read marker, deletion, join, leave) is one row of ``events``
with a position ``pos`` allocated here, in commit order, from its app's counter (one
row of ``positions`` per app) that never goes back (retention may delete rows, never
positions).  Positions are per app: an app's feed positions are contiguous whatever
other apps commit, and commits of different apps lock different rows.  Messages also get a
per-conversation ``seq``.  A user's feed is the events of the conversations they
belong to, restricted to their membership window ``joined_pos <= pos <= left_pos``
and to events addressed to everyone or to them (``audience``).

``commit_batch`` is the body of one group commit: it runs on the writer thread,
validates each operation against the database (authoritative membership and
dedup), assigns positions and sequences, and returns per-operation outcomes plus
the membership of the conversations the caller asked about, as of this commit,
so the in-memory fan-out cache is exactly what was committed.

What the checks read (dedup candidates, channel roles, conversations) is fetched
for the whole batch in a few statements right after the position lock
(``_prefetch``), then kept up to date in memory as the batch's own joins, leaves
and new conversations change it.  On PostgreSQL every statement is a network round
trip made while holding the counter locks of the batch's apps; one per operation
capped a cluster's commit rate.

Schema step 2 moved from one global counter to per-app counters: each app's counter
starts at the old global value, so every stored position, membership window and
device cursor keeps its meaning (positions before the upgrade keep the gaps other
apps left; positions after it are contiguous per app).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import msgspec

from relaydesk.protocol.addresses import Conversation
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Event
from relaydesk.storage.engine import Tx
from relaydesk.storage.locks import LockOp, apply_lock_tx, lock_holder_tx
from relaydesk.storage.metadata import MetaOp, apply_meta_tx
from relaydesk.storage.presence_state import StateOp, apply_state_tx

_SCHEMA_V1 = """
    CREATE TABLE apps (
        id TEXT PRIMARY KEY,
        secret TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    CREATE TABLE conversations (
        app TEXT NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        last_seq BIGINT NOT NULL DEFAULT 0,
        public INTEGER NOT NULL DEFAULT 0,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (app, id)
    );
    CREATE TABLE members (
        app TEXT NOT NULL,
        conv TEXT NOT NULL,
        user_id TEXT NOT NULL,
        role TEXT NOT NULL,
        joined_pos BIGINT NOT NULL,
        left_pos BIGINT,
        PRIMARY KEY (app, conv, user_id)
    );
    CREATE INDEX members_by_user ON members (app, user_id, conv);
    CREATE TABLE events (
        pos BIGINT PRIMARY KEY,
        app TEXT NOT NULL,
        conv TEXT NOT NULL,
        seq BIGINT NOT NULL,
        kind TEXT NOT NULL,
        audience TEXT,
        sender TEXT NOT NULL,
        device TEXT NOT NULL,
        client_id TEXT,
        digest {blob},
        ts BIGINT NOT NULL,
        body {blob} NOT NULL,
        enc TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        role TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_by_conv ON events (app, conv, pos);
    CREATE UNIQUE INDEX events_conv_seq ON events (app, conv, seq) WHERE kind = 'msg';
    CREATE UNIQUE INDEX events_dedup ON events (app, sender, client_id)
        WHERE client_id IS NOT NULL;
    CREATE TABLE devices (
        app TEXT NOT NULL,
        user_id TEXT NOT NULL,
        device TEXT NOT NULL,
        cursor BIGINT NOT NULL DEFAULT 0,
        seen_ms BIGINT NOT NULL,
        PRIMARY KEY (app, user_id, device)
    );
    CREATE TABLE read_markers (
        app TEXT NOT NULL,
        user_id TEXT NOT NULL,
        conv TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (app, user_id, conv)
    )
    """
_BLOB = {"sqlite": "BLOB", "postgres": "BYTEA"}
# Version 1 kept one global counter; PostgreSQL locked its row, seeded here.
_SEED_POS = "; INSERT INTO counters (name, value) VALUES ('pos', 0)"

# Step 2: positions per app (docs/scaling.md §4).  Every app known anywhere starts at
# the old global counter (or the highest stored position, if higher), so no stored
# position, membership window or device cursor changes meaning; apps created later
# start at 0.  ``counters`` is dropped, so a node still running the old code fails its
# commits loudly instead of writing positions from the old counter.
_PER_APP_POSITIONS = """
    CREATE TABLE positions (app TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO positions (app, value)
        SELECT known.app, (SELECT MAX(v) FROM (
            SELECT value AS v FROM counters WHERE name = 'pos'
            UNION ALL SELECT MAX(pos) FROM events UNION ALL SELECT 0) AS old)
        FROM (SELECT id AS app FROM apps UNION SELECT app FROM events
              UNION SELECT app FROM devices UNION SELECT app FROM members) AS known;
    DROP TABLE counters
    """
# The events' key becomes (app, pos).  SQLite cannot change a primary key in place:
# the table is copied (same columns, same order) and its indexes made again.
_EVENTS_KEY = {
    "postgres": """;
        ALTER TABLE events DROP CONSTRAINT events_pkey;
        ALTER TABLE events ADD PRIMARY KEY (app, pos)
        """,
    "sqlite": """;
        CREATE TABLE events_v2 (
            pos BIGINT NOT NULL,
            app TEXT NOT NULL,
            conv TEXT NOT NULL,
            seq BIGINT NOT NULL,
            kind TEXT NOT NULL,
            audience TEXT,
            sender TEXT NOT NULL,
            device TEXT NOT NULL,
            client_id TEXT,
            digest BLOB,
            ts BIGINT NOT NULL,
            body BLOB NOT NULL,
            enc TEXT NOT NULL DEFAULT '',
            subject TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (app, pos)
        );
        INSERT INTO events_v2 SELECT * FROM events;
        DROP TABLE events;
        ALTER TABLE events_v2 RENAME TO events;
        CREATE INDEX events_by_conv ON events (app, conv, pos);
        CREATE UNIQUE INDEX events_conv_seq ON events (app, conv, seq) WHERE kind = 'msg';
        CREATE UNIQUE INDEX events_dedup ON events (app, sender, client_id)
            WHERE client_id IS NOT NULL
        """,
}


def messaging_migrations(dialect: str = "sqlite") -> list[str]:
    """The messaging schema steps for ``dialect`` (``sqlite`` or ``postgres``)."""
    step1 = _SCHEMA_V1.replace("{blob}", _BLOB[dialect])
    step2 = _PER_APP_POSITIONS + _EVENTS_KEY[dialect]
    return [step1 + _SEED_POS if dialect == "postgres" else step1, step2]


#: Schema steps for SQLite (``db.migrate("messaging", messaging_migrations(db.dialect))``).
MIGRATIONS = messaging_migrations("sqlite")

EVENT_COLUMNS = "pos, conv, seq, kind, sender, device, client_id, ts, body, enc, subject, role"


def event_from_row(row: Sequence[Any]) -> Event:
    pos, conv, seq, kind, sender, device, client_id, ts, body, enc, subject, role = row
    return Event(
        conv=conv,
        pos=pos,
        seq=seq,
        kind=kind,
        sender=sender,
        dev=device,
        id=client_id or "",
        ts=ts,
        body=bytes(body),
        enc=enc,
        subject=subject,
        role=role,
    )


# ------------------------------------------------------------------ operations
# Frozen msgspec structs: one is built per publish on the gateway's hot path, and a
# struct is several times cheaper to construct than a frozen dataclass.


class PublishOp(msgspec.Struct, frozen=True):
    app: str
    sender: str
    device: str
    conv: Conversation
    client_id: str
    body: bytes
    enc: str
    ts: int
    privileged: bool = False  # server-side publish: membership not required


class JoinOp(msgspec.Struct, frozen=True):
    app: str
    actor: str
    device: str
    channel: Conversation
    user: str
    role: str  # role to grant
    via: str  # "grant" | "public" | "invite" | "admin"
    ts: int


class LeaveOp(msgspec.Struct, frozen=True):
    app: str
    user: str
    device: str
    channel: Conversation
    ts: int


class ReadOp(msgspec.Struct, frozen=True):
    app: str
    user: str
    device: str
    conv: Conversation
    seq: int
    ts: int


class DeleteOp(msgspec.Struct, frozen=True):
    app: str
    user: str
    device: str
    conv: Conversation
    seq: int
    ts: int


Op = PublishOp | JoinOp | LeaveOp | ReadOp | DeleteOp | MetaOp | LockOp | StateOp


@dataclass(slots=True)
class Outcome:
    """The result of one operation: an event, a dedup hit, or an error."""

    event: Event | None = None
    audience: str | None = None  # event only for this user (read markers)
    duplicate: bool = False
    error: ProtocolError | None = None
    role: str = ""


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome]
    # Active members (user -> role), as of the start of the batch, of the
    # conversations asked for.
    members: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # app -> its last position after the batch, for every app of the batch.
    last_pos: dict[str, int] = field(default_factory=dict)


def _row(
    app: str, event: Event, *, audience: str | None = None, digest: bytes | None = None
) -> tuple[Any, ...]:
    """The ``events`` row of ``event`` (column order of ``MessageStore._flush``)."""
    return (
        event.pos,
        app,
        event.conv,
        event.seq,
        event.kind,
        audience,
        event.sender,
        event.dev,
        event.id or None,
        digest,
        event.ts,
        event.body,
        event.enc,
        event.subject,
        event.role,
    )


def _digest(body: bytes, to: str) -> bytes:
    return hashlib.blake2b(body + b"\x00" + to.encode(), digest_size=16).digest()


# SQLite: keys per prefetch statement.  512 x 3 parameters stays far below its limit
# (32,766); a batch of commit_batch_max = 2,000 needs 4 statements, each a few C calls.
_KEYS_PER_STATEMENT = 512


@lru_cache(maxsize=64)
def _keyed_select(
    dialect: str, select: str, table: str, columns: tuple[str, ...], size: int, where: str
) -> str:
    """``select`` from the rows of ``table`` (as ``t``, at most one per key) whose
    ``columns`` (all text, a unique key) equal one of a list of keys and meet ``where``.

    Both engines probe the table's index once per key.  PostgreSQL: the keys as one text
    array per column, unnested, one short statement for any number of keys (psycopg
    parses a statement with more than 50 parameters anew on every call, ~4 ms for
    1,500); LATERAL ... LIMIT 1 keeps the planner from sorting the whole table for a
    merge join, as it does for a plain join while its statistics say the table is
    small.  SQLite: ``size`` rows of parameters in a VALUES list, joined, since for
    ``(a, b) IN (VALUES ...)`` it scans the whole table instead.
    """
    on = " AND ".join(f"t.{c} = k.column{i}" for i, c in enumerate(columns, start=1))
    if dialect == "postgres":
        names = ", ".join(f"column{i}" for i in range(1, len(columns) + 1))
        return (
            f"SELECT {select} FROM unnest({', '.join(['?::text[]'] * len(columns))})"
            f" AS k({names}) CROSS JOIN LATERAL"
            f" (SELECT * FROM {table} t WHERE {on} AND {where} LIMIT 1) t"
        )
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return (
        f"SELECT {select} FROM (VALUES {', '.join([row] * size)}) AS k"
        f" JOIN {table} t ON {on} WHERE {where}"
    )


def _rows_for_keys(
    tx: Tx,
    select: str,
    table: str,
    columns: tuple[str, ...],
    keys: Collection[tuple[str, ...]],
    where: str = "TRUE",
) -> list[tuple[Any, ...]]:
    """The rows of ``table`` whose ``columns`` equal one of ``keys`` (a row may come
    back more than once)."""
    if not keys:
        return []
    if tx.dialect == "postgres":
        sql = _keyed_select("postgres", select, table, columns, 0, where)
        return tx.query(sql, [list(column) for column in zip(*keys, strict=True)])
    out: list[tuple[Any, ...]] = []
    ordered = list(keys)
    for start in range(0, len(ordered), _KEYS_PER_STATEMENT):
        chunk = ordered[start : start + _KEYS_PER_STATEMENT]
        # Padded to a power of two by repeating a key: at most ten distinct statements
        # per query, so sqlite3's statement cache keeps working.
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (size - len(chunk))
        sql = _keyed_select("sqlite", select, table, columns, size, where)
        out += tx.query(sql, [v for key in chunk for v in key])
    return out


@dataclass(slots=True)
class _Prefetch:
    """What one batch's checks read, as of the start of the batch (see ``_prefetch``)."""

    # (app, sender, client_id) -> the stored event row plus its digest, if any.
    dups: dict[tuple[str, str, str], tuple[Any, ...]]
    # (app, conv, user) -> active role or None, for every channel key the batch checks.
    roles: dict[tuple[str, str, str], str | None]
    # (app, conv) -> (last_seq, public) or None (no such conversation), for every
    # conversation the batch publishes to or joins.
    convs: dict[tuple[str, str], tuple[int, int] | None]


def _prefetch(tx: Tx, ops: Sequence[Op]) -> _Prefetch:
    """Read, in a few statements, everything the checks of ``ops`` will ask about.

    As of the start of the batch, which is what ``commit_batch_tx`` needs: within the
    batch, members of channels change only through its own joins and leaves and
    conversations only through its own inserts (it updates the maps for both), and the
    only rows with a client id it inserts are its publishes (tracked in ``seen_ids``).
    On SQLite no other write runs meanwhile.  On PostgreSQL the other nodes' commits
    wait for the counter lock this transaction holds; the few writes that take no such
    lock (``set_public_tx``, the retention sweep) are seen as of the prefetch, where
    reading per operation could see them half-way through the batch.
    """
    dup_keys: set[tuple[str, str, str]] = set()
    role_keys: set[tuple[str, str, str]] = set()
    conv_keys: set[tuple[str, str]] = set()
    for op in ops:
        if isinstance(op, PublishOp):
            if op.client_id:  # an empty id is stored as NULL and never matches
                dup_keys.add((op.app, op.sender, op.client_id))
            conv_keys.add((op.app, op.conv.id))
            if not op.privileged and op.conv.kind == "ch":
                role_keys.add((op.app, op.conv.id, op.sender))
        elif isinstance(op, JoinOp):
            conv_keys.add((op.app, op.channel.id))
            if op.channel.kind == "ch":
                role_keys.add((op.app, op.channel.id, op.user))
                if op.via == "invite":
                    role_keys.add((op.app, op.channel.id, op.actor))
        elif isinstance(op, LeaveOp):
            if op.channel.kind == "ch":
                role_keys.add((op.app, op.channel.id, op.user))
        elif isinstance(op, MetaOp):  # metadata (storage/metadata.py)
            if op.conv.kind == "ch":
                role_keys.add((op.app, op.conv.id, op.actor))
            else:
                conv_keys.add((op.app, op.conv.id))
        elif isinstance(op, LockOp | StateOp):  # locks, presence state
            role_keys.add((op.app, op.conv.id, op.actor))
        elif op.conv.kind == "ch":  # ReadOp, DeleteOp
            role_keys.add((op.app, op.conv.id, op.user))
    dups = {
        (row[0], row[1], row[2]): row[3:]
        for row in _rows_for_keys(
            tx,
            f"t.app, t.sender, t.client_id, t.{EVENT_COLUMNS.replace(', ', ', t.')}, t.digest",
            "events",
            ("app", "sender", "client_id"),
            dup_keys,
            "t.client_id IS NOT NULL",  # (so that the partial index events_dedup applies)
        )
    }
    roles: dict[tuple[str, str, str], str | None] = dict.fromkeys(role_keys)
    for app, conv, user, role in _rows_for_keys(
        tx,
        "t.app, t.conv, t.user_id, t.role",
        "members",
        ("app", "conv", "user_id"),
        role_keys,
        "t.left_pos IS NULL",
    ):
        roles[(app, conv, user)] = role
    convs: dict[tuple[str, str], tuple[int, int] | None] = dict.fromkeys(conv_keys)
    for app, conv, last_seq, public in _rows_for_keys(
        tx, "t.app, t.id, t.last_seq, t.public", "conversations", ("app", "id"), conv_keys
    ):
        convs[(app, conv)] = (int(last_seq), int(public))
    return _Prefetch(dups, roles, convs)


class MessageStore:
    """All messaging SQL.  Methods named ``*_tx`` run inside a caller's transaction."""

    def __init__(self, retention_max_age_ms: int, retention_max_per_conv: int) -> None:
        self.max_age_ms = retention_max_age_ms
        self.max_per_conv = retention_max_per_conv

    # -- apps ------------------------------------------------------------------

    def ensure_app_tx(self, tx: Tx, app: str, secret: str, now_ms: int) -> None:
        tx.execute(
            "INSERT INTO apps (id, secret, created_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET secret = excluded.secret",
            (app, secret, now_ms),
        )

    def app_secrets_tx(self, tx: Tx) -> dict[str, str]:
        return dict(tx.query("SELECT id, secret FROM apps"))

    # -- group commit ------------------------------------------------------------

    def last_pos_tx(self, tx: Tx, app: str) -> int:
        """The last position allocated in ``app`` (0: none yet)."""
        return int(tx.scalar("SELECT value FROM positions WHERE app = ?", (app,)) or 0)

    def last_positions_tx(self, tx: Tx) -> dict[str, int]:
        """The last position allocated in every app that has committed (or that the
        schema upgrade carried over)."""
        return {app: int(value) for app, value in tx.query("SELECT app, value FROM positions")}

    @staticmethod
    def _lock_positions_tx(tx: Tx, apps: Collection[str]) -> dict[str, int]:
        """The last positions of ``apps``; on PostgreSQL also their counter rows' locks
        until commit, which serializes the commits of these apps across nodes.

        One statement: an upsert that changes nothing locks the rows that exist and
        creates those that do not, one at a time in sorted order, so two nodes whose
        batches share apps take the locks in the same order and never deadlock (two
        statements, a locking read and then an insert of the missing rows, could).
        """
        ordered = sorted(set(apps))
        if tx.dialect == "postgres":
            rows = tx.query(
                "INSERT INTO positions (app, value) SELECT a, 0 FROM unnest(?::text[]) AS a"
                " ORDER BY a ON CONFLICT (app) DO UPDATE SET value = positions.value"
                " RETURNING app, value",
                (ordered,),
            )
        else:  # BEGIN IMMEDIATE made this transaction the only writer already
            rows = _rows_for_keys(
                tx, "t.app, t.value", "positions", ("app",), [(a,) for a in ordered]
            )
        last = dict.fromkeys(ordered, 0)
        last.update((app, int(value)) for app, value in rows)
        return last

    def commit_batch_tx(
        self, tx: Tx, ops: Sequence[Op], want_members: Iterable[tuple[str, str]]
    ) -> BatchResult:
        """Apply ``ops`` in order in the caller's transaction (one group commit)."""
        # First the position counters of the batch's apps, locked on PostgreSQL: a commit
        # of another node touching one of these apps waits here, and once it proceeds it
        # reads membership, dedup and seqs as committed by the one before, so each app's
        # positions are allocated in commit order.  Apps not in the batch are not held.
        at = self._lock_positions_tx(tx, {op.app for op in ops})  # app -> last position
        start = dict(at)

        def next_pos(app: str) -> int:
            at[app] += 1
            return at[app]

        # Membership as of the start of the batch: the caller replays this batch's
        # joins and leaves on it in order, so live fan-out matches the feed exactly.
        members = {key: self.members_tx(tx, *key) for key in want_members}
        pre = _prefetch(tx, ops)
        seqs: dict[tuple[str, str], int] = {}
        roles = pre.roles  # (app, conv, user) -> role, updated by this batch's joins/leaves
        convs = pre.convs  # (app, conv) -> (last_seq, public), updated by this batch's inserts
        seen_ids: dict[tuple[str, str, str], Outcome] = {}
        outcomes: list[Outcome] = []
        rows: list[tuple[Any, ...]] = []

        # Positions for the operations of other stores (metadata, locks, presence state):
        # ``peek_pos`` is the position the next event of ``app`` gets, ``take_pos``
        # allocates it once the operation has succeeded (a refused one leaves no gap).
        def peek_pos(app: str) -> int:
            return at[app] + 1

        take_pos = next_pos

        def role_of(app: str, conv: str, user: str) -> str | None:
            key = (app, conv, user)
            if key not in roles:
                # Not prefetched: a join or leave of a non-channel conversation (which
                # the server never sends), whose members this batch may have written.
                roles[key] = tx.scalar(
                    "SELECT role FROM members WHERE app = ? AND conv = ? AND user_id = ?"
                    " AND left_pos IS NULL",
                    key,
                )
            return roles[key]

        def create_conversation(app: str, conv: Conversation, ts: int) -> None:
            self._create_conversation(tx, app, conv, ts)
            convs[(app, conv.id)] = (0, 0)

        def next_seq(app: str, conv: Conversation, ts: int) -> int:
            key = (app, conv.id)
            if key not in seqs:
                found = convs[key]
                if found is None:
                    create_conversation(app, conv, ts)
                    found = (0, 0)
                seqs[key] = found[0]
            seqs[key] += 1
            return seqs[key]

        for op in ops:
            try:
                if isinstance(op, PublishOp):
                    key = (op.app, op.sender, op.client_id)
                    digest = _digest(op.body, op.conv.id)
                    prior = seen_ids.get(key) or self._dup_outcome(op, digest, pre.dups.get(key))
                    if prior is not None:
                        outcomes.append(prior)
                        continue
                    if op.privileged:
                        pass
                    elif op.conv.kind == "dm":
                        if op.sender not in op.conv.members:
                            raise ProtocolError(ErrorCode.FORBIDDEN, "not a participant")
                    elif role_of(op.app, op.conv.id, op.sender) is None:
                        raise ProtocolError(
                            ErrorCode.FORBIDDEN, f"not a member of channel {op.conv.channel!r}"
                        )
                    pos = next_pos(op.app)
                    seq = next_seq(op.app, op.conv, op.ts)
                    event = Event(
                        conv=op.conv.id,
                        pos=pos,
                        seq=seq,
                        kind="msg",
                        sender=op.sender,
                        dev=op.device,
                        id=op.client_id,
                        ts=op.ts,
                        body=op.body,
                        enc=op.enc,
                    )
                    rows.append(_row(op.app, event, digest=digest))
                    out = Outcome(event=event)
                    seen_ids[key] = Outcome(event=event, duplicate=True)
                    outcomes.append(out)
                elif isinstance(op, JoinOp):
                    current = role_of(op.app, op.channel.id, op.user)
                    if current is not None:
                        outcomes.append(Outcome(role=current))
                        continue
                    if op.via == "invite" and role_of(op.app, op.channel.id, op.actor) != "owner":
                        raise ProtocolError(ErrorCode.FORBIDDEN, "only an owner may invite")
                    found = convs[(op.app, op.channel.id)]
                    if op.via == "public" and (found is None or found[1] != 1):
                        raise ProtocolError(
                            ErrorCode.FORBIDDEN,
                            f"channel {op.channel.channel!r} is not public and no grant covers it",
                        )
                    if found is None:
                        create_conversation(op.app, op.channel, op.ts)
                    pos = next_pos(op.app)
                    self._flush(tx, rows)
                    tx.execute(
                        "INSERT INTO members (app, conv, user_id, role, joined_pos, left_pos)"
                        " VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (app, conv, user_id)"
                        " DO UPDATE SET role = excluded.role, joined_pos = excluded.joined_pos,"
                        " left_pos = NULL",
                        (op.app, op.channel.id, op.user, op.role, pos),
                    )
                    roles[(op.app, op.channel.id, op.user)] = op.role
                    event = Event(
                        conv=op.channel.id,
                        pos=pos,
                        seq=0,
                        kind="join",
                        sender=op.actor,
                        dev=op.device,
                        ts=op.ts,
                        subject=op.user,
                        role=op.role,
                    )
                    rows.append(_row(op.app, event))
                    outcomes.append(Outcome(event=event, role=op.role))
                elif isinstance(op, LeaveOp):
                    if role_of(op.app, op.channel.id, op.user) is None:
                        raise ProtocolError(ErrorCode.NOT_FOUND, "not a member")
                    pos = next_pos(op.app)
                    tx.execute(
                        "UPDATE members SET left_pos = ?"
                        " WHERE app = ? AND conv = ? AND user_id = ?",
                        (pos, op.app, op.channel.id, op.user),
                    )
                    roles[(op.app, op.channel.id, op.user)] = None
                    event = Event(
                        conv=op.channel.id,
                        pos=pos,
                        seq=0,
                        kind="leave",
                        sender=op.user,
                        dev=op.device,
                        ts=op.ts,
                        subject=op.user,
                    )
                    rows.append(_row(op.app, event))
                    outcomes.append(Outcome(event=event))
                elif isinstance(op, ReadOp):
                    self._check_member(op.app, op.conv, op.user, role_of)
                    pos = next_pos(op.app)
                    tx.execute(
                        "INSERT INTO read_markers (app, user_id, conv, seq) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (app, user_id, conv) DO UPDATE SET seq ="
                        " CASE WHEN excluded.seq > read_markers.seq THEN excluded.seq"
                        " ELSE read_markers.seq END",
                        (op.app, op.user, op.conv.id, op.seq),
                    )
                    event = Event(
                        conv=op.conv.id,
                        pos=pos,
                        seq=op.seq,
                        kind="read",
                        sender=op.user,
                        dev=op.device,
                        ts=op.ts,
                    )
                    rows.append(_row(op.app, event, audience=op.user))
                    outcomes.append(Outcome(event=event, audience=op.user))
                elif isinstance(op, DeleteOp):
                    self._check_member(op.app, op.conv, op.user, role_of)
                    self._flush(tx, rows)
                    owner = tx.one(
                        "SELECT sender FROM events WHERE app = ? AND conv = ? AND seq = ?"
                        " AND kind = 'msg'",
                        (op.app, op.conv.id, op.seq),
                    )
                    if owner is None:
                        raise ProtocolError(ErrorCode.NOT_FOUND, f"no message {op.seq}")
                    if owner[0] != op.user:
                        raise ProtocolError(ErrorCode.FORBIDDEN, "only the sender may delete")
                    tx.execute(
                        "UPDATE events SET body = ?, enc = '' WHERE app = ? AND conv = ?"
                        " AND seq = ? AND kind = 'msg'",
                        (b"", op.app, op.conv.id, op.seq),
                    )
                    pos = next_pos(op.app)
                    event = Event(
                        conv=op.conv.id,
                        pos=pos,
                        seq=op.seq,
                        kind="del",
                        sender=op.user,
                        dev=op.device,
                        ts=op.ts,
                    )
                    rows.append(_row(op.app, event))
                    outcomes.append(Outcome(event=event))
                elif isinstance(op, MetaOp | LockOp | StateOp):
                    event = self._apply_feature(tx, op, peek_pos(op.app), role_of)
                    if op.conv.kind == "dm" and convs.get((op.app, op.conv.id)) is None:
                        create_conversation(op.app, op.conv, op.ts)  # user metadata's feed
                    take_pos(op.app)
                    rows.append(_row(op.app, event))
                    outcomes.append(Outcome(event=event))
            except ProtocolError as exc:
                outcomes.append(Outcome(error=exc))
        self._flush(tx, rows)
        for (app, conv), last in seqs.items():
            tx.execute(
                "UPDATE conversations SET last_seq = ? WHERE app = ? AND id = ?", (last, app, conv)
            )
        moved = [(app, value) for app, value in at.items() if value != start[app]]
        if moved:
            tx.executemany(
                "INSERT INTO positions (app, value) VALUES (?, ?)"
                " ON CONFLICT (app) DO UPDATE SET value = excluded.value",
                moved,
            )
        return BatchResult(outcomes, members, at)

    @staticmethod
    def _apply_feature(tx: Tx, op: MetaOp | LockOp | StateOp, pos: int, role_of: Any) -> Event:
        """Metadata, lock and presence-state operations (their own stores), as the event
        at ``pos``; each raises ``ProtocolError`` with nothing written."""
        if isinstance(op, MetaOp):
            return apply_meta_tx(tx, op, pos, role_of, lock_holder_tx)
        if isinstance(op, LockOp):
            return apply_lock_tx(tx, op, pos, role_of)
        return apply_state_tx(tx, op, pos, role_of)

    @staticmethod
    def _check_member(app: str, conv: Conversation, user: str, role_of: Any) -> None:
        if conv.kind == "dm":
            if user not in conv.members:
                raise ProtocolError(ErrorCode.FORBIDDEN, "not a participant")
        elif role_of(app, conv.id, user) is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of channel {conv.channel!r}")

    @staticmethod
    def _flush(tx: Tx, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            tx.executemany(
                "INSERT INTO events (pos, app, conv, seq, kind, audience, sender, device,"
                " client_id, digest, ts, body, enc, subject, role)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            rows.clear()

    @staticmethod
    def _create_conversation(tx: Tx, app: str, conv: Conversation, ts: int) -> None:
        tx.execute(
            "INSERT INTO conversations (app, id, kind, last_seq, public, created_ms)"
            " VALUES (?, ?, ?, 0, 0, ?) ON CONFLICT (app, id) DO NOTHING",
            (app, conv.id, conv.kind, ts),
        )
        if conv.kind == "dm":
            for user in conv.members:
                tx.execute(
                    "INSERT INTO members (app, conv, user_id, role, joined_pos, left_pos)"
                    " VALUES (?, ?, ?, 'member', 0, NULL) ON CONFLICT (app, conv, user_id)"
                    " DO NOTHING",
                    (app, conv.id, user),
                )

    @staticmethod
    def _dup_outcome(op: PublishOp, digest: bytes, row: tuple[Any, ...] | None) -> Outcome | None:
        """The outcome of ``op`` given the stored event with its sender and client id
        (``EVENT_COLUMNS`` then ``digest``), if there is one."""
        if row is None:
            return None
        if bytes(row[-1]) != digest:
            return Outcome(
                error=ProtocolError(
                    ErrorCode.DUPLICATE_ID_MISMATCH,
                    f"message id {op.client_id!r} was already used for another message",
                )
            )
        return Outcome(event=event_from_row(row[:-1]), duplicate=True)

    # -- channels ----------------------------------------------------------------

    def set_public_tx(self, tx: Tx, app: str, conv: Conversation, public: bool, ts: int) -> None:
        self._create_conversation(tx, app, conv, ts)
        tx.execute(
            "UPDATE conversations SET public = ? WHERE app = ? AND id = ?",
            (1 if public else 0, app, conv.id),
        )

    def members_tx(self, tx: Tx, app: str, conv: str) -> dict[str, str]:
        if conv.startswith("dm:"):
            _, a, b = conv.split(":")
            return {a: "member", b: "member"}
        return dict(
            tx.query(
                "SELECT user_id, role FROM members WHERE app = ? AND conv = ? AND left_pos IS NULL",
                (app, conv),
            )
        )

    def channels_of_tx(self, tx: Tx, app: str, user: str) -> list[str]:
        return [
            r[0]
            for r in tx.query(
                "SELECT conv FROM members WHERE app = ? AND user_id = ? AND left_pos IS NULL"
                " AND conv LIKE 'ch:%'",
                (app, user),
            )
        ]

    def is_member_tx(self, tx: Tx, app: str, conv: Conversation, user: str) -> bool:
        if conv.kind == "dm":
            return user in conv.members
        return (
            tx.one(
                "SELECT 1 FROM members WHERE app = ? AND conv = ? AND user_id = ?"
                " AND left_pos IS NULL",
                (app, conv.id, user),
            )
            is not None
        )

    # -- reading -------------------------------------------------------------------

    def feed_tx(
        self, tx: Tx, app: str, user: str, after: int, upto: int, limit: int
    ) -> list[Event]:
        """The user's feed: events with ``after < pos <= upto``, in pos order."""
        rows = tx.query(
            f"SELECT e.{EVENT_COLUMNS.replace(', ', ', e.')} FROM members m"
            " JOIN events e ON e.app = m.app AND e.conv = m.conv"
            " WHERE m.app = ? AND m.user_id = ? AND e.pos > ? AND e.pos <= ?"
            " AND e.pos >= m.joined_pos AND (m.left_pos IS NULL OR e.pos <= m.left_pos)"
            " AND (e.audience IS NULL OR e.audience = ?)"
            " ORDER BY e.pos LIMIT ?",
            (app, user, after, upto, user, limit),
        )
        return [event_from_row(r) for r in rows]

    def memberships_tx(self, tx: Tx, app: str, user: str) -> list[tuple[str, int, int | None]]:
        """The user's membership rows (conv, joined_pos, left_pos): the windows of
        ``feed_tx``, for a reader that filters events it already holds."""
        return [
            (conv, int(joined), None if left is None else int(left))
            for conv, joined, left in tx.query(
                "SELECT conv, joined_pos, left_pos FROM members WHERE app = ? AND user_id = ?",
                (app, user),
            )
        ]

    def newest_events_tx(
        self, tx: Tx, app: str, upto: int, limit: int
    ) -> list[tuple[str | None, Event]]:
        """The newest ``limit`` events of ``app`` with ``pos <= upto``, in position
        order, each with its audience (None: every member)."""
        rows = tx.query(
            f"SELECT audience, {EVENT_COLUMNS} FROM events WHERE app = ? AND pos <= ?"
            " ORDER BY pos DESC LIMIT ?",
            (app, upto, limit),
        )
        return [(r[0], event_from_row(r[1:])) for r in reversed(rows)]

    def history_tx(
        self,
        tx: Tx,
        app: str,
        conv: str,
        before: int | None,
        after: int | None,
        limit: int,
    ) -> tuple[list[Event], bool]:
        """Messages of ``conv`` ascending by seq, and whether more lie beyond the page."""
        cols = EVENT_COLUMNS
        if after is not None:
            rows = tx.query(
                f"SELECT {cols} FROM events WHERE app = ? AND conv = ? AND kind = 'msg'"
                " AND seq > ? ORDER BY seq LIMIT ?",
                (app, conv, after, limit + 1),
            )
            more = len(rows) > limit
            rows = rows[:limit]
        else:
            rows = tx.query(
                f"SELECT {cols} FROM events WHERE app = ? AND conv = ? AND kind = 'msg'"
                " AND seq < ? ORDER BY seq DESC LIMIT ?",
                (app, conv, before if before is not None else 2**62, limit + 1),
            )
            more = len(rows) > limit
            rows = rows[:limit][::-1]
        return [event_from_row(r) for r in rows], more

    # -- devices -----------------------------------------------------------------

    def device_cursor_tx(self, tx: Tx, app: str, user: str, device: str) -> int | None:
        value = tx.scalar(
            "SELECT cursor FROM devices WHERE app = ? AND user_id = ? AND device = ?",
            (app, user, device),
        )
        return None if value is None else int(value)

    def save_cursors_tx(self, tx: Tx, cursors: Iterable[tuple[str, str, str, int, int]]) -> None:
        """Upsert (app, user, device, cursor, seen_ms); a cursor never moves back."""
        tx.executemany(
            "INSERT INTO devices (app, user_id, device, cursor, seen_ms) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (app, user_id, device) DO UPDATE SET"
            " cursor = CASE WHEN excluded.cursor > devices.cursor THEN excluded.cursor"
            " ELSE devices.cursor END, seen_ms = excluded.seen_ms",
            list(cursors),
        )

    # -- retention ---------------------------------------------------------------

    def sweep_tx(self, tx: Tx, now_ms: int) -> int:
        """Delete events past the age or per-conversation count limits."""
        removed = tx.execute("DELETE FROM events WHERE ts < ?", (now_ms - self.max_age_ms,))
        for app, conv, last_seq in tx.query(
            "SELECT app, id, last_seq FROM conversations WHERE last_seq > ?", (self.max_per_conv,)
        ):
            removed += tx.execute(
                "DELETE FROM events WHERE app = ? AND conv = ? AND kind = 'msg' AND seq <= ?",
                (app, conv, last_seq - self.max_per_conv),
            )
        return removed

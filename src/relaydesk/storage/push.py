"""Offline push: per-app webhook configuration, mutes and the dead-letter list (SQL).

See ``server/features/push.py`` for the rules and docs/protocol.md "Offline push
webhook" for the contract.  A mute row with ``conv = ''`` mutes the user entirely;
one naming a conversation is that conversation's do-not-disturb.
"""

from __future__ import annotations

import msgspec

from relaydesk.storage.engine import Tx

PUSH_MIGRATIONS = [
    """
    CREATE TABLE push_config (
        app TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        preview INTEGER NOT NULL DEFAULT 0,
        batch_ms INTEGER NOT NULL DEFAULT 1000,
        updated_at BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE push_mutes (
        app TEXT NOT NULL,
        user_id TEXT NOT NULL,
        conv TEXT NOT NULL,
        PRIMARY KEY (app, user_id, conv)
    )
    """,
    """
    CREATE TABLE push_dead_letters (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        attempts INTEGER NOT NULL,
        last_error TEXT NOT NULL,
        body TEXT NOT NULL
    )
    """,
    "CREATE INDEX push_dead_letters_app ON push_dead_letters (app, created_at)",
]


class PushConfig(msgspec.Struct, frozen=True):
    """One app's push webhook (``secret`` is never shown by the APIs)."""

    app: str
    url: str
    secret: str
    preview: bool
    batch_ms: int


class DeadLetter(msgspec.Struct, frozen=True):
    """A batch that exhausted its retries: kept for the operator."""

    id: str
    app: str
    created_at: int
    attempts: int
    last_error: str
    body: str


def put_config_tx(tx: Tx, config: PushConfig, now: int) -> None:
    tx.execute("DELETE FROM push_config WHERE app = ?", (config.app,))
    tx.execute(
        "INSERT INTO push_config (app, url, secret, preview, batch_ms, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (config.app, config.url, config.secret, int(config.preview), config.batch_ms, now),
    )


def delete_config_tx(tx: Tx, app: str) -> bool:
    return tx.execute("DELETE FROM push_config WHERE app = ?", (app,)) > 0


def configs_tx(tx: Tx) -> dict[str, PushConfig]:
    rows = tx.query("SELECT app, url, secret, preview, batch_ms FROM push_config")
    return {r[0]: PushConfig(r[0], r[1], r[2], bool(r[3]), int(r[4])) for r in rows}


def set_mutes_tx(tx: Tx, app: str, user: str, muted: bool, dnd: list[str]) -> None:
    """Replace ``user``'s mute and do-not-disturb conversations."""
    tx.execute("DELETE FROM push_mutes WHERE app = ? AND user_id = ?", (app, user))
    convs = ([""] if muted else []) + sorted(set(dnd))
    tx.executemany(
        "INSERT INTO push_mutes (app, user_id, conv) VALUES (?, ?, ?)",
        [(app, user, c) for c in convs],
    )


def mutes_tx(tx: Tx, app: str, users: list[str]) -> set[tuple[str, str]]:
    """``(user, conv)`` mute rows of ``users`` (``conv`` '' = muted entirely)."""
    if not users:
        return set()
    marks = ", ".join("?" for _ in users)
    rows = tx.query(
        f"SELECT user_id, conv FROM push_mutes WHERE app = ? AND user_id IN ({marks})",
        (app, *users),
    )
    return {(r[0], r[1]) for r in rows}


def add_dead_letter_tx(tx: Tx, letter: DeadLetter) -> None:
    tx.execute(
        "INSERT INTO push_dead_letters (id, app, created_at, attempts, last_error, body)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            letter.id,
            letter.app,
            letter.created_at,
            letter.attempts,
            letter.last_error,
            letter.body,
        ),
    )


def dead_letters_tx(tx: Tx, app: str, limit: int = 100) -> list[DeadLetter]:
    rows = tx.query(
        "SELECT id, app, created_at, attempts, last_error, body FROM push_dead_letters"
        " WHERE app = ? ORDER BY created_at DESC, id LIMIT ?",
        (app, limit),
    )
    return [DeadLetter(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5]) for r in rows]

"""Backups of the SQLite database with SQLite's online backup API.

``sqlite3.Connection.backup`` copies the database page by page while the server keeps
running: each step holds a read lock for a few pages only, and a write by the server
during the copy restarts the copy of the changed pages, so the result is a consistent
snapshot of one moment (WAL content included), never a torn file.  A plain ``cp`` of a
live WAL database is not.  PostgreSQL has its own tools (``pg_dump``; see
docs/operations.md "Backups").
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

import msgspec

#: Pages copied per step: small steps keep the server's writer waiting only briefly.
PAGES_PER_STEP: Final = 1024


class BackupError(Exception):
    """The backup or restore could not be made; nothing was changed."""


class BackupInfo(msgspec.Struct, frozen=True):
    """What a backup file holds: its size and the schema version of each component."""

    path: str
    bytes: int
    versions: dict[str, int]


def _versions(conn: sqlite3.Connection) -> dict[str, int]:
    try:
        rows = conn.execute("SELECT component, version FROM schema_versions").fetchall()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"not a relaydesk database: {exc}") from exc
    return {str(c): int(v) for c, v in rows}


def inspect(path: Path) -> BackupInfo:
    """Check a backup file (integrity and schema versions) without changing it."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()
        if ok is None or ok[0] != "ok":
            raise BackupError(f"{path}: integrity check failed: {ok}")
        versions = _versions(conn)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: {exc}") from exc
    finally:
        conn.close()
    return BackupInfo(path=str(path), bytes=path.stat().st_size, versions=versions)


def _copy(source: sqlite3.Connection, target_path: Path) -> None:
    target = sqlite3.connect(target_path)
    try:
        source.backup(target, pages=PAGES_PER_STEP)
    finally:
        target.close()


def backup_sqlite(database: Path, out: Path) -> BackupInfo:
    """Copy the live ``database`` to ``out`` (which must not exist yet)."""
    if not database.is_file():
        raise BackupError(f"{database}: no database here (wrong --data-dir?)")
    if out.exists():
        raise BackupError(f"{out} exists; choose a new file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        _copy(source, partial)
    except sqlite3.DatabaseError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"backup failed: {exc}") from exc
    finally:
        source.close()
    partial.rename(out)  # only a complete copy ever has the final name
    return inspect(out)


def restore_sqlite(backup: Path, database: Path) -> tuple[BackupInfo, Path | None]:
    """Replace ``database`` by ``backup`` (the server must be stopped).  The current
    database is first saved next to it as ``<name>.before-restore``; return the
    restored backup's info and that path (``None`` when there was no database)."""
    info = inspect(backup)
    saved: Path | None = None
    if database.is_file():
        saved = database.with_name(database.name + ".before-restore")
        saved.unlink(missing_ok=True)
        backup_sqlite(database, saved)
    database.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        _copy(source, database)  # through SQLite: its WAL and locks stay consistent
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"restore failed: {exc}") from exc
    finally:
        source.close()
    return info, saved

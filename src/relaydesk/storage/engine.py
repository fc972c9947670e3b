"""Database engine: blocking DB-API work on dedicated threads behind an async API.

Theory of operation
-------------------
All SQL in relaydesk runs inside functions ``fn(tx)`` handed to ``Database.write``
or ``Database.read``.  Writes run on a single writer thread, each call in its own
transaction (``BEGIN IMMEDIATE`` on SQLite), so stores never interleave partial
writes and group commit is simply "put many messages in one ``fn``".  Reads run on
a small pool of reader threads with their own connections; SQLite's WAL mode lets
them proceed while the writer commits.

Stores write portable SQL with ``?`` placeholders and ``RETURNING``; the engine is
the only place that knows the dialect (synapse-style).  :class:`Database` and
:class:`Tx` are the narrow interfaces stores and services see; this module holds the
SQLite implementation and ``storage/postgres.py`` the PostgreSQL one.  Where SQL must
differ (schema types, full-text search, the position lock), stores branch on
``tx.dialect`` and each component's migrations come per dialect.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")
Params = Sequence[Any]
Dialect = Literal["sqlite", "postgres"]


class StorageError(Exception):
    """The database refused or failed an operation."""


class Tx(Protocol):
    """The surface stores use inside a transaction (or a read snapshot)."""

    @property
    def dialect(self) -> Dialect:
        """``"sqlite"`` or ``"postgres"``: for the few statements that must differ."""
        ...

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per parameter row."""
        ...

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """All result rows."""
        ...

    def one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first result row, or None."""
        ...

    def scalar(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None."""
        ...

    def script(self, sql: str) -> None:
        """Run several ``;``-separated statements (migrations only)."""
        ...


class Database(Protocol):
    """An open database: a writer and a pool of readers behind an async API."""

    @property
    def dialect(self) -> Dialect: ...

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one write transaction; committed when this returns."""
        ...

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` against a consistent read snapshot."""
        ...

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Blocking variant for start-up, CLI tools and tests."""
        ...

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        """Blocking variant of :meth:`read`."""
        ...

    def migrate(self, component: str, steps: Sequence[str]) -> int:
        """Apply the not-yet-applied ``steps`` of ``component``; return its version."""
        ...

    async def aclose(self) -> None:
        """Close every connection (idempotent)."""
        ...

    def close_sync(self) -> None:
        """Blocking variant of :meth:`aclose`."""
        ...


def apply_migrations(tx: Tx, component: str, steps: Sequence[str]) -> int:
    """The body of ``migrate``: run the steps of ``component`` past its stored version."""
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions"
        " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    current = (
        tx.scalar("SELECT version FROM schema_versions WHERE component = ?", (component,)) or 0
    )
    for version, sql in enumerate(steps, start=1):
        if version > current:
            tx.script(sql)
    tx.execute(
        "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
        " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        (component, len(steps)),
    )
    return len(steps)


class SqliteTx:
    """:class:`Tx` over a :mod:`sqlite3` connection."""

    __slots__ = ("_conn",)
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._conn.executemany(sql, rows)

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
        return row

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def script(self, sql: str) -> None:
        """Run several ``;``-separated statements (migrations only)."""
        for statement in sql.split(";"):
            if statement.strip():
                self._conn.execute(statement)


class ReaderGauge(Protocol):
    """Wraps a read at submission to time its wait for a reader thread
    (``relaydesk.telemetry.saturation.PoolGauge``)."""

    def timed(self, fn: Callable[[], T]) -> Callable[[], T]: ...


class ThreadedEngine:
    """The async and blocking API both engines share: ``_run_write`` on the one writer
    thread, ``_run_read`` on the reader pool (each engine supplies those two)."""

    _writer: ThreadPoolExecutor
    _readers: ThreadPoolExecutor
    #: Set by the composition root: measures waits for a free reader (saturation).
    reader_gauge: ReaderGauge | None = None

    def _run_write(self, fn: Callable[[Tx], T]) -> T:
        raise NotImplementedError

    def _run_read(self, fn: Callable[[Tx], T]) -> T:
        raise NotImplementedError

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one write transaction; committed when this returns."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._run_write, fn)

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` against a consistent read snapshot."""
        run, gauge = functools.partial(self._run_read, fn), self.reader_gauge
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, gauge.timed(run) if gauge is not None else run
        )

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Blocking variant for start-up, CLI tools and tests."""
        return self._writer.submit(self._run_write, fn).result()

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        return self._readers.submit(self._run_read, fn).result()


class SqliteDatabase(ThreadedEngine):
    """:class:`Database` on a SQLite file: one writer thread, ``readers`` reader threads."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, path: str, *, sync: str = "full", readers: int = 4) -> None:
        self.path = path
        self._sync = sync
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="db-reader")
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._write_conn = self._writer.submit(self._connect, False).result()

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        if not read_only:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if self._sync == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        return conn

    # -- blocking bodies, run on the pools ------------------------------------

    def _run_write(self, fn: Callable[[Tx], T]) -> T:
        conn = self._write_conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(SqliteTx(conn))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _run_read(self, fn: Callable[[Tx], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(True)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(SqliteTx(conn))
        finally:
            conn.execute("COMMIT")

    def migrate(self, component: str, steps: Sequence[str]) -> int:
        """Apply the not-yet-applied ``steps`` of ``component``; return its version."""
        return self.write_sync(lambda tx: apply_migrations(tx, component, steps))

    async def aclose(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.close_sync)

    def close_sync(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._writer.submit(self._write_conn.close).result()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for banners and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + host
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # (urlunsplit would also turn sqlite:///x into sqlite:/x)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def open_database(url: str, *, sync: str = "full", readers: int = 4) -> Database:
    """Open the database named by ``url``: ``sqlite:///path`` or ``postgresql://...``
    (any libpq URI, e.g. ``postgresql://user@host:5432/db?options=-csearch_path%3Dx``).

    ``sync`` is ``"full"`` (every commit durable on disk before it returns) or
    ``"normal"`` (SQLite: WAL not fsynced per commit; PostgreSQL: ``synchronous_commit``
    off).  Raises :class:`StorageError` when the database cannot be opened.
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(path, sync=sync, readers=readers)
    if url.startswith(("postgresql://", "postgres://")):
        from relaydesk.storage.postgres import PostgresDatabase  # psycopg only when used

        return PostgresDatabase(url, sync=sync, readers=readers)
    raise StorageError(
        f"unsupported storage url {url!r}; expected sqlite:///path or postgresql://..."
    )

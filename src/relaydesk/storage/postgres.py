"""PostgreSQL engine: the :class:`~relaydesk.storage.engine.Database` surface over psycopg 3.

Theory of operation
-------------------
Same shape as the SQLite engine, so stores run unchanged: one writer connection on one
writer thread, each ``write`` call one ``READ COMMITTED`` transaction; ``readers``
reader threads, each with its own connection, each ``read`` call one ``REPEATABLE READ
READ ONLY`` transaction, i.e. one consistent snapshot, as a SQLite WAL reader sees.

Several relaydesk nodes may write the same database at once.  Statements that must
serialize across nodes take a row lock (``MessageStore.commit_batch_tx`` locks the
position counter); ``READ COMMITTED`` is what lets the statements after such a lock see
what the previous holder committed, where ``REPEATABLE READ`` would fail them with a
serialization error instead.

Stores write ``?`` placeholders.  :func:`to_pyformat` turns them into psycopg's ``%s``
(and a literal ``%`` into ``%%``), once per distinct SQL string.  Values are adapted so
results look like SQLite's: a Python ``bool`` parameter is stored as the integer 0/1
(the schemas keep flags in ``INTEGER`` columns), ``BYTEA`` comes back as ``bytes`` and a
whole ``NUMERIC`` (what ``SUM`` of integers returns) as ``int``.

A connection that breaks (the server restarted, the network dropped) is discarded: the
call that saw it fail raises :class:`StorageError`, and the next call connects again.
Nothing is retried automatically, since a failed ``COMMIT`` may or may not have landed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import IsolationLevel
from psycopg.abc import Buffer
from psycopg.adapt import Dumper, Loader
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from relaydesk.storage.engine import Params, StorageError, ThreadedEngine, Tx, apply_migrations

T = TypeVar("T")

#: Seconds to wait for a connection before the call fails (libpq waits forever by default).
CONNECT_TIMEOUT_S = 10


@lru_cache(maxsize=4096)
def to_pyformat(sql: str) -> str:
    """``?`` placeholders to ``%s``, literal ``%`` to ``%%``.

    A ``?`` inside a quoted string, a quoted identifier or a ``--`` comment is left as it
    is.  The cache is bounded: stores build a few hundred distinct statements at most.
    """
    out: list[str] = []
    quote = ""  # the quote character we are inside, if any
    comment = False
    for ch in sql:
        if ch == "%":
            out.append("%%")
            continue
        if comment:
            comment = ch != "\n"
        elif quote:
            if ch == quote:
                quote = ""  # a doubled quote simply re-enters on the next character
        elif ch in "'\"":
            quote = ch
        elif ch == "-" and out and out[-1] == "-":
            comment = True
        elif ch == "?":
            out.append("%s")
            continue
        out.append(ch)
    return "".join(out)


class _BoolAsInt(Dumper):
    """``True``/``False`` as the integers 1/0, as sqlite3 stores them."""

    oid = psycopg.adapters.types["int4"].oid

    def dump(self, obj: Any) -> Buffer:
        return b"1" if obj else b"0"


class _NumericAsNumber(Loader):
    """``NUMERIC`` as ``int`` when whole (``SUM`` of integers), else ``float``, like SQLite."""

    def load(self, data: Buffer) -> Any:
        text = bytes(data).decode()
        if text.lstrip("-").isdigit():
            return int(text)
        return float(text)


class PostgresTx:
    """:class:`~relaydesk.storage.engine.Tx` over a psycopg cursor."""

    __slots__ = ("_cur",)
    dialect: Literal["postgres"] = "postgres"

    def __init__(self, cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        self._cur.execute(to_pyformat(sql), params)
        return self._cur.rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._cur.executemany(to_pyformat(sql), rows)

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(to_pyformat(sql), params)
        return self._cur.fetchall()

    def one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        self._cur.execute(to_pyformat(sql), params)
        return self._cur.fetchone()

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def script(self, sql: str) -> None:
        """Run several ``;``-separated statements (migrations only) in one round trip.

        Sent as they are: no placeholders, and a ``%`` needs no escaping.
        """
        self._cur.execute(sql)


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except psycopg.Error:
        pass


def _abandon(conn: psycopg.Connection[Any]) -> bool:
    """Roll back after a failed call; ``True`` if the connection is unusable (and closed)."""
    if not conn.broken and not conn.closed:
        try:
            conn.rollback()
            return False
        except psycopg.Error:
            pass
    _close_quietly(conn)
    return True


class PostgresDatabase(ThreadedEngine):
    """:class:`~relaydesk.storage.engine.Database` on PostgreSQL."""

    dialect: Literal["postgres"] = "postgres"

    def __init__(self, url: str, *, sync: str = "full", readers: int = 4) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StorageError(f"invalid PostgreSQL url: {exc}") from exc
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        params.setdefault("application_name", "relaydesk")
        self._conninfo = make_conninfo("", **params)
        self._sync = sync
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pg-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="pg-reader")
        self._reader_conns: set[psycopg.Connection[Any]] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._write_conn: psycopg.Connection[Any] | None = None
        try:
            # Connect now, so a wrong url or an unreachable server fails at start-up.
            self._writer.submit(self._writer_connection).result()
        except BaseException:
            self._writer.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            raise

    def _connect(self, read_only: bool) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            conn.adapters.register_dumper(bool, _BoolAsInt)
            conn.adapters.register_loader("numeric", _NumericAsNumber)
            if read_only:
                conn.isolation_level = IsolationLevel.REPEATABLE_READ
                conn.read_only = True
            else:
                conn.isolation_level = IsolationLevel.READ_COMMITTED
                if self._sync != "full":
                    # "normal": a commit returns before its WAL record is flushed; a crash
                    # of the database server may lose the last fraction of a second.
                    conn.execute("SET synchronous_commit = off")
                    conn.commit()
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise StorageError(f"cannot set up a PostgreSQL connection: {exc}") from exc
        return conn

    def _writer_connection(self) -> psycopg.Connection[Any]:
        conn = self._write_conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                _close_quietly(conn)
            self._write_conn = None
            conn = self._write_conn = self._connect(read_only=False)
        return conn

    def _reader_connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            self._forget_reader(conn)
        conn = self._connect(read_only=True)
        self._local.conn = conn
        with self._lock:
            self._reader_conns.add(conn)
        return conn

    def _forget_reader(self, conn: psycopg.Connection[Any]) -> None:
        _close_quietly(conn)
        self._local.conn = None
        with self._lock:
            self._reader_conns.discard(conn)

    # -- blocking bodies, run on the pools ------------------------------------

    def _run_write(self, fn: Callable[[Tx], T]) -> T:
        conn = self._writer_connection()
        committing = False
        try:
            with conn.cursor() as cur:
                result = fn(PostgresTx(cur))
            committing = True
            conn.commit()
        except BaseException as exc:
            if _abandon(conn):
                self._write_conn = None
                if isinstance(exc, psycopg.Error):
                    outcome = " (the commit may or may not have landed)" if committing else ""
                    raise StorageError(
                        f"lost the PostgreSQL connection{outcome}: {exc}; the next call reconnects"
                    ) from exc
            raise
        return result

    def _run_read(self, fn: Callable[[Tx], T]) -> T:
        conn = self._reader_connection()
        try:
            with conn.cursor() as cur:
                result = fn(PostgresTx(cur))
            conn.rollback()  # read only: nothing to keep; ends the snapshot
        except BaseException as exc:
            if _abandon(conn):
                self._forget_reader(conn)
                if isinstance(exc, psycopg.Error):
                    raise StorageError(
                        f"lost the PostgreSQL connection: {exc}; the next call reconnects"
                    ) from exc
            raise
        return result

    def migrate(self, component: str, steps: Sequence[str]) -> int:
        """Apply the not-yet-applied ``steps`` of ``component``; return its version.

        Nodes starting together would race to create the same tables: a transaction-level
        advisory lock (per schema) makes the second wait and then find them done.
        """

        def run(tx: Tx) -> int:
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('relaydesk.migrate:'"
                " || coalesce(current_schema(), '')))"
            )
            return apply_migrations(tx, component, steps)

        return self.write_sync(run)

    async def aclose(self) -> None:
        if self._closed:
            return
        await asyncio.get_running_loop().run_in_executor(None, self.close_sync)

    def close_sync(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._write_conn is not None:
            _close_quietly(self._write_conn)
            self._write_conn = None
        with self._lock:
            for conn in self._reader_conns:
                _close_quietly(conn)
            self._reader_conns.clear()

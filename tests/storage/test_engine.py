"""The engine contract on both backends (types, snapshots, rollback) and what only the
PostgreSQL engine has to get right (placeholders, isolation levels, reconnecting)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pg import BASE_URL, ENGINES, open_test_database, pg_schema
from relaydesk.storage import Database, StorageError, Tx, open_database
from relaydesk.storage.engine import redact_url
from relaydesk.storage.postgres import to_pyformat

BLOB = {"sqlite": "BLOB", "postgres": "BYTEA"}


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as database:
        database.write_sync(
            lambda tx: tx.script(
                f"CREATE TABLE t (name TEXT PRIMARY KEY, n BIGINT, flag INTEGER,"
                f" x DOUBLE PRECISION, data {BLOB[database.dialect]})"
            )
        )
        yield database


def test_values_come_back_as_the_stores_expect(db: Database) -> None:
    def write(tx: Tx) -> int:
        tx.executemany(
            "INSERT INTO t (name, n, flag, x, data) VALUES (?, ?, ?, ?, ?)",
            [("a%1", 2**53, True, 0.1, b"\x00\xff"), ("b?", 1, False, 2.5, b"")],
        )
        return tx.execute("UPDATE t SET n = n + 1 WHERE name LIKE 'a%'")

    assert db.write_sync(write) == 1

    def read(tx: Tx) -> tuple[object, ...]:
        row = tx.one("SELECT SUM(n), COUNT(*), MAX(flag), SUM(x) FROM t")
        data = tx.scalar("SELECT data FROM t WHERE name = ?", ("a%1",))
        flags = tx.query(
            "SELECT flag FROM t WHERE name = '?' OR name LIKE ? ORDER BY name", ("b%",)
        )
        assert row is not None
        return (*row, data, flags, tx.dialect)

    total, count, flag, xs, data, flags, dialect = db.read_sync(read)
    assert dialect == db.dialect
    assert total == 2**53 + 2 and type(total) is int  # SUM of BIGINT is NUMERIC on PostgreSQL
    assert count == 2 and type(count) is int
    assert flag == 1 and type(flag) is int  # a bool parameter is stored as 0/1
    assert xs == pytest.approx(2.6) and type(xs) is float
    assert data == b"\x00\xff" and type(data) is bytes
    assert flags == [(0,)]


def test_a_read_sees_one_snapshot(db: Database) -> None:
    db.write_sync(lambda tx: tx.execute("INSERT INTO t (name) VALUES ('first')"))

    def read(tx: Tx) -> tuple[int, int]:
        before = int(tx.scalar("SELECT COUNT(*) FROM t"))
        # Another transaction commits while this read is open ...
        db.write_sync(lambda w: w.execute("INSERT INTO t (name) VALUES ('second')"))
        # ... and stays invisible to it.
        return before, int(tx.scalar("SELECT COUNT(*) FROM t"))

    assert db.read_sync(read) == (1, 1)
    assert db.read_sync(lambda tx: tx.scalar("SELECT COUNT(*) FROM t")) == 2


def test_a_failing_write_rolls_back_and_the_next_one_works(db: Database) -> None:
    def fail(tx: Tx) -> None:
        tx.execute("INSERT INTO t (name) VALUES ('lost')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.write_sync(fail)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        db.write_sync(lambda tx: tx.executemany("INSERT INTO t (name) VALUES (?)", [("x",)] * 2))
    db.write_sync(lambda tx: tx.execute("INSERT INTO t (name) VALUES ('kept')"))
    names = db.read_sync(lambda tx: tx.query("SELECT name FROM t ORDER BY name"))
    assert names == [("kept",)]


async def test_async_api_and_migrate(db: Database) -> None:
    steps = ["CREATE TABLE m1 (a INTEGER)", "CREATE TABLE m2 (b INTEGER); CREATE TABLE m3 (c TEXT)"]
    assert db.migrate("demo", steps[:1]) == 1
    assert db.migrate("demo", steps) == 2  # only the second step runs now
    assert db.migrate("demo", steps) == 2
    await db.write(lambda tx: tx.execute("INSERT INTO m3 (c) VALUES ('100%')"))
    assert await db.read(lambda tx: tx.scalar("SELECT c FROM m3 WHERE c LIKE '%!%%' ESCAPE '!'"))
    await db.aclose()
    await db.aclose()  # idempotent


def test_unsupported_and_unreachable_urls_raise_storage_error() -> None:
    with pytest.raises(StorageError, match="unsupported"):
        open_database("mysql://x")
    with pytest.raises(StorageError, match="cannot connect"):
        open_database("postgresql://127.0.0.1:1/nothing?connect_timeout=2")


# -- PostgreSQL specifics ------------------------------------------------------------------------


def test_placeholders_translate_outside_quotes_and_percent_is_escaped() -> None:
    assert to_pyformat("SELECT a FROM t WHERE b = ? AND c LIKE 'ch:%'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE 'ch:%%'"
    )
    assert to_pyformat("SELECT '?', \"q?\", 'it''s ?', ? -- why?\n, ?") == (
        "SELECT '?', \"q?\", 'it''s ?', %s -- why?\n, %s"
    )
    assert to_pyformat("SELECT 10 % 3, ?") == "SELECT 10 %% 3, %s"


def _terminate(pids: set[int]) -> None:
    with psycopg.connect(BASE_URL, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.services
def test_a_broken_connection_fails_one_call_and_the_next_reconnects() -> None:
    with pg_schema() as url:
        db = open_database(url, readers=1)
        try:
            pid = "SELECT pg_backend_pid()"
            writer = db.write_sync(lambda tx: tx.scalar(pid))
            reader = db.read_sync(lambda tx: tx.scalar(pid))
            _terminate({writer, reader})  # what a server restart does to them
            with pytest.raises(StorageError, match="lost the PostgreSQL connection"):
                db.write_sync(lambda tx: tx.scalar(pid))
            with pytest.raises(StorageError, match="lost the PostgreSQL connection"):
                db.read_sync(lambda tx: tx.scalar(pid))
            assert db.write_sync(lambda tx: tx.scalar(pid)) not in {writer, reader}
            assert db.read_sync(lambda tx: tx.scalar(pid)) not in {writer, reader}
            assert db.migrate("x", ["CREATE TABLE x (a INTEGER)"]) == 1  # fully usable again
        finally:
            db.close_sync()


@pytest.mark.services
def test_readers_use_repeatable_read_read_only_and_the_writer_read_committed() -> None:
    with pg_schema() as url:
        db = open_database(url, sync="normal")
        try:
            level = "SELECT current_setting('transaction_isolation'),"
            level += (
                " current_setting('transaction_read_only'), current_setting('synchronous_commit')"
            )
            assert db.read_sync(lambda tx: tx.one(level)) == ("repeatable read", "on", "on")
            assert db.write_sync(lambda tx: tx.one(level)) == ("read committed", "off", "off")
        finally:
            db.close_sync()


@pytest.mark.services
def test_nodes_migrating_at_once_do_not_collide() -> None:
    steps = ["CREATE TABLE a (x INTEGER)", "CREATE TABLE b (y INTEGER)"]
    with pg_schema() as url:
        dbs = [open_database(url) for _ in range(4)]
        try:
            results: list[object] = []
            threads = [
                threading.Thread(target=lambda d=d: results.append(d.migrate("c", steps)))
                for d in dbs
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results == [2, 2, 2, 2]
        finally:
            for d in dbs:
                d.close_sync()


def test_passwords_are_redacted_from_displayed_urls() -> None:
    assert redact_url("postgresql://relay:s3cr%40t@db:5432/rd?sslmode=require") == (
        "postgresql://relay:***@db:5432/rd?sslmode=require"
    )
    assert redact_url("postgresql://db/rd?user=relay&password=x&options=-csearch_path%3Da") == (
        "postgresql://db/rd?user=relay&password=***&options=-csearch_path%3Da"
    )
    assert redact_url("postgresql://relay@db/rd") == "postgresql://relay@db/rd"
    assert redact_url("sqlite:///var/relaydesk.db") == "sqlite:///var/relaydesk.db"

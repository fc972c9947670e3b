"""PostgreSQL for tests: a fresh schema per test, and fixtures run on both engines.

The server comes from ``RELAYDESK_TEST_POSTGRES_URL`` (default: the local one CI starts,
``postgresql://127.0.0.1:5432/test`` as the current OS user).  Each test gets its own
schema ``rd_<random>``, reached through libpq's ``options=-csearch_path=...`` in the URL,
and dropped afterwards, so tests never see each other's tables.

PostgreSQL tests carry the ``services`` mark.  Under ``CI=true`` an unreachable server
fails them; elsewhere they skip with the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from relaydesk.storage import Database, open_database

BASE_URL = os.environ.get("RELAYDESK_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")

#: Parameters for a fixture that runs its tests on both engines.
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.services)]

_unreachable: list[str] = []  # the reason, once a connection attempt has failed


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    if _unreachable:
        _missing(_unreachable[0])
    try:
        return psycopg.connect(BASE_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _unreachable.append(f"PostgreSQL at {BASE_URL} unreachable: {exc}".strip())
        _missing(_unreachable[0])
        raise  # not reached


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true must run the PostgreSQL tests", pytrace=False)
    pytest.skip(reason)


def schema_url(schema: str) -> str:
    """``BASE_URL`` with ``schema`` as the only schema on the search path."""
    sep = "&" if "?" in BASE_URL else "?"
    return f"{BASE_URL}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """Create a fresh schema; yield a URL whose connections use it; drop it afterwards."""
    name = f"rd_{secrets.token_hex(6)}"
    with _admin() as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield schema_url(name)
    finally:
        with _admin() as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


@contextmanager
def open_test_database(engine: str, tmp_path: Path) -> Iterator[Database]:
    """An empty database on ``engine`` (``sqlite``: a file under ``tmp_path``)."""
    if engine == "sqlite":
        db = open_database(f"sqlite:///{tmp_path / 'test.db'}")
        try:
            yield db
        finally:
            db.close_sync()
        return
    with pg_schema() as url:
        db = open_database(url)
        try:
            yield db
        finally:
            db.close_sync()

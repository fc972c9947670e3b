"""Fixtures of the multi-node tests: a fresh PostgreSQL schema and the machine's NATS."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from pg import pg_schema

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def nats_url() -> str:
    """The local NATS server; skipped when absent, except under CI=true (a failure)."""
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as exc:
        message = f"NATS is not reachable at {NATS_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true must run the cluster tests", pytrace=False)
        pytest.skip(message)
    return NATS_URL


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of an empty PostgreSQL schema, dropped after the test (tests/pg.py)."""
    with pg_schema() as url:
        yield url

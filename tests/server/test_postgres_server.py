"""A real ``relaydesk serve`` on PostgreSQL: every component migrates and seeds its schema
there, and a message sent by one SDK client reaches another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest

import relaydesk
from pg import pg_schema
from relaydesk.client import Message, ReconnectPolicy

pytestmark = pytest.mark.services


@pytest.fixture
def pg_url() -> Iterator[str]:
    # Requested before make_server, so the schema outlives the server's teardown.
    with pg_schema() as url:
        yield url


async def _next_message(events: AsyncIterator[Any]) -> Message:
    async with asyncio.timeout(10):
        async for event in events:
            if isinstance(event, Message):
                return event
    raise AssertionError("event stream ended")


async def test_a_message_crosses_a_server_running_on_postgres(
    pg_url: str, make_server: Callable[..., Any]
) -> None:
    server = make_server({"storage": {"url": pg_url}})
    fast = ReconnectPolicy(base_s=0.05, max_s=0.5)

    def connect(user: str, device: str) -> Any:
        token = server.token(user, channels={"ops": "owner"})
        return relaydesk.connect(server.ws_url, token, device=device, reconnect=fast)

    async with connect("alice", "a1") as alice, connect("bob", "b1") as bob:
        bob_events = bob.events()
        receipt = await alice.send("user:bob", "hello over postgres")
        got = await _next_message(bob_events)
        assert (got.sender, got.text, got.conv, got.seq) == (
            "alice",
            "hello over postgres",
            receipt.conv,
            receipt.seq,
        )
        await bob.join("ops")
        await alice.join("ops")
        await alice.send("channel:ops", "channel too")
        assert (await _next_message(bob_events)).text == "channel too"
    server.stop()

    # The node really used the database (not its data directory's SQLite file).
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT conv, sender, body FROM events WHERE kind = 'msg'").fetchall()
        components = dict(conn.execute("SELECT component, version FROM schema_versions"))
    assert ("dm:alice:bob", "alice", b"hello over postgres") in rows
    assert set(components) >= {"messaging", "telemetry", "desk", "knowledge"}

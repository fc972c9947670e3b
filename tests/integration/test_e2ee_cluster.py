"""Encrypted conversations across two nodes on PostgreSQL + NATS: five devices read
everything, and neither the database nor the bus ever carries a test plaintext."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster_kit import cluster_config

from client.e2ee_kit import e2ee_server, next_content, open_device
from relaydesk.client import Message

pytestmark = [pytest.mark.services, pytest.mark.slow]

SECRETS = [b"pg nats peer 5b1e", b"pg nats channel 77fa", b"pg nats reply 0d93"]


def scan_postgres(pg_url: str) -> list[bytes]:
    """Every test plaintext found in any column of any table of the test schema."""
    found: list[bytes] = []
    with psycopg.connect(pg_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        ]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    found += [s for s in SECRETS if s in raw]
    return found


async def test_five_devices_on_two_nodes_and_only_ciphertext_in_postgres_and_on_nats(
    make_server: Callable[..., Any], pg_url: str, nats_url: str
) -> None:
    n1 = e2ee_server(make_server, **cluster_config(pg_url, nats_url, "n1", leader=True))
    n2 = e2ee_server(make_server, **cluster_config(pg_url, nats_url, "n2", leader=False))
    n1.add_members(["alice", "bob"], channel="room")
    bus = await nats.connect(nats_url)
    wire: list[bytes] = []

    async def tap(msg: Any) -> None:
        wire.append(bytes(msg.data))

    await bus.subscribe(">", cb=tap)
    try:
        async with AsyncExitStack() as stack:
            alices = [await open_device(stack, n1, "alice", f"a{i}") for i in range(2)]
            bobs = [await open_device(stack, n2, "bob", f"b{i}") for i in range(3)]
            feeds = {d.client.device: d.events() for d in [*alices, *bobs]}
            await alices[0].send("user:bob", SECRETS[0])
            await alices[0].send("channel:room", SECRETS[1])
            for d in [alices[1], *bobs]:
                got = [await next_content(feeds[d.client.device], 30) for _ in range(2)]
                assert [getattr(m, "body", m) for m in got] == SECRETS[:2]
            await bobs[2].send("channel:room", SECRETS[2])
            for d in [*alices, bobs[0], bobs[1]]:
                m = await next_content(feeds[d.client.device], 30)
                assert isinstance(m, Message) and m.body == SECRETS[2]
        await bus.flush()
    finally:
        await bus.close()
    assert any(b"rd.megolm.v1" in w for w in wire)  # the bus carried the ciphertext
    assert [s for s in SECRETS for w in wire if s in w] == []
    assert scan_postgres(pg_url) == []

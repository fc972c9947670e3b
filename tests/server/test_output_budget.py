"""A client that stops reading is closed with SLOW_READER and the memory comes back.

The audit's case (#10, #11): a client sending ``history_q`` and never reading took the
server from 134 MB to 1.5 GB in 11 s, because only live events counted against the
per-connection output budget.  Here a raw client that never reads sends one kind of
request in a loop; every kind of reply must count, the server's RSS (read from
/proc/<pid>/status of the server subprocess) must stay bounded, the connection must
be closed with 4042 (docs/protocol.md §8.1), and the node must serve others after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from raw_client import NonReader, Raw

from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import (
    Ack,
    Hello,
    HistoryQuery,
    Join,
    Ping,
    PresenceQuery,
    Publish,
)

BUDGET = 64 * 1024
BODY = 30_000
CONFIG = {
    "gateway": {
        "send_queue_bytes": BUDGET,
        "publish_rate": 1000,
        "publish_burst": 1000,
        "reply_drain_timeout_ms": 1000,
    },
}
# Growth of the server's RSS allowed while the non-reader runs (the old code grew by
# about 130 MB per second of history_q; a bounded one stays within a few MB).
RSS_GROWTH_MAX = 40 * 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def seeded(make_module_server: Callable[..., Any]) -> Any:
    """One node with 60 messages of 30 KB in dm:alice:bob (history pages are big)."""
    server = make_module_server(CONFIG, name="budget")

    async def seed() -> None:
        alice = await Raw.login(server.ws_url, server.token("alice"))
        for i in range(60):
            await alice.send(Publish(id=f"big{i}", to="user:bob", body=bytes([65 + i % 26]) * BODY))
        for _ in range(60):
            await alice.expect("puback")
        await alice.aclose()

    asyncio.run(seed())
    yield server
    server.stop()


def _requests(kind: str) -> Callable[[int], list[Any]]:
    """Frames for one round of the loop, per kind of reply under test."""
    users = [f"u{i}" for i in range(500)]
    rounds: dict[str, Callable[[int], list[Any]]] = {
        "history": lambda n: [HistoryQuery(rid=n, conv="user:alice", limit=50)],
        "presence_state": lambda n: [PresenceQuery(rid=n, users=users)],
        "pong": lambda n: [Ping(ts=n) for _ in range(200)],
        "error": lambda n: [Ack(pos=10**12 + n) for _ in range(200)],  # ack beyond sent
        "joined": lambda n: [Join(rid=n, channel="budget") for _ in range(100)],
    }
    return rounds[kind]


@pytest.mark.parametrize("kind", ["history", "presence_state", "pong", "error", "joined"])
async def test_a_client_that_stops_reading_is_closed_and_memory_stays_bounded(
    seeded: Any, kind: str
) -> None:
    server = seeded
    pid = server.proc.pid
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:

        async def connections() -> int:
            return int((await http.get("/readyz")).json()["connections"])

        before_conns = await connections()
        start_rss = peak = rss(pid)
        token = server.token("bob", channels={"budget": "owner"})
        client = await NonReader.open(server.ws_url)
        # A cursor past the end: no catch-up, so only the replies under test flow.
        await client.send(Hello(token=token, device=f"nr-{kind}", cursor=2**62))
        make = _requests(kind)
        deadline = time.monotonic() + 30
        n = 0
        closed_by_server = False
        while time.monotonic() < deadline:
            try:
                for frame in make(n):
                    await client.send(frame)
            except ConnectionError:
                closed_by_server = True
                break
            n += 1
            peak = max(peak, rss(pid))
            if n % 5 == 0:
                await asyncio.sleep(0.02)
                if await connections() == before_conns:
                    closed_by_server = True
                    break
        assert closed_by_server, f"still open after {client.sent} {kind} requests"
        code = await client.drain()
        assert code == ErrorCode.SLOW_READER, (kind, code)
        assert peak - start_rss < RSS_GROWTH_MAX, (kind, peak - start_rss)
        # The node is healthy and serves a reading client at once.
        raw = await Raw.login(server.ws_url, server.token("alice"), device="after")
        await raw.send(Ping(ts=7))
        assert (await raw.expect("pong")).ts == 7
        await raw.aclose()
        await asyncio.sleep(0.3)
        assert await connections() == before_conns


async def test_a_slow_but_reading_client_is_paced_not_closed(seeded: Any) -> None:
    """Thirty history pages asked at once are several times the output budget; a client
    that reads them slowly gets them all: the gateway stops reading its requests while
    the replies wait (backpressure) instead of closing it."""
    server = seeded
    raw = await Raw.login(server.ws_url, server.token("bob"), device="slow", cursor=2**62)
    for rid in range(30):
        await raw.send(HistoryQuery(rid=rid, conv="user:alice", limit=50))
    rids = []
    while len(rids) < 30:
        await asyncio.sleep(0.03)  # a slow link
        rids.append((await raw.expect("history", timeout=10)).rid)
    assert rids == list(range(30))
    await raw.send(Ping(ts=9))
    assert (await raw.expect("pong")).ts == 9
    await raw.aclose()

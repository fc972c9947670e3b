"""The SDK paces its outbox to the server's publish rate (docs/protocol.md §5.2, §8.1).

An SDK that filed 2,000 messages while the server was down used to resend them as
fast as pubacks came back: past the server's burst it collected hundreds of
RATE_LIMITED (4040) replies, and the retries could overtake each other in the
channel (issue 10).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import relaydesk
from relaydesk.client import ConnectionState, ReconnectPolicy

N = 2000
FAST = ReconnectPolicy(base_s=0.05, max_s=0.5)


@pytest.mark.slow
async def test_outbox_of_2000_after_a_restart_is_paced_and_stays_in_order(
    running_server: Any,
) -> None:
    srv = running_server
    token = srv.token("alice", channels={"room": "owner"})
    async with relaydesk.connect(srv.ws_url, token, device="a1", reconnect=FAST) as alice:
        await alice.join("room")
        srv.kill()
        sends = [asyncio.ensure_future(alice.send("channel:room", f"m{i}")) for i in range(N)]
        await asyncio.sleep(0.2)
        assert alice.statistics().outbox == N
        srv.start()
        receipts = await asyncio.wait_for(asyncio.gather(*sends), 60)
        stats = alice.statistics()
        # At the documented 500/s (welcome.publish_rate), a handful of refusals at most.
        assert stats.rate_limited <= 5, stats
        assert stats.paced > 0
        assert alice.state in (ConnectionState.CONNECTED, ConnectionState.SYNCED)
        # The channel holds them once each, in the order they were sent.
        assert [r.seq for r in receipts] == sorted(r.seq for r in receipts)
        bodies: list[str] = []
        after = 0
        while True:
            page = await alice.history("channel:room", after=after, limit=500)
            bodies += [m.body.decode() for m in page.messages]
            if not page.more:
                break
            after = page.messages[-1].seq
        assert bodies == [f"m{i}" for i in range(N)]

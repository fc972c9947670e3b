"""A slow consumer is served from storage: bounded memory, nothing lost, nobody slowed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from raw_client import Raw

from relaydesk.protocol.frames import Join, Publish

SMALL_QUEUE = {
    "gateway": {
        "send_queue_items": 20,
        "send_queue_bytes": 64 * 1024,
        "catchup_page": 50,
        "publish_rate": 100_000,
        "publish_burst": 100_000,
    },
}
N = 2000
BODY = b"x" * 1500


async def test_slow_consumer_catches_up_in_order_without_slowing_others(
    make_server: Callable[..., Any],
) -> None:
    srv = make_server(SMALL_QUEUE)
    grants = {"room": "owner"}
    pub = await Raw.login(srv.ws_url, srv.token("pub", channels=grants))
    fast = await Raw.login(srv.ws_url, srv.token("fast", channels=grants))
    # The slow client's library stops reading after a few frames: TCP backpressure
    # reaches the server, whose per-connection queue then overflows.
    slow = await Raw.open(srv.ws_url, max_queue=2)
    from relaydesk.protocol.frames import Hello

    await slow.send(Hello(token=srv.token("slow", channels=grants), device="s1"))
    for raw in (pub, fast):
        await raw.send(Join(rid=1, channel="room"))
        await raw.expect("joined")
    await slow.send(Join(rid=1, channel="room"))
    await asyncio.sleep(0.3)

    async def publish() -> None:
        for i in range(N):
            await pub.send(Publish(id=f"m{i}", to="channel:room", body=BODY))

    async def drain_fast() -> None:
        def count() -> int:
            return sum(1 for e in fast.events if e.kind == "msg" and e.sender == "pub")

        while count() < N:
            await fast.recv(20)

    await asyncio.gather(publish(), drain_fast())
    # The fast subscriber has everything while the slow one has read almost nothing,
    # and the server has dropped the slow one's queue at least once.
    import httpx

    ready = httpx.get(srv.http_url + "/readyz").json()
    assert ready["slow_consumer_resyncs"] >= 1
    await asyncio.sleep(0.5)
    msgs = []
    while len(msgs) < N:
        await slow.recv(20)
        msgs = [e for e in slow.events if e.kind == "msg" and e.sender == "pub"]
    assert [e.id for e in msgs] == [f"m{i}" for i in range(N)]
    positions = [e.pos for e in slow.events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

"""The NATS bus: commit records go out on one subject per app (positions are per app),
messages about the nodes on another, and a node receives both."""

from __future__ import annotations

import asyncio
import secrets

import nats

from relaydesk.server.cluster import NatsBus


async def test_commits_travel_on_their_apps_subject(nats_url: str) -> None:
    cluster = f"t{secrets.token_hex(4)}"
    bus = NatsBus(nats_url, cluster, "n1")
    got: list[bytes] = []
    await bus.start(got.append)
    watcher = await nats.connect(nats_url)
    try:
        seen: list[tuple[str, bytes]] = []

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            seen.append((msg.subject, msg.data))

        await watcher.subscribe(f"relaydesk.{cluster}.>", cb=on_msg)
        await watcher.flush()
        await bus.publish(b"commit-a", "app.one")
        await bus.publish(b"commit-b", "two")
        await bus.publish(b"presence")
        # Generous: on a loaded CI machine another connection's callbacks can lag by
        # seconds; a pass returns as soon as both saw all three.
        deadline = asyncio.get_running_loop().time() + 15
        while asyncio.get_running_loop().time() < deadline:
            if len(got) == 3 and len(seen) == 3:
                break
            await asyncio.sleep(0.01)
        assert watcher.is_connected, watcher.last_error
        assert sorted(got) == [b"commit-a", b"commit-b", b"presence"]
        assert sorted(seen) == [
            (f"relaydesk.{cluster}.commits.app~one", b"commit-a"),
            (f"relaydesk.{cluster}.commits.two", b"commit-b"),
            (f"relaydesk.{cluster}.nodes", b"presence"),
        ]
    finally:
        await watcher.close()
        await bus.aclose()

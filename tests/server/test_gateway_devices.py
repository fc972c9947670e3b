"""One live connection per device: the newest login wins (docs/protocol.md §3.5)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raw_client import Raw

from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import Ack, Ping, PresenceQuery, Publish


async def test_a_second_login_of_the_same_device_replaces_the_first(
    make_server: Callable[..., Any],
) -> None:
    server = make_server()
    old = await Raw.login(server.ws_url, server.token("alice"), device="laptop")
    other = await Raw.login(server.ws_url, server.token("alice"), device="phone")
    bob = await Raw.login(server.ws_url, server.token("bob"), device="b1")
    await bob.send(Publish(id="m1", to="user:alice", body=b"hi"))
    await bob.expect("puback")
    await old.events_until(1)
    pos = old.events[-1].pos
    await old.send(Ack(pos=pos))
    await asyncio.sleep(0.1)

    new = await Raw.login(server.ws_url, server.token("alice"), device="laptop")
    err = await old.expect("error")
    assert err.code == ErrorCode.DEVICE_REPLACED
    assert (await old.closed())[0] == ErrorCode.DEVICE_REPLACED
    # The replacing connection resumed from the cursor the replaced one acknowledged.
    assert new.frames[0].cursor >= pos
    await new.send(Ping(ts=1))
    assert (await new.expect("pong")).ts == 1
    # Other devices of the user are untouched; presence counts devices, not sockets.
    await other.send(Ping(ts=2))
    assert (await other.expect("pong")).ts == 2
    await bob.send(PresenceQuery(rid=1, users=["alice"]))
    state = await bob.expect("presence_state")
    assert state.users[0].online and state.users[0].devices == 2
    # The replaced connection's end did not take the device offline.
    await other.aclose()
    await asyncio.sleep(0.2)
    await bob.send(PresenceQuery(rid=2, users=["alice"]))
    state = await bob.expect("presence_state")
    assert state.users[0].online and state.users[0].devices == 1


class _AsgiClient:
    """One connection driven straight through a gateway's ASGI handler (no socket)."""

    def __init__(self, gateway: Any) -> None:
        from relaydesk.protocol.codec import client_codec
        from relaydesk.protocol.frames import SUBPROTOCOL_JSON

        self.codec = client_codec(SUBPROTOCOL_JSON)
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        scope = {"type": "websocket", "subprotocols": [SUBPROTOCOL_JSON], "client": ("t", 1)}
        self.task = asyncio.create_task(gateway.handle(scope, self.inbox.get, self._send))
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            await self.frames.put(self.codec.decode(message["text"]))
        elif message["type"] == "websocket.close" and not self.closed.done():
            self.closed.set_result(message["code"])
            await self.inbox.put({"type": "websocket.disconnect", "code": message["code"]})

    def send(self, frame: Any) -> None:
        self.inbox.put_nowait(
            {"type": "websocket.receive", "text": self.codec.encode(frame).decode()}
        )

    async def expect(self, tag: str) -> Any:
        while True:
            frame = await asyncio.wait_for(self.frames.get(), 5)
            if type(frame).__struct_config__.tag == tag:
                return frame


async def test_the_newest_login_wins_across_cluster_nodes(tmp_path: Path) -> None:
    """Two nodes on one database and bus: the device logs in on node a, then on node b;
    a closes its connection with 4005 when b's claim arrives over the bus."""
    import time

    from test_cluster_hubs import make_cluster

    from relaydesk.clock import SystemClock
    from relaydesk.protocol.frames import Hello
    from relaydesk.protocol.tokens import mint_token
    from relaydesk.server.gateway.gateway import Gateway
    from relaydesk.server.storage_setup import DEMO_APP, DEMO_SECRET

    async with make_cluster(tmp_path) as (hub_a, hub_b, _broker):
        gate_a = Gateway(hub_a, hub_a.settings, SystemClock())
        gate_b = Gateway(hub_b, hub_b.settings, SystemClock())
        token = mint_token(DEMO_APP, DEMO_SECRET, "alice", now=time.time())
        first = _AsgiClient(gate_a)
        first.send(Hello(token=token, device="laptop"))
        await first.expect("welcome")
        other_device = _AsgiClient(gate_a)
        other_device.send(Hello(token=token, device="phone"))
        await other_device.expect("welcome")
        await asyncio.sleep(0.01)  # login times differ by at least a millisecond
        second = _AsgiClient(gate_b)
        second.send(Hello(token=token, device="laptop"))
        await second.expect("welcome")
        assert (await first.expect("error")).code == ErrorCode.DEVICE_REPLACED
        assert await asyncio.wait_for(first.closed, 5) == ErrorCode.DEVICE_REPLACED
        second.send(Ping(ts=3))
        assert (await second.expect("pong")).ts == 3
        other_device.send(Ping(ts=4))  # another device of the user is untouched
        assert (await other_device.expect("pong")).ts == 4
        assert not second.closed.done()
        for client in (second, other_device):
            client.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(asyncio.gather(first.task, second.task, other_device.task), 5)

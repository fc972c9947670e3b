"""One live connection per device: the newest login wins (docs/protocol.md §3.5)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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

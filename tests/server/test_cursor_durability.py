"""The stored device cursor survives ``kill -9`` within its documented bound
(docs/protocol.md §5.3): an ack is stored with the next group commit, so once a
publish sent after the ack on the same connection has its ``puback``, the ack is
durable.  Before, acks waited for a separate flush every 0.5 s and a crash lost
hundreds to thousands of positions (issue 10)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from raw_client import Raw

from relaydesk.protocol.frames import Ack, Hello, Publish

ROUNDS = 3


@pytest.mark.slow
async def test_ack_is_durable_once_a_later_publish_is_acknowledged(
    make_server: Callable[..., Any],
) -> None:
    srv = make_server()
    sent = 0
    for round_ in range(ROUNDS):
        bob = await Raw.login(srv.ws_url, srv.token("bob"), device="b1")
        alice = await Raw.login(srv.ws_url, srv.token("alice"), device="a1")
        ids = set()
        for _ in range(20):
            ids.add(f"b{sent}")
            await bob.send(Publish(id=f"b{sent}", to="user:alice", body=b"hi"))
            sent += 1
        while len(mine := [e for e in alice.events if e.id in ids]) < 20:
            await alice.recv()
        acked = mine[-1].pos
        await alice.send(Ack(pos=acked))
        # A publish after the ack, on the same connection: its puback means the
        # group commit that stored the ack has landed.
        await alice.send(Publish(id=f"a{round_}", to="user:bob", body=b"ok"))
        puback = await alice.expect("puback")
        assert puback.pos > acked
        srv.kill()  # SIGKILL right away: nothing else gets a chance to flush
        srv.start()
        again = await Raw.open(srv.ws_url)
        await again.send(Hello(token=srv.token("alice"), device="a1"))  # no cursor
        welcome = await again.expect("welcome")
        assert welcome.cursor == acked, (round_, welcome.cursor, acked)
        # Nothing at or below the ack is delivered again.
        await again.expect("synced")
        assert all(e.pos > acked for e in again.events)
        await again.aclose()
        await asyncio.sleep(0)

"""A console live token is confined (docs/protocol.md §2.2): a customer's browser may
use its own ticket's channels only; it cannot message agents or another
organisation's contacts, nor learn whether they are online (audit #10)."""

from __future__ import annotations

import asyncio
from contextlib import closing
from typing import Any

from console_kit import ConsoleNode, sign_in
from websockets.asyncio.client import connect

from relaydesk.protocol.codec import client_codec
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import (
    SUBPROTOCOL_JSON,
    Hello,
    Join,
    PresenceQuery,
    Publish,
)

CODEC = client_codec(SUBPROTOCOL_JSON)


async def _reply(ws: Any, frame: Any) -> Any:
    await ws.send(CODEC.encode(frame).decode())
    while True:
        got = CODEC.decode(await asyncio.wait_for(ws.recv(), 5))
        tag = type(got).__struct_config__.tag
        if tag in ("error", "joined", "puback", "presence_state"):
            return got


async def test_a_customers_live_token_reaches_only_its_own_ticket(
    console_node: ConsoleNode,
) -> None:
    customer, csrf = sign_in(console_node, "dana@acme.example")
    with closing(customer):
        r = customer.post("/console/live-token?ticket=3", headers={"X-CSRF-Token": csrf})
        token = r.json()["token"]
    url = console_node.url.replace("http", "ws", 1) + "/v1/ws"
    async with connect(url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
        await ws.send(CODEC.encode(Hello(token=token, device="scope-test")).decode())
        assert type(CODEC.decode(await ws.recv())).__struct_config__.tag == "welcome"
        joined = await _reply(ws, Join(rid=1, channel="desk-t-3"))
        assert joined.channel == "desk-t-3"
        for frame in (
            Publish(id="x1", to="user:agent.alice", body=b"psst"),
            Publish(id="x2", to="user:customer.zoe", body=b"hello other tenant"),
            PresenceQuery(rid=2, users=["agent.alice"]),
            PresenceQuery(rid=3, users=["customer.zoe"]),
            Join(rid=4, channel="desk-queue"),
            Join(rid=5, channel="desk-t-1"),
        ):
            err = await _reply(ws, frame)
            assert err.code == ErrorCode.FORBIDDEN, frame

"""The SDK leaves a draining node as soon as it is told to (docs/protocol.md §3.6).

A draining node sends ``moved`` (where to go), ``error{4061}`` and then its close.
The close can come late: a slow or jittery path, a loaded node finishing the login
it was in when the drain began.  The SDK must not wait for it: once ``moved`` and the
error are in, it reconnects to the hinted node.  The draining node here is a bare
WebSocket server that sends the two frames and then holds the connection open."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

import relaydesk
from relaydesk.client import ReconnectPolicy
from relaydesk.protocol.codec import server_codec
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import SUBPROTOCOL_MSGPACK, Error, Moved


async def test_moved_and_4061_send_the_client_to_the_hint_without_waiting_for_the_close(
    make_server: Callable[..., Any],
) -> None:
    target = make_server()
    codec = server_codec(SUBPROTOCOL_MSGPACK)
    held: list[ServerConnection] = []

    async def draining(ws: ServerConnection) -> None:
        held.append(ws)
        await ws.recv()  # the hello
        for frame in (
            Moved(reason="maintenance", urls=[target.ws_url]),
            Error(code=int(ErrorCode.SERVER_DRAINING), msg="maintenance"),
        ):
            await ws.send(codec.encode(frame))
        await ws.wait_closed()  # never closes first: the client must not wait for it

    async with serve(
        draining,
        "127.0.0.1",
        0,
        subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
    ) as node:
        port = node.sockets[0].getsockname()[1]
        started = time.monotonic()
        async with relaydesk.connect(
            f"ws://127.0.0.1:{port}/v1/ws",
            target.token("alice"),
            device="phone",
            reconnect=ReconnectPolicy(base_s=5.0, max_s=5.0),
        ) as client:
            took = time.monotonic() - started
            assert client.node_url == target.ws_url
            receipt = await client.send("user:bob", "hello from the new node")
            assert receipt.pos > 0
        assert held, "the client never tried the draining node"
        assert took < 5.0, f"on the hinted node after {took:.1f} s: {client.connection_log}"
        log = [(e.kind, e.code) for e in client.connection_log]
        assert ("close", int(ErrorCode.SERVER_DRAINING)) in log, log

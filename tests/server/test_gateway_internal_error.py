"""A storage failure while handling a frame: INTERNAL for that request, connection kept.

Unit test of the gateway shell, driven in-process through its ASGI interface with a
real hub on a real SQLite file, whose history read is made to fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from relaydesk.clock import SystemClock
from relaydesk.config import load_settings
from relaydesk.protocol.codec import client_codec
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import (
    SUBPROTOCOL_JSON,
    Error,
    Hello,
    HistoryQuery,
    Ping,
    Pong,
    Synced,
)
from relaydesk.protocol.tokens import mint_token
from relaydesk.server.gateway.gateway import Gateway
from relaydesk.server.routing.hub import Hub
from relaydesk.server.storage_setup import DEMO_APP, DEMO_SECRET, open_messaging_storage


class FailingHistoryHub(Hub):
    async def history(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("disk I/O error")


async def test_storage_failure_is_internal_and_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(None, {"server": {"data_dir": str(tmp_path)}, "demo": True}, {})
    clock = SystemClock()
    db, store = open_messaging_storage(settings, clock)
    hub = FailingHistoryHub(db, store, settings, clock)
    await hub.start()
    gateway = Gateway(hub, settings, clock)
    codec = client_codec(SUBPROTOCOL_JSON)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            await outbox.put(codec.decode(message["text"]))

    def frame(f: Any) -> dict[str, Any]:
        return {"type": "websocket.receive", "text": codec.encode(f).decode()}

    async def expect(kind: type) -> Any:
        while True:
            got = await asyncio.wait_for(outbox.get(), 5)
            if isinstance(got, kind):
                return got

    scope = {
        "type": "websocket",
        "path": "/v1/ws",
        "subprotocols": [SUBPROTOCOL_JSON],
        "client": ("127.0.0.1", 1),
    }
    await inbox.put({"type": "websocket.connect"})
    handler = asyncio.create_task(gateway.handle(scope, receive, send))
    token = mint_token(DEMO_APP, DEMO_SECRET, "alice", now=time.time())
    await inbox.put(frame(Hello(token=token, device="d1")))
    await expect(Synced)
    await inbox.put(frame(HistoryQuery(rid=9, conv="dm:alice:bob")))
    err = await expect(Error)
    assert (err.code, err.rid) == (ErrorCode.INTERNAL, 9)
    await inbox.put(frame(Ping(ts=5)))  # the connection is still served
    assert (await expect(Pong)).ts == 5
    # A failure per frame must not write a traceback per frame: the audit saw 4,500
    # log lines for 500 frames.  Every request is still answered with INTERNAL.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="relaydesk.gateway"):
        for rid in range(10, 110):
            await inbox.put(frame(HistoryQuery(rid=rid, conv="dm:alice:bob")))
        answered = [(await expect(Error)) for _ in range(100)]
    assert [(e.code, e.rid) for e in answered] == [(ErrorCode.INTERNAL, r) for r in range(10, 110)]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) <= 1, [r.getMessage() for r in tracebacks]
    assert gateway.stats["defects"] == 101
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(handler, 5)
    await hub.aclose()
    await db.aclose()

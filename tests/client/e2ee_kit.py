"""Encrypted SDK clients against a real node (tests/client/test_encrypted_*.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import relaydesk
from relaydesk.client import Message, ReconnectPolicy
from relaydesk.client.crypto import EncryptedClient, SecureEvent, Undecryptable, open_encrypted
from relaydesk.e2ee import MemoryKeyStore


def e2ee_server(make_server: Any, mode: str = "e2ee", **sections: Any) -> Any:
    """A node whose demo app was created in compliance ``mode``."""
    from relaydesk.server.storage_setup import DEMO_APP, DEMO_SECRET

    app = {"id": DEMO_APP, "secret": DEMO_SECRET, "compliance": mode}
    return make_server({"apps": [app], **sections})


FAST = ReconnectPolicy(base_s=0.05, max_s=0.5)
STORE_KEY = bytes(range(32))


async def open_device(
    stack: AsyncExitStack,
    server: Any,
    user: str,
    device: str,
    store: MemoryKeyStore | None = None,
    **options: Any,
) -> EncryptedClient:
    token = server.token(user, channels={"*": "member"})
    client = await stack.enter_async_context(
        relaydesk.connect(server.ws_url, token, device=device, reconnect=FAST)
    )
    secure = await open_encrypted(
        client,
        server.http_url,
        app=server.app,
        token=token,
        store=store or MemoryKeyStore(),
        store_key=STORE_KEY,
        **options,
    )
    stack.push_async_callback(secure.directory.aclose)
    return secure


async def next_content(
    events: AsyncIterator[SecureEvent], timeout: float = 15.0, skipped: list[Any] | None = None
) -> Message | Undecryptable:
    """The next message event (decrypted or not), skipping (into ``skipped``) the rest."""
    async with asyncio.timeout(timeout):
        async for event in events:
            if isinstance(event, (Message, Undecryptable)):
                return event
            if skipped is not None:
                skipped.append(event)
    raise AssertionError("event stream ended")

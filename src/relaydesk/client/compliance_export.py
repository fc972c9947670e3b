"""The legal-hold export: the compliance device decrypts into an archive on the
operator's machine (docs/compliance.md "Legal hold").

The compliance device is an ordinary SDK device of the app's hold user (default
``legal-hold``), whose key store lives on the operator's machine, sealed with a key
the operator keeps.  Senders include it in key sharing only for conversations with a
member who consented, and every participant sees the indicator.  The export:

1. connects as that device (registering it on the first run) and reads its feed until
   it has been idle for ``idle_s`` seconds: the key bundles senders addressed to it;
2. for every conversation it holds keys for, pages the history with the app secret
   (the operator's credential) and decrypts what its keys open;
3. writes one JSON object per message to the archive (``undecryptable`` with the reason
   where its keys do not reach: before the hold started, or after consent ended).

The server never sees a key or a plaintext: decryption happens in this process.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import msgspec

import relaydesk
from relaydesk.client.crypto import open_encrypted
from relaydesk.e2ee.machine import CryptoDevice, Decrypted
from relaydesk.e2ee.store import FileKeyStore
from relaydesk.e2ee.wire import ENC_MEGOLM
from relaydesk.edges.urls import ws_url
from relaydesk.protocol.frames import Event
from relaydesk.protocol.tokens import mint_token


@dataclass(frozen=True, slots=True)
class ExportSummary:
    conversations: int
    decrypted: int
    undecryptable: int


async def export_archive(
    http_url: str,
    *,
    app: str,
    secret: str,
    device: str,
    store_path: Path,
    store_key: bytes,
    out: Path,
    idle_s: float = 2.0,
    hold_user: str = "legal-hold",
) -> ExportSummary:
    """Run steps 1-3 of the module docstring; returns what was written."""
    token = mint_token(app, secret, hold_user, now=time.time(), ttl_s=3600)
    async with relaydesk.connect(ws_url(http_url), token, device=device) as client:
        secure = await open_encrypted(
            client,
            http_url,
            app=app,
            token=token,
            store=FileKeyStore(store_path),
            store_key=store_key,
        )
        try:
            events = secure.events()
            while True:
                try:
                    async with asyncio.timeout(idle_s):
                        await anext(events)
                except TimeoutError:
                    break
            convs = sorted(secure.machine.session_conversations())
            counts = [0, 0]
            async with httpx.AsyncClient(
                base_url=f"{http_url.rstrip('/')}/v1/apps/{app}",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=30,
            ) as http:
                with out.open("w", encoding="utf-8") as archive:
                    for conv in convs:
                        await _export_conversation(http, secure.machine, conv, archive, counts)
        finally:
            await secure.aclose()
    return ExportSummary(len(convs), counts[0], counts[1])


async def _export_conversation(
    http: httpx.AsyncClient, machine: CryptoDevice, conv: str, archive: TextIO, counts: list[int]
) -> None:
    """Page ``conv`` from the start and write each message, decrypted where possible."""
    after = 0
    while True:
        params: dict[str, str | int] = {"conv": conv, "after": after, "limit": 500}
        page: dict[str, Any] = (await http.get("/history", params=params)).json()
        for item in page["items"]:
            ev = msgspec.convert(item, Event)
            after = max(after, ev.seq)
            if ev.kind != "msg" or ev.enc != ENC_MEGOLM:
                continue
            got = machine.decrypt(conv, ev.seq, ev.sender, ev.body)
            row: dict[str, Any] = {
                "conv": conv,
                "seq": ev.seq,
                "sender": ev.sender,
                "device": ev.dev,
                "ts": ev.ts,
            }
            if isinstance(got, Decrypted):
                row["text"] = got.body.decode("utf-8", errors="replace")
                counts[0] += 1
            else:
                row["undecryptable"] = str(got.reason)
                counts[1] += 1
            archive.write(json.dumps(row, ensure_ascii=False) + "\n")
        if not page["more"]:
            return

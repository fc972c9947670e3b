"""Legal hold: consent, the indicator every participant sees, and the operator's export."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from client.e2ee_kit import e2ee_server, next_content, open_device
from relaydesk.client import Message
from relaydesk.client.compliance_export import export_archive
from relaydesk.client.crypto import LegalHoldNotice

HOLD_KEY = bytes(range(1, 33))


@pytest.mark.slow
async def test_legal_hold_reads_exactly_the_consented_conversations(
    make_server: Callable[..., Any], tmp_path: Path
) -> None:
    server = e2ee_server(make_server, "e2ee_legal_hold")
    server.add_members(["alice", "bob"], channel="room")
    archive = tmp_path / "archive.jsonl"

    async def export() -> Any:
        return await export_archive(
            server.http_url,
            app=server.app,
            secret=server.secret,
            device="compliance",
            store_path=tmp_path / "hold.keys",
            store_key=HOLD_KEY,
            out=archive,
            idle_s=1.0,
        )

    first = await export()  # registers the compliance device; nothing held yet
    assert (first.conversations, first.decrypted) == (0, 0)
    async with AsyncExitStack() as stack:
        alice = await open_device(stack, server, "alice", "a1")
        bob = await open_device(stack, server, "bob", "b1")
        carol = await open_device(stack, server, "carol", "c1")
        assert alice.mode == "e2ee_legal_hold"
        assert not (await alice.legal_hold("ch:room")).active
        await bob.consent_to_legal_hold()
        # Every participant of a conversation with bob sees the indicator.
        for device in (alice, bob):
            notice = await device.legal_hold("ch:room")
            assert notice.active and notice.held_members == ("bob",)
        assert not (await alice.legal_hold("dm:alice:carol")).active
        bob_feed = bob.events()
        carol_feed = carol.events()
        await alice.send("channel:room", "held: quarterly numbers")
        await alice.send("user:carol", "not held: lunch?")
        events: list[Any] = []
        while not events or not isinstance(events[-1], Message):
            events.append(await anext(bob_feed))
        notices = [e for e in events if isinstance(e, LegalHoldNotice)]
        assert [(n.conv, n.active) for n in notices] == [("ch:room", True)]  # before the text
        assert events[-1].body == b"held: quarterly numbers"
        got = await next_content(carol_feed)
        assert isinstance(got, Message) and got.body == b"not held: lunch?"
    summary = await export()
    rows = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [(r["conv"], r.get("text")) for r in rows] == [("ch:room", "held: quarterly numbers")]
    assert (summary.conversations, summary.decrypted) == (1, 1)
    assert "lunch" not in (tmp_path / "hold.keys").read_bytes().decode("latin-1")

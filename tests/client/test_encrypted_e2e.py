"""Encrypted conversations through the SDK on a real node: five devices, ciphertext only
in storage, removed members, history for new devices, crashes during key sharing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from client.e2ee_kit import STORE_KEY, e2ee_server, next_content, open_device
from relaydesk.client import Message
from relaydesk.client.crypto import (
    EncryptedClient,
    Undecryptable,
    UnverifiedDevice,
    VerificationCode,
)
from relaydesk.e2ee import FailureReason, MemoryKeyStore, new_recovery_key, public_part

SECRETS = [b"peer secret 7f3a", b"channel secret 9c2e", b"reply secret 41d0"]


def scan_sqlite(data_dir: Path) -> list[bytes]:
    """Every test plaintext found in the node's database files (main file and WAL)."""
    found = []
    for path in data_dir.glob("relaydesk.db*"):
        raw = path.read_bytes()
        found += [s for s in SECRETS if s in raw]
    with sqlite3.connect(data_dir / "relaydesk.db") as db:
        for (body,) in db.execute("SELECT body FROM events"):
            found += [s for s in SECRETS if s in bytes(body)]
    return found


async def test_two_users_five_devices_read_everything_and_the_server_sees_ciphertext(
    make_server: Callable[..., Any],
) -> None:
    server = e2ee_server(make_server)
    server.add_members(["bob", "alice"], channel="room")  # bob sees alice join
    async with AsyncExitStack() as stack:
        laptop = await open_device(stack, server, "alice", "laptop")
        phone = await open_device(stack, server, "alice", "phone")
        bobs = [await open_device(stack, server, "bob", f"b{i}") for i in range(3)]
        feeds = {d.client.device: d.events() for d in [laptop, phone, *bobs]}

        dm = await laptop.send("user:bob", SECRETS[0])
        ch = await laptop.send("channel:room", SECRETS[1])
        for d in [phone, *bobs]:
            skipped: list[Any] = []
            got = [await next_content(feeds[d.client.device], skipped=skipped) for _ in range(2)]
            if d.client.user == "bob":  # alice joined the room: her devices are unverified
                warned = {(w.user, w.device) for w in skipped if isinstance(w, UnverifiedDevice)}
                assert warned == {("alice", "laptop"), ("alice", "phone")}
            assert [(m.conv, m.seq) for m in got] == [(dm.conv, dm.seq), (ch.conv, ch.seq)]
            assert all(isinstance(m, Message) for m in got), got
            assert [m.body for m in got if isinstance(m, Message)] == SECRETS[:2]
        reply = await bobs[1].send("channel:room", SECRETS[2])
        for d in [laptop, phone, bobs[0], bobs[2]]:
            m = await next_content(feeds[d.client.device])
            assert isinstance(m, Message) and (m.body, m.seq) == (SECRETS[2], reply.seq)
        # The node's database holds ciphertext only.
        assert scan_sqlite(server.data_dir) == []
        # Tampering by the server: a re-sent ciphertext under another id is a replay.
        history = await bobs[0].client.history("ch:room")
        sealed = history.messages[0]
        with server.admin() as admin:
            r = admin.post(
                f"/apps/{server.app}/publish",
                json={"sender": "alice", "to": "channel:room", "id": "forged-1", "text": "plain"},
            )
            assert r.status_code == 200
        forged = await next_content(feeds["b0"])
        assert isinstance(forged, Undecryptable) and forged.reason == "unencrypted"
        assert sealed.enc == "rd.megolm.v1" and sealed.body not in SECRETS


async def test_a_member_who_left_cannot_read_what_follows(
    make_server: Callable[..., Any],
) -> None:
    server = e2ee_server(make_server)
    server.add_members(["alice", "bob", "carol"], channel="room")
    async with AsyncExitStack() as stack:
        alice = await open_device(stack, server, "alice", "a1")
        bob = await open_device(stack, server, "bob", "b1")
        carol = await open_device(stack, server, "carol", "c1")
        carol_feed = carol.events()
        await alice.send("channel:room", "before")
        first = await next_content(carol_feed)
        assert isinstance(first, Message) and first.body == b"before"
        await carol.client.leave("room")
        await asyncio.sleep(0)  # (ordering comes from the feed, not from this)
        bob_feed = bob.events()
        await next_content(bob_feed)
        # alice learns of the leave from her feed (or the device cache expiring).
        alice.forget_devices("ch:room")
        after = await alice.send("channel:room", "after carol left")
        m = await next_content(bob_feed)
        assert isinstance(m, Message) and m.body == b"after carol left"
        # carol gets the ciphertext anyway (say, from a leaked database): no key for it.
        with server.admin() as admin:
            page = admin.get(
                f"/apps/{server.app}/history", params={"conv": "ch:room", "after": after.seq - 1}
            ).json()
        import base64

        body = base64.b64decode(page["items"][0]["body"])
        result = carol.machine.decrypt("ch:room", after.seq, "alice", body)
        assert getattr(result, "reason", None) is FailureReason.MISSING_SESSION


async def test_new_device_reads_history_through_key_requests_and_the_backup(
    make_server: Callable[..., Any],
) -> None:
    server = e2ee_server(make_server)
    server.add_members(["alice", "bob"], channel="room")
    recovery = new_recovery_key()
    async with AsyncExitStack() as stack:
        alice = await open_device(stack, server, "alice", "a1")
        old = await open_device(stack, server, "bob", "old")
        await old.enable_backup(public_part(recovery))
        old_feed = old.events()
        sent = [await alice.send("channel:room", f"history {i}") for i in range(5)]
        for _ in sent:
            assert isinstance(await next_content(old_feed), Message)

        async def read_history(device: EncryptedClient) -> list[Any]:
            page = await device.client.history("ch:room", limit=50)
            return await device.decrypt_history(page.messages)

        # Path 1: the backup, unlocked by the recovery key.
        restored = await open_device(stack, server, "bob", "restored")
        before = await read_history(restored)
        assert all(isinstance(m, Undecryptable) for m in before)
        assert (await restored.restore_backup(recovery))[0] >= 1
        assert [m.body for m in await read_history(restored)] == [
            f"history {i}".encode() for i in range(5)
        ]
        # Path 2: a key request, answered only once the old device verified the new one.
        seen: list[Any] = []

        async def pump() -> None:  # the old device keeps reading its feed
            async for event in old_feed:
                seen.append(event)

        pumping = asyncio.create_task(pump())
        new = await open_device(stack, server, "bob", "new")
        new_feed = new.events()
        await old.known_devices("bob")
        await new.request_keys()
        await new.client.send("user:bob", "marker", enc="test.marker")
        async with asyncio.timeout(15):
            while not any(
                getattr(e, "id", "") and getattr(e, "reason", "") == "unencrypted" for e in seen
            ):
                await asyncio.sleep(0.05)
        # The old device read the request and the marker after it: it sent no keys.
        assert all(isinstance(m, Undecryptable) for m in await read_history(new))
        # SAS between the two devices, over bob's own conversation.
        txn = await old.start_verification("bob", "new")
        code_new = None
        async with asyncio.timeout(15):
            async for event in new_feed:
                if isinstance(event, VerificationCode):
                    code_new = event.code
                    break
            while not any(isinstance(e, VerificationCode) for e in seen):
                await asyncio.sleep(0.05)
        code_old = next(e.code for e in seen if isinstance(e, VerificationCode))
        assert code_old == code_new and len(code_old.emoji) == 7
        await new.confirm_verification(txn)
        await old.confirm_verification(txn)  # verified once new's MAC is in too
        async with asyncio.timeout(15):
            while not old.machine.is_verified(new.machine.identity()):
                await asyncio.sleep(0.05)
        await new.request_keys()
        async with asyncio.timeout(15):
            async for event in new_feed:
                if type(event).__name__ == "KeysReceived":
                    break
        pumping.cancel()
        assert [m.body for m in await read_history(new)] == [
            f"history {i}".encode() for i in range(5)
        ]


class CrashAfterPending(MemoryKeyStore):
    """A store whose next save that records a pending send 'crashes' the process."""

    armed = False

    async def save(self, data: bytes) -> None:
        await super().save(data)
        if self.armed:
            import msgspec

            from relaydesk.client.crypto import _Saved
            from relaydesk.e2ee.store import unseal

            saved = msgspec.msgpack.decode(unseal(STORE_KEY, data), type=_Saved)
            if saved.pending:
                self.armed = False
                raise RuntimeError("crash: killed after saving the pending send")


async def test_a_crash_during_key_sharing_resends_the_same_messages(
    make_server: Callable[..., Any],
) -> None:
    server = e2ee_server(make_server)
    store = CrashAfterPending()
    async with AsyncExitStack() as stack:
        bob = await open_device(stack, server, "bob", "b1")
        bob_feed = bob.events()
        async with AsyncExitStack() as first_run:
            alice = await open_device(first_run, server, "alice", "a1", store=store)
            store.armed = True
            with pytest.raises(RuntimeError, match="crash"):
                await alice.send("user:bob", "sent across a crash")
        # The process is gone before anything was sent; the restart resends the bundle
        # and the message under their saved ids, so bob reads it exactly once.
        again = await open_device(stack, server, "alice", "a1", store=store)
        assert again.machine.identity_key == alice.machine.identity_key
        got = await next_content(bob_feed)
        assert isinstance(got, Message) and got.body == b"sent across a crash"
        follow = await again.send("user:bob", "and after it")
        got2 = await next_content(bob_feed)
        assert isinstance(got2, Message) and (got2.body, got2.seq) == (b"and after it", follow.seq)

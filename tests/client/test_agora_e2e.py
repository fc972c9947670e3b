"""Agora-style features through the SDK and the HTTP API against one real node
(docs/protocol.md §5.11-§5.12): metadata CAS races, change events in feed order,
resume, limits; locks with roles, the fair queue, metadata under a lock, and TTL
release after the holder's process is killed with SIGKILL.

One node serves the whole module (each test uses its own channel or users)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import relaydesk
from relaydesk.client import (
    Client,
    ClientEvent,
    LockEvent,
    MemoryCursorStore,
    Message,
    MetadataChange,
    MetadataEntry,
    ReconnectPolicy,
    RequestError,
    RevisionConflict,
    StateEvent,
)
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.metadata import MAX_VALUE_BYTES

FAST = ReconnectPolicy(base_s=0.05, max_s=0.5)
OWNER = {"room": "owner"}
HOLDER = Path(__file__).with_name("lock_holder.py")


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The ``make_server`` node of tests/conftest.py, shared by the module (the
    conftest is reached as the plugin it is: two conftest modules share its name)."""
    conftest = request.config.pluginmanager.get_plugin(
        str(Path(__file__).resolve().parent.parent / "conftest.py")
    )
    server = conftest.ServerProcess(tmp_path_factory.mktemp("agora"))
    server.start()
    yield server
    server.stop()


def sdk(server: Any, user: str, device: str, **kw: Any) -> Any:
    channels = kw.pop("channels", None)
    return relaydesk.connect(
        server.ws_url, server.token(user, channels=channels), device=device, reconnect=FAST, **kw
    )


async def changes(client: Client, n: int) -> list[ClientEvent]:
    """The next ``n`` metadata changes and messages, in feed order."""
    out: list[ClientEvent] = []
    it = client.events()
    async with asyncio.timeout(10):
        while len(out) < n:
            ev = await anext(it)
            if isinstance(ev, MetadataChange | Message):
                out.append(ev)
    return out


async def race(writers: list[Client], major: int) -> tuple[list[int], list[RevisionConflict]]:
    async def one(i: int, client: Client) -> int:
        return await client.set_metadata("channel", "room", {"turn": f"w{i}"}, major=major)

    results = await asyncio.gather(
        *(one(i, c) for i, c in enumerate(writers)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, RevisionConflict)]
    assert len(won) + len(lost) == len(writers), results
    return won, lost


async def test_channel_metadata_cas_race_events_in_order_and_resume(node: Any) -> None:
    srv = node
    srv.add_members(["watcher"])
    writers = [sdk(srv, f"w{i}", "d", channels=OWNER) for i in range(6)]
    clients = [await w for w in writers]
    try:
        for c in clients:
            await c.join("room")
        async with sdk(srv, "watcher", "phone") as watcher:
            first = await clients[0].set_metadata("channel", "room", {"topic": "hello"})
            # Six owners write with the same revision at once: exactly one wins.
            won, lost = await race(clients, first)
            assert won == [first + 1]
            assert {e.revision for e in lost} == {first + 1}
            assert all(e.code == ErrorCode.REVISION_CONFLICT for e in lost)
            # Per-item CAS: rev 0 = create only.
            with pytest.raises(RevisionConflict) as info:
                await clients[1].set_metadata("channel", "room", [MetadataEntry("topic", "x", 0)])
            assert info.value.revision == first
            await clients[1].send("channel:room", "between")
            third = await clients[1].update_metadata(
                "channel", "room", [MetadataEntry("topic", "bye", first)]
            )
            got = await changes(watcher, 4)
            assert [type(e).__name__ for e in got] == [
                "MetadataChange",
                "MetadataChange",
                "Message",
                "MetadataChange",
            ]
            assert [e.major for e in got if isinstance(e, MetadataChange)] == [
                first,
                first + 1,
                third,
            ]
            last = got[-1]
            assert isinstance(last, MetadataChange) and last.items["topic"].value == "bye"
            assert last.actor == "w1" and last.items["topic"].rev == third
            snapshot = await watcher.get_metadata("channel", "room")
            assert snapshot.major == third
            assert {k: i.value for k, i in snapshot.items.items()} == {
                "topic": "bye",
                "turn": next(
                    e.items["turn"].value
                    for e in got
                    if isinstance(e, MetadataChange) and "turn" in e.items
                ),
            }
            # Members read but only owners write; a non-member reads nothing.
            with pytest.raises(RequestError) as denied:
                await watcher.set_metadata("channel", "room", {"x": "y"})
            assert denied.value.code == ErrorCode.FORBIDDEN
            cursor = watcher.cursor
        # A device that resumes from its cursor replays the changes it missed, in order.
        removed = await clients[0].remove_metadata("channel", "room", ["turn"])
        async with sdk(srv, "watcher", "phone", cursor_store=MemoryCursorStore(cursor)) as back:
            [change] = await changes(back, 1)
            assert isinstance(change, MetadataChange)
            assert (change.major, change.removed, change.op) == (removed, ("turn",), "remove")
            again = await back.get_metadata("channel", "room")
            assert set(again.items) == {"topic"} and again.major == removed
        async with sdk(srv, "stranger", "x") as stranger:
            with pytest.raises(RequestError) as info2:
                await stranger.get_metadata("channel", "room")
            assert info2.value.code == ErrorCode.FORBIDDEN
    finally:
        for c in clients:
            await c.aclose()


async def test_user_metadata_limits_and_the_http_api(node: Any) -> None:
    srv = node
    async with sdk(srv, "alice", "laptop") as laptop, sdk(srv, "alice", "phone") as phone:
        major = await laptop.set_metadata("user", "alice", {"mood": "busy"})
        [change] = await changes(phone, 1)  # every device of the user hears it
        assert isinstance(change, MetadataChange) and change.items["mood"].value == "busy"
        with pytest.raises(RequestError) as info:
            await laptop.set_metadata("user", "bob", {"mood": "hacked"})
        assert info.value.code == ErrorCode.FORBIDDEN
        with pytest.raises(RequestError) as info:
            await laptop.set_metadata("user", "alice", {"big": "x" * (MAX_VALUE_BYTES + 1)})
        assert info.value.code == ErrorCode.METADATA_TOO_LARGE
        with pytest.raises(RequestError) as info:
            await laptop.update_metadata("user", "alice", {"missing": "v"})
        assert info.value.code == ErrorCode.NOT_FOUND
        # Nothing half-applied; the connection goes on.
        assert (await laptop.get_metadata("user", "alice")).major == major
        async with sdk(srv, "bob", "b") as bob:  # anyone of the app reads a user's metadata
            assert (await bob.get_metadata("user", "alice")).items["mood"].value == "busy"

        with srv.admin() as api:
            url = f"/apps/{srv.app}/users/alice/metadata"
            r = api.post(
                url, json={"op": "set", "items": [{"key": "plan", "value": "pro"}], "major": major}
            )
            assert r.status_code == 200, r.text
            assert r.json()["major"] == major + 1
            r = api.post(url, json={"op": "set", "items": [{"key": "plan"}], "major": major})
            assert r.status_code == 409
            assert r.json()["error"] == {
                "code": 4024,
                "name": "REVISION_CONFLICT",
                "message": r.json()["error"]["message"],
                "rev": major + 1,
            }
            got = api.get(url).json()
            assert got["major"] == major + 1 and {i["key"] for i in got["items"]} == {
                "mood",
                "plan",
            }
            as_user = httpx.get(
                srv.http_url + "/v1" + url,
                headers={"Authorization": f"Bearer {srv.token('carol')}"},
            )
            assert as_user.status_code == 200 and as_user.json()["major"] == major + 1
        [change] = await changes(phone, 1)
        assert isinstance(change, MetadataChange)
        assert change.actor == "" and change.items["plan"].value == "pro"


def member(server: Any, user: str, channel: str, role: str = "member") -> Any:
    token = server.token(user, channels={channel: role})
    return relaydesk.connect(server.ws_url, token, device="d", reconnect=FAST)


async def lock_events(client: Client, until: Any, timeout: float = 15) -> list[LockEvent]:
    """Lock events in feed order until ``until(event)`` holds for one."""
    out: list[LockEvent] = []
    it = client.events()
    async with asyncio.timeout(timeout):
        while not out or not until(out[-1]):
            ev = await anext(it)
            if isinstance(ev, LockEvent):
                out.append(ev)
    return out


async def refused(code: ErrorCode, call: Any) -> None:
    with pytest.raises(RequestError) as info:
        await call
    assert info.value.code == code, info.value


async def test_lock_roles_fair_queue_and_metadata_under_a_lock(node: Any) -> None:
    srv = node
    async with (
        member(srv, "owner", "stage", "owner") as owner,
        member(srv, "a", "stage") as a,
        member(srv, "b", "stage") as b,
        member(srv, "c", "stage") as c,
    ):
        for client in (owner, a, b, c):
            await client.join("stage")
        await refused(ErrorCode.FORBIDDEN, a.set_lock("stage", "mic"))
        await owner.set_lock("stage", "mic", ttl_s=30)
        assert await a.acquire_lock("stage", "mic")
        await refused(ErrorCode.LOCK_HELD, b.acquire_lock("stage", "mic"))
        assert not await b.acquire_lock("stage", "mic", wait=True)
        assert not await c.acquire_lock("stage", "mic", wait=True)
        await refused(ErrorCode.LOCK_NOT_HELD, owner.release_lock("stage", "mic"))
        [listed] = await c.locks("stage")
        assert (listed.holder, listed.waiters, listed.ttl_s) == ("a", ("b", "c"), 30)
        # Metadata under a lock: only its holder writes.
        await refused(
            ErrorCode.LOCK_NOT_HELD, owner.set_metadata("channel", "stage", {"k": "v"}, lock="mic")
        )
        await a.release_lock("stage", "mic")  # b is first in the queue
        await owner.revoke_lock("stage", "mic")  # taken from b: c is next
        await refused(ErrorCode.FORBIDDEN, b.revoke_lock("stage", "mic"))
        seen = await lock_events(c, lambda e: e.op == "revoked")
        assert [(e.op, e.holder, e.waiters) for e in seen] == [
            ("set", "", ()),
            ("acquired", "a", ()),
            ("queued", "a", ("b",)),
            ("queued", "a", ("b", "c")),
            ("released", "b", ("c",)),
            ("revoked", "c", ()),
        ]
        assert seen[-1].by == "owner"
        await owner.remove_lock("stage", "mic")
        assert await c.locks("stage") == []
        await refused(ErrorCode.NOT_FOUND, c.acquire_lock("stage", "mic"))


async def test_a_killed_holder_loses_the_lock_after_the_ttl(node: Any) -> None:
    srv = node
    async with (
        member(srv, "owner", "studio", "owner") as owner,
        member(srv, "next", "studio") as waiter,
    ):
        await owner.join("studio")
        await waiter.join("studio")
        await owner.set_lock("studio", "mic", ttl_s=1)
        holder = subprocess.Popen(
            [
                sys.executable,
                str(HOLDER),
                srv.ws_url,
                srv.token("gone", channels={"studio": "member"}),
                "studio",
                "mic",
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 20)
            assert line.strip() == b"held"
            assert not await waiter.acquire_lock("studio", "mic", wait=True)
            holder.kill()  # SIGKILL: the connection drops without a goodbye
            holder.wait(10)
        finally:
            if holder.poll() is None:
                holder.kill()
        seen = await lock_events(waiter, lambda e: e.op == "expired")
        assert (seen[-1].holder, seen[-1].by) == ("next", "")
        [listed] = await owner.locks("studio")
        assert listed.holder == "next"


async def test_presence_state_who_now_where_now_and_clearing_on_going_offline(node: Any) -> None:
    srv = node
    async with (
        member(srv, "host", "lobby", "owner") as host,
        member(srv, "guest", "lobby") as guest,
    ):
        await host.join("lobby")
        await guest.join("lobby")
        await guest.set_state("lobby", {"mood": "typing", "seat": "3"})
        who = {m.user: m for m in await host.who_now("lobby")}
        assert set(who) == {"host", "guest"}
        assert who["guest"].state == {"mood": "typing", "seat": "3"} and who["host"].state == {}
        assert await host.where_now("guest") == {"lobby": {"mood": "typing", "seat": "3"}}
        assert await host.where_now("nobody") is None
        await refused(ErrorCode.FORBIDDEN, guest.set_state("elsewhere", {"a": "b"}))
        await refused(ErrorCode.METADATA_TOO_LARGE, guest.set_state("lobby", {"k": "v" * 8192}))
        async with member(srv, "outsider", "lobby") as outsider:
            await refused(ErrorCode.FORBIDDEN, outsider.who_now("lobby"))
        await guest.aclose()  # offline now: the sweeper clears the state
        seen: list[StateEvent] = []
        it = host.events()
        async with asyncio.timeout(15):
            while len(seen) < 2:
                ev = await anext(it)
                if isinstance(ev, StateEvent):
                    seen.append(ev)
        assert [(e.user, e.state) for e in seen] == [
            ("guest", {"mood": "typing", "seat": "3"}),
            ("guest", {}),
        ]
        assert [m.user for m in await host.who_now("lobby")] == ["host"]

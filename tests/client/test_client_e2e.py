"""The SDK against a real ``relaydesk serve`` process (docs/protocol.md §4-§6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest

import relaydesk
from relaydesk.client import (
    Client,
    ClientEvent,
    ConnectError,
    ConnectionState,
    Deletion,
    MembershipChange,
    Message,
    PresenceEvent,
    ReadMarker,
    ReconnectPolicy,
)

T = TypeVar("T")
FAST = ReconnectPolicy(base_s=0.05, max_s=0.5)


async def take(
    it: AsyncIterator[ClientEvent],
    n: int,
    kind: type[T],
    timeout: float = 10.0,
) -> list[T]:
    """The next ``n`` events of type ``kind`` (others are skipped)."""
    out: list[T] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            ev = await anext(it)
            if isinstance(ev, kind):
                out.append(ev)
    return out


async def nothing_more(it: AsyncIterator[ClientEvent], kind: type[Any], wait: float = 0.5) -> None:
    try:
        async with asyncio.timeout(wait):
            while True:
                ev = await anext(it)
                assert not isinstance(ev, kind), f"unexpected {ev}"
    except TimeoutError:
        pass


def open_client(server: Any, user: str, device: str, **kw: Any) -> Any:
    channels = kw.pop("channels", None)
    return relaydesk.connect(
        server.ws_url, server.token(user, channels=channels), device=device, reconnect=FAST, **kw
    )


async def test_direct_messages_between_users(running_server: Any) -> None:
    async with (
        open_client(running_server, "alice", "a1") as alice,
        open_client(running_server, "bob", "b1", codec="json") as bob,
    ):
        bob_events = bob.events()
        r1 = await alice.send("user:bob", "hello bob")
        r2 = await alice.send("user:bob", b"\x00binary\xff")
        assert (r1.conv, r1.seq, r2.seq) == ("dm:alice:bob", 1, 2) and not r1.dup
        got = await take(bob_events, 2, Message)
        assert [(m.seq, m.sender, m.device, m.id) for m in got] == [
            (1, "alice", "a1", r1.id),
            (2, "alice", "a1", r2.id),
        ]
        assert got[0].text == "hello bob" and got[1].body == b"\x00binary\xff"
        reply = await bob.send(f"{r1.conv}", "hi alice")
        [back] = await take(alice.events(), 1, Message)
        assert (back.seq, back.sender, back.text) == (reply.seq, "bob", "hi alice")
        # The sender never sees its own message as incoming.
        await nothing_more(bob_events, Message)


async def test_channel_membership_and_messages(running_server: Any) -> None:
    async with (
        open_client(running_server, "alice", "a1", channels={"room": "owner"}) as alice,
        open_client(running_server, "bob", "b1", channels={"room": "member"}) as bob,
    ):
        a_events, b_events = alice.events(), bob.events()
        joined = await alice.join("room")
        assert (joined.conv, joined.channel) == ("ch:room", "room")
        await bob.join("room")
        changes = await take(a_events, 2, MembershipChange)  # her own join, then bob's
        assert [(c.kind, c.user, c.conv) for c in changes] == [
            ("join", "alice", "ch:room"),
            ("join", "bob", "ch:room"),
        ]
        receipt = await alice.send("channel:room", "welcome all")
        [m] = await take(b_events, 1, Message)
        assert (m.conv, m.seq, m.text) == ("ch:room", receipt.seq, "welcome all")
        await alice.delete("ch:room", receipt.seq)
        [d] = await take(b_events, 1, Deletion)
        assert (d.conv, d.seq, d.sender) == ("ch:room", receipt.seq, "alice")
        await bob.leave("room")
        [gone] = await take(a_events, 1, MembershipChange)
        assert (gone.kind, gone.user) == ("leave", "bob")


async def test_offline_then_online(running_server: Any) -> None:
    async with open_client(running_server, "alice", "a1") as alice:
        sent = [await alice.send("user:carol", f"m{i}") for i in range(5)]
    async with open_client(running_server, "carol", "c1") as carol:
        got = await take(carol.events(), 5, Message)
    assert [m.id for m in got] == [r.id for r in sent]
    assert [m.text for m in got] == [f"m{i}" for i in range(5)]


async def test_second_device_catches_up_from_zero(running_server: Any) -> None:
    async with open_client(running_server, "alice", "a1", channels={"club": "owner"}) as alice:
        await alice.join("club")
        for i in range(3):
            await alice.send("user:dave", f"dm{i}")
            await alice.send("channel:club", f"ch{i}")
        async with open_client(running_server, "dave", "d1") as d1:
            first = await take(d1.events(), 3, Message)
            assert [m.text for m in first] == ["dm0", "dm1", "dm2"]
        # A second device of alice's own: her whole feed, her own sends included.
        async with open_client(running_server, "alice", "a2") as a2:
            mine = await take(a2.events(), 6, Message)
            assert [m.text for m in mine] == ["dm0", "ch0", "dm1", "ch1", "dm2", "ch2"]
            assert {m.device for m in mine} == {"a1"}


async def test_resume_skips_what_was_processed(running_server: Any) -> None:
    async with open_client(running_server, "alice", "a1") as alice:
        async with open_client(running_server, "erin", "e1") as erin:
            await alice.send("user:erin", "one")
            await take(erin.events(), 1, Message)
        await alice.send("user:erin", "two")
        async with open_client(running_server, "erin", "e1") as erin:
            [m] = await take(erin.events(), 1, Message)
            assert m.text == "two"  # "one" was acknowledged by the device before
            await nothing_more(erin.events(), Message)


async def test_history_paging(running_server: Any) -> None:
    async with open_client(running_server, "alice", "a1") as alice:
        for i in range(1, 26):
            await alice.send("user:frank", f"h{i}")
        conv = "dm:alice:frank"
        latest = await alice.history(conv, limit=10)
        assert [m.seq for m in latest.messages] == list(range(16, 26)) and latest.more
        older = await alice.history(conv, before=16, limit=10)
        assert [m.seq for m in older.messages] == list(range(6, 16)) and older.more
        oldest = await alice.history(conv, before=6, limit=10)
        assert [m.seq for m in oldest.messages] == list(range(1, 6)) and not oldest.more
        newer = await alice.history(conv, after=20, limit=10)
        assert [m.seq for m in newer.messages] == list(range(21, 26)) and not newer.more
        assert oldest.messages[0].text == "h1"
    async with open_client(running_server, "mallory", "m1") as mallory:
        with pytest.raises(relaydesk.client.RequestError) as err:
            await mallory.history(conv)
        assert err.value.code == 4020


async def test_presence_events_and_query(running_server: Any) -> None:
    async with open_client(running_server, "alice", "a1", channels={"lobby": "owner"}) as alice:
        await alice.join("lobby")
        async with open_client(running_server, "gina", "g0", channels={"lobby": "member"}) as g0:
            await g0.join("lobby")
        events = alice.events()

        async def next_gina() -> PresenceEvent:
            async with asyncio.timeout(10):
                while True:
                    ev = await anext(events)
                    if isinstance(ev, PresenceEvent) and ev.user == "gina":
                        return ev

        # g0 joined while online (announced) and then left: drain both changes so
        # that what follows is about g1 alone.
        ev = await next_gina()
        assert ev.online and ev.devices == 1
        ev = await next_gina()
        assert not ev.online and ev.devices == 0
        async with open_client(running_server, "gina", "g1") as gina:
            # Sharing a channel, alice hears gina come online.
            ev = await next_gina()
            assert ev.online and ev.devices == 1
            states = {p.user: p for p in await alice.presence(["gina", "nobody"])}
            assert states["gina"].online and states["gina"].devices == 1
            assert states["gina"].since > 0
            assert not states["nobody"].online
            async with open_client(running_server, "gina", "g2"):
                states = {p.user: p for p in await gina.presence(["gina"])}
                assert states["gina"].devices == 2
        ev = await next_gina()
        assert not ev.online and ev.devices == 0


async def test_read_markers_reach_other_devices(running_server: Any) -> None:
    async with (
        open_client(running_server, "alice", "a1") as alice,
        open_client(running_server, "hank", "h1") as h1,
        open_client(running_server, "hank", "h2") as h2,
    ):
        r = await alice.send("user:hank", "read me")
        await take(h1.events(), 1, Message)
        h1.mark_read(r.conv, r.seq)
        [marker] = await take(h2.events(), 1, ReadMarker)
        assert (marker.conv, marker.seq, marker.user) == (r.conv, r.seq, "hank")
        await nothing_more(h1.events(), ReadMarker)


async def test_own_messages_reach_my_other_devices(running_server: Any) -> None:
    async with (
        open_client(running_server, "ivy", "i1") as i1,
        open_client(running_server, "ivy", "i2") as i2,
    ):
        r = await i1.send("user:jack", "from my phone")
        [m] = await take(i2.events(), 1, Message)
        assert (m.id, m.sender, m.device, m.seq) == (r.id, "ivy", "i1", r.seq)
        await nothing_more(i1.events(), Message)
        assert i1.statistics().echoes >= 1


async def test_reconnect_after_kill_loses_and_repeats_nothing(running_server: Any) -> None:
    states: list[ConnectionState] = []
    async with (
        open_client(running_server, "alice", "a1") as alice,
        open_client(running_server, "kate", "k1", on_state=states.append) as kate,
    ):
        events = kate.events()
        before = [await alice.send("user:kate", f"b{i}") for i in range(10)]
        await take(events, 5, Message)
        running_server.kill()
        # Sends while the server is down wait in the outbox.
        pending = [asyncio.ensure_future(alice.send("user:kate", f"d{i}")) for i in range(5)]
        await asyncio.sleep(0.3)
        assert not any(p.done() for p in pending)
        running_server.start()
        during = await asyncio.wait_for(asyncio.gather(*pending), 20)
        after = [await alice.send("user:kate", f"a{i}") for i in range(5)]
        rest = await take(events, 15, Message, timeout=20)
        await nothing_more(events, Message)
        ids = [m.id for m in rest]
        assert ids == [r.id for r in before[5:] + during + after]
        assert [m.seq for m in rest] == list(range(6, 21))
        assert ConnectionState.RECONNECTING in states
        assert kate.state in (ConnectionState.CONNECTED, ConnectionState.SYNCED)


async def test_bad_token_fails_without_a_reconnect_loop(running_server: Any) -> None:
    forged = running_server.token("alice", secret="not-the-secret-at-all-0123456789")
    states: list[ConnectionState] = []
    with pytest.raises(ConnectError) as err:
        await relaydesk.connect(
            running_server.ws_url, forged, device="a1", reconnect=FAST, on_state=states.append
        )
    assert err.value.code == 4010
    assert states == [ConnectionState.FAILED]


async def test_token_provider_is_asked_again_on_expiry(running_server: Any) -> None:
    calls: list[int] = []

    async def provider() -> str:
        calls.append(1)
        return str(running_server.token("lena", ttl_s=600))

    client: Client = await relaydesk.connect(
        running_server.ws_url, provider, device="l1", reconnect=FAST
    )
    try:
        assert calls == [1]
        running_server.kill()
        running_server.start()
        async with asyncio.timeout(15):
            while client.state is not ConnectionState.SYNCED or len(calls) < 2:
                await asyncio.sleep(0.05)
        await client.send("user:alice", "still here")
    finally:
        await client.aclose()
    assert client.state is ConnectionState.CLOSED


async def test_token_refreshed_over_the_live_connection(running_server: Any) -> None:
    calls: list[float] = []

    async def provider() -> str:
        calls.append(asyncio.get_running_loop().time())
        return str(running_server.token("mona", ttl_s=4))

    states: list[ConnectionState] = []
    async with relaydesk.connect(
        running_server.ws_url, provider, device="m1", on_state=states.append
    ) as mona:
        await asyncio.sleep(6.0)  # past the first token's expiry
        assert len(calls) >= 2
        assert ConnectionState.RECONNECTING not in states, states
        await mona.send("user:alice", "token refreshed in place")


async def test_rate_limited_sends_are_retried_until_committed(
    make_server: Any,
) -> None:
    server = make_server(config={"gateway": {"publish_rate": 100, "publish_burst": 20}})
    async with open_client(server, "nick", "n1") as nick, open_client(server, "olga", "o1") as olga:
        receipts = await asyncio.gather(*(nick.send("user:olga", f"r{i}") for i in range(150)))
        assert nick.statistics().rate_limited > 0
        assert sorted(r.seq for r in receipts) == list(range(1, 151))
        got = await take(olga.events(), 150, Message, timeout=20)
        assert [m.seq for m in got] == list(range(1, 151))
        assert sorted(m.text for m in got) == sorted(f"r{i}" for i in range(150))

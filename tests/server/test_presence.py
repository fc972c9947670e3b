"""Presence events over the raw protocol: online, offline, and joining while online."""

from __future__ import annotations

from typing import Any

from raw_client import Raw

from relaydesk.protocol.frames import Join, PresenceQuery


async def test_join_while_online_and_going_offline_are_announced(running_server: Any) -> None:
    srv = running_server
    alice = await Raw.login(srv.ws_url, srv.token("alice", channels={"room": "owner"}))
    await alice.send(Join(rid=1, channel="room"))
    await alice.expect("joined")
    gina = await Raw.login(srv.ws_url, srv.token("gina", channels={"room": "member"}), "g1")
    await gina.send(Join(rid=2, channel="room"))  # already online, now shares a channel
    await gina.expect("joined")
    change = await alice.expect("presence")
    assert (change.user, change.online, change.devices) == ("gina", True, 1)
    second = await Raw.login(srv.ws_url, srv.token("gina"), "g2")
    await alice.send(PresenceQuery(rid=3, users=["gina"]))
    state = await alice.expect("presence_state")
    assert state.users[0].devices == 2
    await second.aclose()
    await gina.aclose()  # the last device leaves: offline
    change = await alice.expect("presence")
    assert (change.user, change.online, change.devices) == ("gina", False, 0)

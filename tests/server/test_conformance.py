"""Conformance: a client written from docs/protocol.md alone works against a real server.

Nothing of relaydesk is imported: frames are the JSON objects of the document's tables,
tokens are HS256 JWTs built as §2.2 says, bytes are standard base64 (§1), and the
MessagePack check sends the hex bytes printed in §8.2.  If this test needs a fact the
document does not state, the document is wrong.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

JSON_SP, MSGPACK_SP = "relaydesk.v1.json", "relaydesk.v1.msgpack"
WELCOME_FIELDS = {
    "t",
    "user",
    "device",
    "session",
    "node",
    "region",
    "publish_rate",
    "heartbeat_ms",
    "timeout_ms",
    "server_ts",
    "cursor",
    "max_body",
    "max_frame",
    "exp",
}


def token(app: str, secret: str, user: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"app": app, "sub": user, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, secret, algorithm="HS256", headers={"kid": app})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Client:
    """Just enough of a client: send a JSON frame, read frames, keep the feed."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.feed: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def next(self, t: str, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if frame["t"] == "msgs":
                self.feed.extend(frame["items"])
            if frame["t"] == t:
                return frame  # type: ignore[no-any-return]

    async def login(self, tok: str, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
        await self.send(t="hello", token=tok, device=device, sdk="conformance/1")
        return await self.next("welcome"), await self.next("synced")


async def open_client(url: str, offer: list[str]) -> Client:
    ws = await connect(url, subprotocols=offer)  # type: ignore[arg-type]
    return Client(ws)


async def test_a_client_built_from_the_document_alone(running_server: Any) -> None:
    srv = running_server
    url, app, secret = srv.ws_url, srv.app, srv.secret

    # §1: the server takes the first subprotocol of the client's offer that it supports.
    probe = await open_client(url, ["chat.v9", MSGPACK_SP, JSON_SP])
    assert probe.ws.subprotocol == MSGPACK_SP
    # §8.2: ping{ts:1} in MessagePack, byte for byte as printed, after a hello that is
    # the same map as in JSON (§1); binary frames, keys as in the tables.
    hello = {"t": "hello", "token": token(app, secret, "carol"), "device": "carol-1"}
    await probe.ws.send(msgspec.msgpack.encode(hello))
    seen = [msgspec.msgpack.decode(await probe.ws.recv())["t"]]
    while seen[-1] != "synced":
        seen.append(msgspec.msgpack.decode(await probe.ws.recv())["t"])
    assert seen[0] == "welcome" and set(seen[1:-1]) <= {"msgs"}
    await probe.ws.send(bytes.fromhex("82 a1 74 a4 70 69 6e 67 a2 74 73 01"))
    pong = msgspec.msgpack.decode(await probe.ws.recv())
    assert (pong["t"], pong["ts"]) == ("pong", 1) and pong["server_ts"] > 0
    await probe.ws.close()

    bob = await open_client(url, [JSON_SP, MSGPACK_SP])
    assert bob.ws.subprotocol == JSON_SP
    welcome, synced = await bob.login(token(app, secret, "bob"), "bob-laptop")
    assert set(welcome) == WELCOME_FIELDS  # §3.1's table, nothing missing
    assert (welcome["user"], welcome["device"]) == ("bob", "bob-laptop")
    assert synced["pos"] >= welcome["cursor"]
    await bob.send(t="ack", pos=synced["pos"])  # §3.2: synced.pos counts as sent

    alice = await open_client(url, [JSON_SP])
    await alice.login(token(app, secret, "alice", ch={"conf-room": "owner"}), "alice-phone")

    # §5.1: puback (dup omitted when false), then the echo on the same connection.
    await alice.send(t="pub", id="alice-phone-1", to="user:bob", body=b64(b"hi bob"))
    ack = await alice.next("puback")
    assert set(ack) == {"t", "id", "conv", "seq", "pos", "ts"} and ack["conv"] == "dm:alice:bob"
    assert not alice.feed or alice.feed[-1]["pos"] < ack["pos"]  # puback before echo
    await alice.next("msgs")
    echo = alice.feed[-1]
    assert (echo["pos"], echo["from"], echo["dev"], echo["id"]) == (
        ack["pos"],
        "alice",
        "alice-phone",
        "alice-phone-1",
    )

    # §4.1: bob's feed gets the event; omitted fields take their defaults.
    while not any(e["pos"] == ack["pos"] for e in bob.feed):
        await bob.next("msgs")
    event = next(e for e in bob.feed if e["pos"] == ack["pos"])
    assert event["kind"] == "msg" and base64.b64decode(event["body"]) == b"hi bob"
    assert event.get("enc", "") == "" and event.get("subject", "") == ""
    await bob.send(t="ack", pos=event["pos"])
    await bob.send(t="read", conv=event["conv"], seq=event["seq"])  # §5.5: no reply

    # §5.7 history, §5.9 presence, §6 ping.
    await bob.send(t="history_q", rid=1, conv="user:alice", limit=5)
    page = await bob.next("history")
    assert page["rid"] == 1 and page["conv"] == "dm:alice:bob"
    assert [e["seq"] for e in page["items"]][-1] == event["seq"]
    await bob.send(t="presence_q", rid=2, users=["alice", "nobody"])
    state = await bob.next("presence_state")
    online = {u["user"]: u for u in state["users"]}
    assert online["alice"]["online"] and online["alice"]["devices"] == 1
    assert not online["nobody"]["online"]
    await bob.send(t="ping", ts=12345)
    assert (await bob.next("pong"))["ts"] == 12345

    # §5.2: a resend with the same id is answered with the original result, dup true.
    await alice.send(t="pub", id="alice-phone-1", to="user:bob", body=b64(b"hi bob"))
    dup = await alice.next("puback")
    assert dup["dup"] is True and (dup["seq"], dup["pos"]) == (ack["seq"], ack["pos"])

    # §5.8: a grant join creates the channel with the granted role; no grant: FORBIDDEN.
    await alice.send(t="join", rid=3, channel="conf-room")
    joined = await alice.next("joined")
    assert (joined["rid"], joined["conv"], joined["role"]) == (3, "ch:conf-room", "owner")
    await alice.send(t="invite", rid=4, channel="conf-room", user="bob")  # role: member
    assert (await alice.next("ok"))["rid"] == 4
    await bob.send(t="join", rid=5, channel="conf-missing")
    err = await bob.next("error")
    assert (err["code"], err["rid"]) == (4020, 5)  # a missing channel looks foreign
    await bob.send(t="leave", rid=6, channel="conf-missing")
    assert (await bob.next("error"))["code"] == 4021  # NOT_FOUND: not in it
    await alice.send(t="del", rid=7, conv="dm:alice:bob", seq=ack["seq"])
    assert (await alice.next("ok"))["rid"] == 7

    # §5.11: metadata compare-and-set; the loser's error carries the current revision;
    # the change reaches members as a `meta` event whose body is JSON (§4.1).
    item = {"key": "topic", "value": "hi", "rev": 0}
    await alice.send(
        t="meta_set", rid=70, scope="channel", target="conf-room", op="set", items=[item], major=0
    )
    meta_ok = await alice.next("meta_ok")
    assert (meta_ok["rid"], meta_ok["major"]) == (70, 1)
    await alice.send(
        t="meta_set", rid=71, scope="channel", target="conf-room", op="set", items=[item]
    )
    err = await alice.next("error")
    assert (err["code"], err["rid"], err["rev"]) == (4024, 71, 1)
    await bob.send(t="meta_get", rid=72, scope="channel", target="conf-room")
    meta = await bob.next("meta")
    assert meta["major"] == 1 and meta["items"][0]["value"] == "hi"
    while not any(e["kind"] == "meta" for e in bob.feed):
        await bob.next("msgs")
    [change] = [e for e in bob.feed if e["kind"] == "meta"]
    assert (change["seq"], change["subject"]) == (1, "conf-room")
    assert json.loads(base64.b64decode(change["body"]))["items"][0]["rev"] == 1

    # §1: unknown t is an error only; a bad address is INVALID_ARGUMENT; both continue.
    await bob.send(t="teleport")
    assert (await bob.next("error"))["code"] == 4001
    await bob.send(t="pub", id="b1", to="planet:mars", body="")
    err = await bob.next("error")
    assert (err["code"], err["id"]) == (4022, "b1")

    # §2.2: refresh, then a refresh that fails closes the session with its code.
    await bob.send(t="auth", rid=8, token=token(app, secret, "bob"))
    assert (await bob.next("auth_ok"))["rid"] == 8
    await bob.send(t="auth", rid=9, token=token(app, secret, "mallory"))
    err = await bob.next("error")
    assert (err["code"], err["rid"]) == (4010, 9)
    try:
        await bob.next("never", timeout=5)
    except ConnectionClosed:
        pass
    assert bob.ws.close_code == 4010

    # §3.5: the same device logging in again replaces the older connection.
    again = await open_client(url, [JSON_SP])
    await again.login(token(app, secret, "alice"), "alice-phone")
    assert (await alice.next("error"))["code"] == 4005
    try:
        await alice.next("never", timeout=5)
    except ConnectionClosed:
        pass
    assert alice.ws.close_code == 4005
    await again.ws.close()

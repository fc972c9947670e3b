"""Every error code of the gateway, provoked over a real socket against a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from raw_client import Raw
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import (
    SUBPROTOCOL_JSON,
    Ack,
    Error,
    Hello,
    HistoryQuery,
    Join,
    Leave,
    Ping,
    Publish,
)
from relaydesk.protocol.tokens import mint_token

OTHER_APP, OTHER_SECRET = "other", "o" * 32

FAST = {
    "gateway": {
        "auth_timeout_ms": 1000,
        "heartbeat_timeout_ms": 1500,
        "publish_rate": 5,
        "publish_burst": 5,
        "flood_rejections": 20,
        "max_body": 1000,
        "max_frame": 4096,
    },
}


@pytest.fixture
def server(make_server: Callable[..., Any]) -> Any:
    srv = make_server(FAST)
    return srv


async def test_upgrade_without_subprotocol_is_refused(server: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(server.ws_url, subprotocols=["chat"])  # type: ignore[list-item]
    assert info.value.response.status_code == 403


async def test_malformed_frame_closes_with_bad_frame(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"), subprotocol=SUBPROTOCOL_JSON)
    await raw.ws.send("{not json")
    err = await raw.expect("error")
    assert err.code == ErrorCode.BAD_FRAME
    assert (await raw.closed())[0] == ErrorCode.BAD_FRAME


async def test_unknown_frame_is_reported_and_connection_continues(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"), subprotocol=SUBPROTOCOL_JSON)
    await raw.ws.send('{"t":"teleport"}')
    assert (await raw.expect("error")).code == ErrorCode.UNKNOWN_FRAME
    await raw.send(Ping(ts=1))
    assert (await raw.expect("pong")).ts == 1


async def test_frame_before_hello(server: Any) -> None:
    raw = await Raw.open(server.ws_url)
    await raw.send(Ping(ts=1))
    assert (await raw.expect("error")).code == ErrorCode.NOT_AUTHENTICATED
    assert (await raw.closed())[0] == ErrorCode.NOT_AUTHENTICATED


async def test_second_hello(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"))
    await raw.send(Hello(token=server.token("alice"), device="d1"))
    assert (await raw.expect("error")).code == ErrorCode.ALREADY_AUTHENTICATED


async def test_auth_timeout(server: Any) -> None:
    raw = await Raw.open(server.ws_url)
    assert (await raw.closed(5))[0] == ErrorCode.AUTH_TIMEOUT


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda s: "garbage", ErrorCode.TOKEN_INVALID),
        (lambda s: mint_token(s.app, "f" * 32, "alice", now=time.time()), ErrorCode.TOKEN_INVALID),
        (
            lambda s: mint_token(s.app, s.secret, "alice", now=time.time() - 100, ttl_s=10),
            ErrorCode.TOKEN_EXPIRED,
        ),
        (
            lambda s: mint_token("nosuchapp", "n" * 32, "alice", now=time.time()),
            ErrorCode.TOKEN_INVALID,
        ),
        (
            lambda s: mint_token(s.app, s.secret, "alice", now=time.time(), device="other"),
            ErrorCode.TOKEN_INVALID,
        ),
    ],
)
async def test_bad_tokens(server: Any, make: Callable[[Any], str], code: ErrorCode) -> None:
    raw = await Raw.open(server.ws_url)
    await raw.send(Hello(token=make(server), device="d1"))
    assert (await raw.expect("error")).code == code
    assert (await raw.closed())[0] == code


async def test_refresh_with_another_apps_token(make_server: Callable[..., Any]) -> None:
    srv = make_server(FAST)
    raw = await Raw.login(srv.ws_url, srv.token("alice"))
    from relaydesk.protocol.frames import Refresh

    other = mint_token("nosuchapp", "n" * 32, "alice", now=time.time())
    await raw.send(Refresh(rid=1, token=other))
    err = await raw.expect("error")
    assert err.code == ErrorCode.TOKEN_WRONG_APP and err.rid == 1


async def test_live_session_closes_when_token_expires_and_refresh_extends(server: Any) -> None:
    from relaydesk.protocol.frames import Refresh

    short = mint_token(server.app, server.secret, "alice", now=time.time(), ttl_s=2)
    keep = await Raw.login(server.ws_url, short, device="k")
    await keep.send(Refresh(rid=7, token=server.token("alice", ttl_s=600)))
    assert (await keep.expect("auth_ok")).rid == 7
    raw = await Raw.login(server.ws_url, short)
    for _ in range(6):  # keep the heartbeat alive so only the expiry can close it
        await asyncio.sleep(0.5)
        await keep.send(Ping(ts=1))
        try:
            await raw.send(Ping(ts=1))
        except ConnectionClosed:
            break
    assert (await raw.closed(5))[0] == ErrorCode.TOKEN_EXPIRED
    await keep.send(Ping(ts=2))
    while (await keep.expect("pong")).ts != 2:
        pass


async def test_forbidden_not_found_invalid_argument(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("mallory"))
    await raw.send(Publish(id="p1", to="channel:private", body=b"x"))
    err = await raw.expect("error")
    assert (err.code, err.id) == (ErrorCode.FORBIDDEN, "p1")
    await raw.send(HistoryQuery(rid=3, conv="dm:alice:bob"))
    err = await raw.expect("error")
    assert (err.code, err.rid) == (ErrorCode.FORBIDDEN, 3)
    await raw.send(Join(rid=4, channel="private"))  # not public, no grant
    assert (await raw.expect("error")).code == ErrorCode.FORBIDDEN
    await raw.send(Leave(rid=5, channel="private"))
    err = await raw.expect("error")
    assert (err.code, err.rid) == (ErrorCode.NOT_FOUND, 5)
    await raw.send(Publish(id="p2", to="planet:mars", body=b"x"))
    err = await raw.expect("error")
    assert (err.code, err.id) == (ErrorCode.INVALID_ARGUMENT, "p2")
    await raw.send(Ack(pos=10**9))
    assert (await raw.expect("error")).code == ErrorCode.INVALID_ARGUMENT


async def test_duplicate_id_mismatch(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"))
    await raw.send(Publish(id="same", to="user:bob", body=b"one"))
    first = await raw.expect("puback")
    await raw.send(Publish(id="same", to="user:bob", body=b"one"))
    again = await raw.expect("puback")
    assert again.dup and (again.seq, again.pos) == (first.seq, first.pos)
    await raw.send(Publish(id="same", to="user:bob", body=b"two"))
    err = await raw.expect("error")
    assert (err.code, err.id) == (ErrorCode.DUPLICATE_ID_MISMATCH, "same")


async def test_message_too_large_keeps_connection_and_frame_too_large_closes(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"))
    await raw.send(Publish(id="big", to="user:bob", body=b"x" * 1001))
    err = await raw.expect("error")
    assert (err.code, err.id) == (ErrorCode.MESSAGE_TOO_LARGE, "big")
    await raw.send(Publish(id="ok", to="user:bob", body=b"x" * 1000))
    assert (await raw.expect("puback")).id == "ok"
    await raw.send(Publish(id="huge", to="user:bob", body=b"x" * 5000))
    assert (await raw.expect("error")).code == ErrorCode.FRAME_TOO_LARGE
    assert (await raw.closed())[0] == ErrorCode.FRAME_TOO_LARGE


async def test_rate_limited_then_flooding_and_nothing_acknowledged_is_lost(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"))
    for i in range(40):
        await raw.send(Publish(id=f"r{i}", to="user:bob", body=str(i).encode()))
    acked, codes = [], []
    try:
        while True:
            frame = await raw.recv(5)
            if type(frame).__struct_config__.tag == "puback":
                acked.append(frame.id)
            elif isinstance(frame, Error):
                codes.append(frame.code)
    except Exception:
        pass
    assert acked == [f"r{i}" for i in range(5)]
    assert codes.count(ErrorCode.RATE_LIMITED) == 19 and codes[-1] == ErrorCode.FLOODING
    assert raw.ws.close_code == ErrorCode.FLOODING
    bob = await Raw.login(server.ws_url, server.token("bob"))
    await asyncio.sleep(0.2)
    await bob.send(HistoryQuery(rid=1, conv="dm:alice:bob", limit=100))
    page = await bob.expect("history")
    assert [e.id for e in page.items] == acked


async def test_heartbeat_timeout(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"))
    start = time.monotonic()
    assert (await raw.closed(6))[0] == ErrorCode.HEARTBEAT_TIMEOUT
    assert time.monotonic() - start < 4


async def test_shutdown_tells_clients(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"))
    await asyncio.get_running_loop().run_in_executor(None, server.stop)
    assert (await raw.closed(6))[0] == ErrorCode.SERVER_SHUTDOWN


async def test_tenants_are_isolated(make_server: Callable[..., Any]) -> None:
    srv = make_server({**FAST, "apps": [{"id": OTHER_APP, "secret": OTHER_SECRET}]})

    def other_token(user: str) -> str:
        return srv.token(user, app=OTHER_APP, secret=OTHER_SECRET, channels={"room": "owner"})

    demo_alice = await Raw.login(srv.ws_url, srv.token("alice", channels={"room": "owner"}))
    other_alice = await Raw.login(srv.ws_url, other_token("alice"), device="o1")
    for raw in (demo_alice, other_alice):
        await raw.send(Join(rid=1, channel="room"))
        assert (await raw.expect("joined")).role == "owner"
    await demo_alice.send(Publish(id="t1", to="channel:room", body=b"demo only"))
    await demo_alice.expect("puback")
    await other_alice.send(Publish(id="t1", to="user:bob", body=b"other only"))
    assert (await other_alice.expect("puback")).dup is False  # ids are per app too
    await asyncio.sleep(0.3)
    assert all(e.body != b"demo only" for e in other_alice.events)
    assert all(e.body != b"other only" for e in demo_alice.events)
    await other_alice.send(HistoryQuery(rid=2, conv="ch:room"))
    page = await other_alice.expect("history")
    assert page.items == []
    # One app's secret never opens another app's HTTP API.
    import httpx

    r = httpx.get(
        f"{srv.http_url}/v1/apps/demo/history",
        params={"conv": "ch:room"},
        headers={"Authorization": f"Bearer {OTHER_SECRET}"},
    )
    assert r.status_code == 403
    r = httpx.get(
        f"{srv.http_url}/v1/apps/demo/history",
        params={"conv": "ch:room"},
        headers={"Authorization": f"Bearer {other_token('alice')}"},
    )
    assert r.status_code == 401 and r.json()["error"]["name"] == "TOKEN_WRONG_APP"

"""The WebSocket limits of docs/protocol.md §8.1, each provoked against a real server.

One test (or more) per row of the limits table; the row names are in the test names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from raw_client import Raw
from websockets.exceptions import ConnectionClosed

from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Error,
    Hello,
    Ping,
    Publish,
)
from relaydesk.protocol.tokens import mint_token

MAX_FRAME = 8192
LIMITS = {
    "gateway": {
        "auth_timeout_ms": 3000,
        "publish_rate": 5,
        "publish_burst": 5,
        "flood_rejections": 20,
        "max_body": 1000,
        "max_frame": MAX_FRAME,
    },
}


@pytest.fixture
def server(make_server: Callable[..., Any]) -> Any:
    return make_server(LIMITS)


async def _refused(raw: Raw) -> tuple[int | None, list[int]]:
    """Read until the server closes; the close code and the error codes seen."""
    codes: list[int] = []
    try:
        while True:
            frame = await raw.recv(5)
            if isinstance(frame, Error):
                codes.append(frame.code)
    except (ConnectionClosed, TimeoutError):
        pass
    await raw.ws.wait_closed()
    return raw.ws.close_code, codes


# -- max_frame -------------------------------------------------------------------------


async def test_max_frame_counts_utf8_bytes_not_characters(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"), subprotocol=SUBPROTOCOL_JSON)
    text = '{"t":"ping","ts":1,"pad":"' + "é" * 5000 + '"}'  # 5,027 chars, 10,027 bytes
    assert len(text) < MAX_FRAME < len(text.encode())
    await raw.ws.send(text)
    assert await _refused(raw) == (ErrorCode.FRAME_TOO_LARGE, [ErrorCode.FRAME_TOO_LARGE])


@pytest.mark.parametrize("subprotocol", [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK])
async def test_max_frame_far_over_the_limit_is_4031_not_1009(server: Any, subprotocol: str) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"), subprotocol=subprotocol)
    await raw.send(Publish(id="huge", to="user:bob", body=b"x" * (200 * 1024)))
    assert await _refused(raw) == (ErrorCode.FRAME_TOO_LARGE, [ErrorCode.FRAME_TOO_LARGE])


async def test_max_frame_just_under_the_limit_passes(server: Any) -> None:
    raw = await Raw.login(server.ws_url, server.token("alice"), subprotocol=SUBPROTOCOL_JSON)
    text = '{"t":"ping","ts":1,"pad":"' + "é" * 4000 + '"}'  # 8,027 bytes
    assert len(text.encode()) <= MAX_FRAME
    await raw.ws.send(text)
    assert (await raw.expect("pong")).ts == 1


# -- decode depth ------------------------------------------------------------------------


@pytest.mark.parametrize("subprotocol", [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK])
async def test_deeply_nested_frames_are_bad_frame_and_log_nothing(
    server: Any, subprotocol: str
) -> None:
    depth = 1900  # fits in MAX_FRAME, far beyond the decoder's depth bound
    if subprotocol == SUBPROTOCOL_JSON:
        nested: str | bytes = '{"t":"hello","x":' + "[" * depth + "]" * depth + "}"
    else:
        nested = b"\x82\xa1t\xa5hello\xa1x" + b"\x91" * depth + b"\xc0"
    before = server.log_path.read_text()
    for _ in range(30):
        raw = await Raw.open(server.ws_url, subprotocol)
        await raw.ws.send(nested)
        assert await _refused(raw) == (ErrorCode.BAD_FRAME, [ErrorCode.BAD_FRAME])
    added = server.log_path.read_text()[len(before) :]
    assert "Traceback" not in added and "INTERNAL" not in added


# -- publish rate, FLOODING ---------------------------------------------------------------


async def test_publish_rate_flooding_fires_against_a_client_that_ignores_4040(
    server: Any,
) -> None:
    """The audit saw 7,909 RATE_LIMITED in a row on an open connection: a publish got
    through now and then and reset the count.  A client sending 20x the rate and
    ignoring every 4040 must be closed with 4041 within a few seconds."""
    raw = await Raw.login(server.ws_url, server.token("alice"))
    codes: list[int] = []

    async def read() -> None:
        try:
            while True:
                frame = await raw.recv(10)
                if isinstance(frame, Error):
                    codes.append(frame.code)
        except (ConnectionClosed, TimeoutError):
            pass

    reader = asyncio.create_task(read())
    start = time.monotonic()
    try:
        for i in range(400):  # 100/s against a rate of 5/s, for at most 4 s
            await raw.send(Publish(id=f"f{i}", to="user:bob", body=b"x"))
            await asyncio.sleep(0.01)
    except ConnectionClosed:
        pass
    await reader
    assert raw.ws.close_code == ErrorCode.FLOODING
    assert codes[-1] == ErrorCode.FLOODING
    assert 19 <= codes.count(ErrorCode.RATE_LIMITED) < 60  # refills while it runs
    assert time.monotonic() - start < 4


# -- token lifetime --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "issued_offset_s", "lifetime_s"),
    [("ten-year token", 0, 10 * 365 * 86400), ("issued an hour ahead", 3600, 600)],
)
async def test_token_lifetime_and_clock_leeway(
    server: Any, label: str, issued_offset_s: int, lifetime_s: int
) -> None:
    iat = int(time.time()) + issued_offset_s
    token = jwt.encode(
        {"app": server.app, "sub": "alice", "iat": iat, "exp": iat + lifetime_s},
        server.secret,
        algorithm="HS256",
        headers={"kid": server.app},
    )
    raw = await Raw.open(server.ws_url)
    await raw.send(Hello(token=token, device="d1"))
    assert await _refused(raw) == (ErrorCode.TOKEN_INVALID, [ErrorCode.TOKEN_INVALID]), label


async def test_token_within_the_leeway_is_accepted(server: Any) -> None:
    token = mint_token(server.app, server.secret, "alice", now=time.time() + 3, ttl_s=7 * 86400)
    raw = await Raw.login(server.ws_url, token)
    await raw.send(Ping(ts=4))
    assert (await raw.expect("pong")).ts == 4


# -- schema bounds: BAD_FRAME, closes (docs/protocol.md §1, §8.1) ---------------------


@pytest.mark.parametrize(
    ("label", "frame"),
    [
        ("token over 4096 chars", {"t": "hello", "token": "x" * 4097, "device": "d1"}),
        ("device not a Name", {"t": "hello", "token": "x", "device": "a:b"}),
        ("history limit 501", {"t": "history_q", "rid": 1, "conv": "user:bob", "limit": 501}),
        ("history limit 0", {"t": "history_q", "rid": 1, "conv": "user:bob", "limit": 0}),
        ("presence of 501 users", {"t": "presence_q", "rid": 1, "users": ["u"] * 501}),
        ("presence of nobody", {"t": "presence_q", "rid": 1, "users": []}),
        ("pub id with a space", {"t": "pub", "id": "a b", "to": "user:bob", "body": ""}),
        ("address too short", {"t": "pub", "id": "a", "to": "u:", "body": ""}),
        ("sdk label over 64", {"t": "hello", "token": "x", "device": "d", "sdk": "s" * 65}),
        ("body not base64", {"t": "pub", "id": "a", "to": "user:bob", "body": "-_-_"}),
        ("rid over 2^53", {"t": "join", "rid": 2**53 + 1, "channel": "room"}),
    ],
)
async def test_schema_bounds_are_bad_frame(server: Any, label: str, frame: dict[str, Any]) -> None:
    import json

    hello = frame["t"] == "hello"
    if hello:
        raw = await Raw.open(server.ws_url, SUBPROTOCOL_JSON)
    else:
        raw = await Raw.login(server.ws_url, server.token("alice"), subprotocol=SUBPROTOCOL_JSON)
    await raw.ws.send(json.dumps(frame))
    assert await _refused(raw) == (ErrorCode.BAD_FRAME, [ErrorCode.BAD_FRAME]), label

"""Codec round trips, batch splicing, strict decoding and a decoder fuzz test."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaydesk.protocol.codec import client_codec, server_codec
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    SUBPROTOCOLS,
    Ack,
    Event,
    Hello,
    HistoryQuery,
    Messages,
    PubAck,
    Publish,
)

EVENT = Event(
    conv="ch:room",
    pos=7,
    seq=3,
    kind="msg",
    sender="alice",
    dev="a1",
    id="m1",
    ts=123,
    body=b"\x00\xffhello",
)


@pytest.mark.parametrize("sp", SUBPROTOCOLS)
def test_client_frames_round_trip(sp: str) -> None:
    server, client = server_codec(sp), client_codec(sp)
    for frame in [
        Hello(token="t", device="d1", cursor=5, sdk="py/0.1", region="eu", net="wifi"),
        Publish(id="m-1", to="user:bob", body=b"\x00\x01", enc="megolm"),
        Ack(pos=99),
        HistoryQuery(rid=4, conv="dm:a:b", before=10, limit=20),
    ]:
        assert server.decode(client.encode(frame)) == frame


@pytest.mark.parametrize("sp", SUBPROTOCOLS)
@pytest.mark.parametrize("n", [0, 1, 15, 16, 300, 70_000])
def test_batch_splice_equals_regular_encoding(sp: str, n: int) -> None:
    server, client = server_codec(sp), client_codec(sp)
    items = [server.encode_event(EVENT)] * n
    spliced = server.encode_batch(items)
    assert client.decode(spliced) == Messages(items=[EVENT] * n)
    if n < 300:
        assert spliced == server.encode(Messages(items=[EVENT] * n))


def test_json_is_text_with_base64_body() -> None:
    data = server_codec(SUBPROTOCOL_JSON).encode(PubAck(id="m", conv="c", seq=1, pos=2, ts=3))
    assert data.decode().startswith('{"t":"puback"')
    ev = msgspec.json.decode(server_codec(SUBPROTOCOL_JSON).encode_event(EVENT))
    assert ev["body"] == "AP9oZWxsbw==" and ev["from"] == "alice"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", ErrorCode.BAD_FRAME),
        (b"[]", ErrorCode.BAD_FRAME),
        (b'{"t":"nope"}', ErrorCode.UNKNOWN_FRAME),
        (b'{"t":"pub","id":"","to":"user:b","body":""}', ErrorCode.BAD_FRAME),
        (b'{"t":"pub","id":"x","to":"user:b"}', ErrorCode.BAD_FRAME),
        (b'{"t":"hello","token":"t","device":"bad:device"}', ErrorCode.BAD_FRAME),
        (b'{"t":"ack","pos":-1}', ErrorCode.BAD_FRAME),
        (b'{"t":"history_q","rid":1,"conv":"ch:x","limit":501}', ErrorCode.BAD_FRAME),
        (b'{"t":"welcome"}', ErrorCode.UNKNOWN_FRAME),  # a server frame sent by a client
    ],
)
def test_bad_frames_get_stable_codes(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        server_codec(SUBPROTOCOL_JSON).decode(raw)
    assert info.value.code is code
    as_msgpack = raw
    try:
        as_msgpack = msgspec.msgpack.encode(msgspec.json.decode(raw))
    except msgspec.DecodeError:
        as_msgpack = b"\xc1"
    with pytest.raises(ProtocolError) as info:
        server_codec(SUBPROTOCOL_MSGPACK).decode(as_msgpack)
    assert info.value.code is code


def test_text_frame_on_msgpack_is_bad_frame() -> None:
    with pytest.raises(ProtocolError) as info:
        server_codec(SUBPROTOCOL_MSGPACK).decode('{"t":"ping","ts":1}')
    assert info.value.code is ErrorCode.BAD_FRAME


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_decoder_only_raises_protocol_errors(data: bytes) -> None:
    for sp in SUBPROTOCOLS:
        try:
            server_codec(sp).decode(data)
        except ProtocolError as exc:
            assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_FRAME)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "t",
                "id",
                "to",
                "body",
                "token",
                "device",
                "pos",
                "rid",
                "channel",
                "conv",
                "users",
                "limit",
            ]
        ),
        json_values | st.sampled_from(["pub", "hello", "ack", "join", "ping"]),
        max_size=6,
    )
)
def test_fuzz_structured_frames(obj: dict[str, object]) -> None:
    """Well-formed encodings with arbitrary fields: a frame or a ProtocolError."""
    for sp in SUBPROTOCOLS:
        enc = msgspec.json.encode(obj) if sp == SUBPROTOCOL_JSON else msgspec.msgpack.encode(obj)
        try:
            server_codec(sp).decode(enc)
        except ProtocolError:
            pass

"""Codecs for protocol v1: JSON (text frames) and MessagePack (binary frames).

The subprotocol negotiated at the WebSocket upgrade picks the codec for the whole
connection (docs/protocol.md §1).  Decoding is strict: any frame that fails the
schema raises ``ProtocolError`` with a stable code, never a library exception.

Fan-out encodes each ``Event`` once per codec and builds a ``msgs`` frame by
splicing pre-encoded items after a fixed prefix (``encode_batch``): the cost per
recipient connection is one join, not one serialisation per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import msgspec

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import (
    CLIENT_TAGS,
    SERVER_TAGS,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    ClientFrame,
    Event,
    ServerFrame,
)

F = TypeVar("F")

# Nesting depth is bounded by the decoder: msgspec recurses through the interpreter's
# recursion guard, so a frame nested deeper than that limit (about 1,000 levels; a
# valid frame nests 3) fails with RecursionError, which is a client error here.
TOO_DEEP = "frame nested too deeply"


class _Peek(msgspec.Struct):
    t: str = ""


class Codec(Generic[F]):
    """Encode any frame; decode the frames one side of the connection receives."""

    name: str
    binary: bool

    def __init__(self, decoded: Any, known_tags: frozenset[str]) -> None:
        self._decoded_type = decoded
        self._known = known_tags

    def encode(self, frame: msgspec.Struct) -> bytes:
        raise NotImplementedError

    def encode_event(self, event: Event) -> bytes:
        raise NotImplementedError

    def encode_batch(self, items: Sequence[bytes]) -> bytes:
        """A ``msgs`` frame from events already encoded by ``encode_event``."""
        raise NotImplementedError

    def decode(self, data: bytes | str) -> F:
        raise NotImplementedError

    def _classify(self, data: bytes | str, peek: Any, exc: Exception) -> ProtocolError:
        if isinstance(exc, RecursionError):
            return ProtocolError(ErrorCode.BAD_FRAME, TOO_DEEP)
        try:
            tag = peek(data).t
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ProtocolError(ErrorCode.BAD_FRAME, f"undecodable frame: {exc}")
        except RecursionError:
            return ProtocolError(ErrorCode.BAD_FRAME, TOO_DEEP)
        if tag and tag not in self._known:
            return ProtocolError(ErrorCode.UNKNOWN_FRAME, f"unknown frame type {tag!r}")
        return ProtocolError(ErrorCode.BAD_FRAME, f"invalid frame: {exc}")


class JsonCodec(Codec[F]):
    name = SUBPROTOCOL_JSON
    binary = False

    def __init__(self, decoded: Any, known_tags: frozenset[str]) -> None:
        super().__init__(decoded, known_tags)
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(decoded)
        self._peek = msgspec.json.Decoder(_Peek).decode
        self._batch_head = b'{"t":"msgs","items":['

    def encode(self, frame: msgspec.Struct) -> bytes:
        return self._enc.encode(frame)

    def encode_event(self, event: Event) -> bytes:
        return self._enc.encode(event)

    def encode_batch(self, items: Sequence[bytes]) -> bytes:
        return b"".join((self._batch_head, b",".join(items), b"]}"))

    def decode(self, data: bytes | str) -> F:
        try:
            return self._dec.decode(data)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise self._classify(data, self._peek, exc) from None


class MsgpackCodec(Codec[F]):
    name = SUBPROTOCOL_MSGPACK
    binary = True

    def __init__(self, decoded: Any, known_tags: frozenset[str]) -> None:
        super().__init__(decoded, known_tags)
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(decoded)
        self._peek = msgspec.msgpack.Decoder(_Peek).decode
        # fixmap(2) "t" "msgs" "items", then an array header per batch.
        self._batch_head = b"\x82\xa1t\xa4msgs\xa5items"

    def encode(self, frame: msgspec.Struct) -> bytes:
        return self._enc.encode(frame)

    def encode_event(self, event: Event) -> bytes:
        return self._enc.encode(event)

    def encode_batch(self, items: Sequence[bytes]) -> bytes:
        n = len(items)
        if n < 16:
            head = bytes((0x90 | n,))
        elif n < 0x10000:
            head = b"\xdc" + n.to_bytes(2, "big")
        else:
            head = b"\xdd" + n.to_bytes(4, "big")
        return b"".join((self._batch_head, head, *items))

    def decode(self, data: bytes | str) -> F:
        if isinstance(data, str):
            raise ProtocolError(ErrorCode.BAD_FRAME, "text frame on the msgpack subprotocol")
        try:
            return self._dec.decode(data)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise self._classify(data, self._peek, exc) from None


def server_codec(subprotocol: str) -> Codec[ClientFrame]:
    """The codec a gateway uses on a connection that negotiated ``subprotocol``."""
    if subprotocol == SUBPROTOCOL_MSGPACK:
        return MsgpackCodec(ClientFrame, CLIENT_TAGS)
    if subprotocol == SUBPROTOCOL_JSON:
        return JsonCodec(ClientFrame, CLIENT_TAGS)
    raise ValueError(f"unsupported subprotocol {subprotocol!r}")


def client_codec(subprotocol: str) -> Codec[ServerFrame]:
    """The codec a client uses on a connection that negotiated ``subprotocol``."""
    if subprotocol == SUBPROTOCOL_MSGPACK:
        return MsgpackCodec(ServerFrame, SERVER_TAGS)
    if subprotocol == SUBPROTOCOL_JSON:
        return JsonCodec(ServerFrame, SERVER_TAGS)
    raise ValueError(f"unsupported subprotocol {subprotocol!r}")

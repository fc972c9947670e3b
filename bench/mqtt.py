"""A minimal MQTT 3.1.1 client for the load generator (QoS 0/1 only).

Only what the benchmark needs: CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH at
QoS 1 with PUBACK handling on both sides, DISCONNECT.  It is an
``asyncio.Protocol`` rather than streams so that a received chunk is parsed in
one pass and every PUBACK it calls for goes out in a single ``write``: the
broker, not this client, should be what the benchmark measures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    1,
    2,
    3,
    4,
    8,
    9,
    12,
    13,
    14,
)


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def connect_packet(client_id: str, keepalive_s: int = 0, clean: bool = True) -> bytes:
    body = _str(b"MQTT") + b"\x04" + bytes((0x02 if clean else 0,))
    body += keepalive_s.to_bytes(2, "big") + _str(client_id.encode())
    return bytes((CONNECT << 4,)) + _remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, topic: str, qos: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + _str(topic.encode()) + bytes((qos,))
    return bytes((SUBSCRIBE << 4 | 0x02,)) + _remaining_length(len(body)) + body


def publish_prefix(topic: str, payload_len: int, qos: int = 1) -> tuple[bytes, bytes]:
    """Fixed header + topic for a PUBLISH of ``payload_len`` bytes; the packet id goes after."""
    topic_b = _str(topic.encode())
    rest = len(topic_b) + (2 if qos else 0) + payload_len
    return bytes((PUBLISH << 4 | qos << 1,)) + _remaining_length(rest), topic_b


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


DISCONNECT_PACKET = b"\xe0\x00"


class MqttProtocol(asyncio.Protocol):
    """One MQTT connection.  ``on_publish(payload)`` runs for every PUBLISH received."""

    def __init__(self, on_publish: Callable[[bytes], None] | None = None) -> None:
        self.on_publish = on_publish
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[int] = loop.create_future()
        self.suback: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.pubacks = 0  # PUBACKs received (publisher side)
        self._pid = 0
        self._head = b""
        self._topic = b""

    # -- sending ---------------------------------------------------------------------

    async def handshake(self, client_id: str, topic: str | None = None, qos: int = 1) -> None:
        assert self.transport is not None
        self.transport.write(connect_packet(client_id))
        code = await self.connack
        if code != 0:
            raise ConnectionError(f"CONNACK return code {code}")
        if topic is not None:
            self.transport.write(subscribe_packet(1, topic, qos))
            granted = await self.suback
            if granted == 0x80:
                raise ConnectionError(f"SUBSCRIBE {topic} refused")

    def set_topic(self, topic: str, payload_len: int) -> None:
        self._head, self._topic = publish_prefix(topic, payload_len, 1)

    def publish(self, payload: bytes) -> None:
        """PUBLISH at QoS 1; the PUBACK bumps ``pubacks``."""
        self._pid = self._pid % 65535 + 1
        assert self.transport is not None
        self.transport.write(
            b"".join((self._head, self._topic, self._pid.to_bytes(2, "big"), payload))
        )

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(DISCONNECT_PACKET)
            self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.connack, self.suback):
            fut.cancel()  # an awaiting handshake sees CancelledError; nobody else logs it
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        n = len(buf)
        off = 0
        acks: list[bytes] = []
        on_publish = self.on_publish
        while n - off >= 2:
            head = buf[off]
            p = off + 1
            rl = 0
            shift = 0
            while True:
                if p >= n:
                    rl = -1
                    break
                b = buf[p]
                p += 1
                rl |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            if rl < 0 or p + rl > n:
                break
            end = p + rl
            kind = head >> 4
            if kind == PUBLISH:
                q = p + 2 + ((buf[p] << 8) | buf[p + 1])
                if head & 0x06:
                    acks.append(b"\x40\x02" + bytes(buf[q : q + 2]))
                    q += 2
                if on_publish is not None:
                    on_publish(bytes(buf[q:end]))
            elif kind == PUBACK:
                self.pubacks += 1
            elif kind == CONNACK:
                if not self.connack.done():
                    self.connack.set_result(buf[p + 1])
            elif kind == SUBACK:
                if not self.suback.done():
                    self.suback.set_result(buf[end - 1])
            off = end
        if off:
            del buf[:off]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))


async def open_mqtt(
    host: str,
    port: int,
    client_id: str,
    *,
    topic: str | None = None,
    on_publish: Callable[[bytes], None] | None = None,
) -> MqttProtocol:
    """Connect, CONNECT, and SUBSCRIBE to ``topic`` at QoS 1 when given."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: MqttProtocol(on_publish), host, port)
    await proto.handshake(client_id, topic)
    return proto

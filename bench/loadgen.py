"""The lean load generator: one publisher process, N subscriber processes.

Theory of operation
-------------------
Every system under test is driven the same way.  A ``Target`` names it (relaydesk,
the plain WebSocket peer, Mosquitto, NATS, Redis) and where it listens; the
per-system client code is a small adapter (``_open_subscriber`` /
``_open_publisher``) over picows (WebSocket), ``bench.mqtt`` or a raw text
protocol on an ``asyncio.Protocol``.

Messages are 100 bytes: the publisher's message index and the send time
(``time.monotonic_ns()``, CLOCK_MONOTONIC, comparable across processes) as two
big-endian u64, then padding.  Subscribers only count and read those 16 bytes;
relaydesk ``msgs`` frames are decoded with one ``msgspec`` call into a struct
that keeps three fields per event.

Flow control: each subscriber process keeps the highest index each of its
subscribers has seen and publishes the minimum (its "low water") in a shared
array, with the total deliveries it has counted.  Whenever its low water moves it
writes a byte to a pipe the publisher watches, so the publisher — which never
runs more than ``window`` (1,000) messages ahead of the slowest subscriber —
wakes without polling.  Delivery is in order on every target, so "highest index
seen" is also "everything up to it seen".

The parent (``bench.run``) steers the children over ``multiprocessing`` pipes
with small command tuples; every wait is bounded by a timeout.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import socket
import struct
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench import mqtt

MESSAGE_SIZE = 100
WINDOW = 1000  # messages the publisher may run ahead of the slowest subscriber
ACK_EVERY = 500  # relaydesk: cumulative ack after this many events
CONNECT_CONCURRENCY = 64  # handshakes in flight per process
MAX_FAILURES = 5  # failed connects/joins a process reports; past it, it stops trying
_HEAD = struct.Struct(">QQ")
_PAD = b"." * (MESSAGE_SIZE - _HEAD.size)
_CTX = mp.get_context("fork")


def make_payload(index: int) -> bytes:
    return _HEAD.pack(index, time.monotonic_ns()) + _PAD


@dataclass(frozen=True)
class Target:
    """A system under test, as the generator sees it."""

    kind: str  # relaydesk | ws | mqtt | nats | redis
    host: str
    port: int
    channel: str = "bench"
    prefix: str = "b"  # user / client-id prefix, unique per server lifetime
    secret: str = ""  # relaydesk app secret (demo app)
    app: str = "demo"
    group: int = 0  # idle runs: subscribers join channel f"{channel}{i // group}"
    # relaydesk cluster runs: the port of every node.  Subscriber i connects to node
    # i % len(ports); the publisher holds one connection per node and sends message k
    # through node k % len(ports).  Empty: ``port`` only.
    ports: tuple[int, ...] = ()
    # Client source addresses (relaydesk subscribers): subscriber i binds
    # ``sources[i % len(sources)]``.  One source address has only the ephemeral port
    # range (~28k ports) towards one server port; 127.0.0.2, 127.0.0.3, ... are
    # loopback too on Linux and each brings its own range.  Empty: the kernel picks.
    sources: tuple[str, ...] = ()

    def channel_of(self, i: int) -> str:
        return f"{self.channel}{i // self.group}" if self.group else self.channel

    def port_of(self, i: int) -> int:
        return self.ports[i % len(self.ports)] if self.ports else self.port

    def source_of(self, i: int) -> str:
        return self.sources[i % len(self.sources)] if self.sources else ""

    @property
    def nodes(self) -> int:
        return len(self.ports) or 1


# ----------------------------------------------------------------- shared tally


class Tally:
    """Per-process counters: highest index per subscriber, low water, deliveries."""

    def __init__(self, n: int, slot: int, low_arr: Any, deliv_arr: Any, wake_fd: int) -> None:
        self.progress = [0] * n
        self.low = 0
        self.n_low = n
        self.delivered = 0
        self.slot = slot
        self._low_arr = low_arr
        self._deliv_arr = deliv_arr
        self._wake_fd = wake_fd
        self.lat_from = 1 << 62  # record latencies of messages with index >= lat_from
        self.lat = array.array("q")
        self.lat_cap = 3_000_000
        self.frames = 0
        # Longest time between two deliveries to one subscriber while latencies are
        # recorded (a stall of the server shows here on every subscriber at once).
        self.last_ns = [0] * n
        self.gap_ns = 0

    def arrived(self, i: int, now: int) -> None:
        """Subscriber ``i`` got a frame at ``now`` (ns) during a latency run."""
        last = self.last_ns[i]
        if last and now - last > self.gap_ns:
            self.gap_ns = now - last
        self.last_ns[i] = now

    def got(self, i: int, index: int, count: int) -> None:
        self.frames += 1
        self.delivered += count
        self._deliv_arr[self.slot] = self.delivered
        progress = self.progress
        old = progress[i]
        if index <= old:
            return
        progress[i] = index
        if old == self.low:
            self.n_low -= 1
            if self.n_low == 0:
                low = min(progress)
                self.low = low
                self.n_low = progress.count(low)
                self._low_arr[self.slot] = low
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_fd, b"w")


# ----------------------------------------------------------------- relaydesk wire


class _Ev(msgspec.Struct):
    pos: int = 0
    kind: str = ""
    body: bytes = b""


class _In(msgspec.Struct):
    t: str = ""
    items: list[_Ev] = []
    code: int = 0
    msg: str = ""
    pos: int = 0
    seq: int = 0


_DECODE = msgspec.msgpack.Decoder(_In).decode
_ENCODE = msgspec.msgpack.Encoder().encode
SUBPROTOCOL = "relaydesk.v1.msgpack"


def _token(target: Target, user: str, role: str) -> str:
    from relaydesk.protocol.tokens import mint_token

    grant = {"*": role} if target.group else {target.channel: role}
    return mint_token(target.app, target.secret, user, now=time.time(), ttl_s=7200, channels=grant)


class _RelaydeskClient(WSListener):
    """One relaydesk connection: login, join, count ``msgs``, ack cumulatively."""

    def __init__(self, tally: Tally | None, i: int) -> None:
        self.tally = tally
        self.i = i
        self.transport: WSTransport | None = None
        self.waiting: dict[str, asyncio.Future[_In]] = {}
        self.unacked = 0
        self.errors: list[str] = []
        self.pubacks = 0
        self.closed = asyncio.get_running_loop().create_future()

    def expect(self, tag: str) -> asyncio.Future[_In]:
        fut = self.waiting[tag] = asyncio.get_running_loop().create_future()
        return fut

    def send(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.BINARY, _ENCODE(frame))

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("disconnected"))
        if not self.closed.done():
            self.closed.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.BINARY:
            if frame.msg_type == WSMsgType.CLOSE:
                self.errors.append(f"close {frame.get_close_code()} {frame.get_close_reason()}")
                transport.disconnect()
            return
        f = _DECODE(frame.get_payload_as_bytes())
        t = f.t
        if t == "msgs":
            items = f.items
            if not items:
                return
            self.unacked += len(items)
            if self.unacked >= ACK_EVERY:
                self.unacked = 0
                transport.send(WSMsgType.BINARY, _ENCODE({"t": "ack", "pos": items[-1].pos}))
            tally = self.tally
            if tally is None:
                return
            # Count by index: in-order, exactly-once delivery makes the jump the count.
            k = len(items) - 1
            while k >= 0 and items[k].kind != "msg":
                k -= 1
            if k < 0:
                return
            index = _HEAD.unpack_from(items[k].body)[0]
            old = tally.progress[self.i]
            if index >= tally.lat_from:
                now = time.monotonic_ns()
                tally.arrived(self.i, now)
                lat = tally.lat
                if len(lat) < tally.lat_cap:
                    for e in items:
                        if e.kind == "msg":
                            idx, ts = _HEAD.unpack_from(e.body)
                            if idx >= tally.lat_from:
                                lat.append(now - ts)
            tally.got(self.i, index, index - old if index > old else 0)
        elif t == "puback":
            self.pubacks += 1
        else:
            fut = self.waiting.pop(t, None)
            if fut is not None and not fut.done():
                fut.set_result(f)
            elif t == "error":
                self.errors.append(f"error {f.code}: {f.msg}")
                for fut in self.waiting.values():
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"error {f.code}: {f.msg}"))
                self.waiting.clear()


def _bound_socket(source: str) -> Callable[[Any], socket.socket]:
    """A picows ``socket_factory``: a TCP socket bound to ``source`` (port chosen at
    connect time, IP_BIND_ADDRESS_NO_PORT, so that the kernel picks a port unique for
    the 4-tuple and may reuse loopback TIME_WAIT ports as for an unbound socket)."""

    def make(_url: Any) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    return make


_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2+


async def _relaydesk_connect(
    target: Target,
    tally: Tally | None,
    i: int,
    user: str,
    role: str,
    port: int = 0,
    source: str = "",
) -> _RelaydeskClient:
    url = f"ws://{target.host}:{port or target.port}/v1/ws"
    _, client = await ws_connect(
        lambda: _RelaydeskClient(tally, i),
        url,
        max_frame_size=64 * 1024 * 1024,
        extra_headers={"Sec-WebSocket-Protocol": SUBPROTOCOL},
        websocket_handshake_timeout=30,
        socket_factory=_bound_socket(source) if source else None,
    )
    assert isinstance(client, _RelaydeskClient)
    synced = client.expect("synced")
    client.expect("welcome")
    client.send({"t": "hello", "token": _token(target, user, role), "device": "d0"})
    await asyncio.wait_for(synced, 60)
    return client


async def _relaydesk_join(client: _RelaydeskClient, channel: str) -> None:
    joined = client.expect("joined")
    client.send({"t": "join", "rid": 1, "channel": channel})
    await asyncio.wait_for(joined, 60)


# ----------------------------------------------------------------- plain WebSocket peer


class _WsSub(WSListener):
    def __init__(self, tally: Tally, i: int) -> None:
        self.tally = tally
        self.i = i

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.BINARY:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()
            return
        index, ts = _HEAD.unpack_from(frame.get_payload_as_bytes())
        tally = self.tally
        if index >= tally.lat_from and len(tally.lat) < tally.lat_cap:
            now = time.monotonic_ns()
            tally.arrived(self.i, now)
            tally.lat.append(now - ts)
        tally.got(self.i, index, 1)


class _WsPub(WSListener):
    pass


# ----------------------------------------------------------------- MQTT / NATS / Redis


def _on_payload(tally: Tally, i: int) -> Callable[[bytes], None]:
    unpack = _HEAD.unpack_from

    def on_payload(payload: bytes) -> None:
        index, ts = unpack(payload)
        if index >= tally.lat_from and len(tally.lat) < tally.lat_cap:
            now = time.monotonic_ns()
            tally.arrived(i, now)
            tally.lat.append(now - ts)
        tally.got(i, index, 1)

    return on_payload


class _TextSub(asyncio.Protocol):
    """NATS (``MSG subj sid n``) or Redis RESP (``*3 message chan payload``) subscriber."""

    def __init__(self, kind: str, on_payload: Callable[[bytes], None] | None) -> None:
        self.kind = kind
        self.on_payload = on_payload
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        off = 0
        n = len(buf)
        on_payload = self.on_payload
        nats = self.kind == "nats"
        while off < n:
            eol = buf.find(b"\r\n", off)
            if eol < 0:
                break
            if nats:
                if buf.startswith(b"MSG ", off):
                    size = int(buf[buf.rfind(b" ", off, eol) + 1 : eol])
                    end = eol + 2 + size + 2
                    if end > n:
                        break
                    if on_payload is not None:
                        on_payload(bytes(buf[eol + 2 : eol + 2 + size]))
                    off = end
                    continue
                line = bytes(buf[off:eol])
                off = eol + 2
                if line == b"PING":
                    assert self.transport is not None
                    self.transport.write(b"PONG\r\n")
                elif line == b"PONG" and not self.ready.done():
                    self.ready.set_result(None)
                elif line.startswith(b"-ERR"):
                    print(f"nats: {line!r}", file=sys.stderr)
            else:
                # RESP push: *3\r\n$7\r\nmessage\r\n$<c>\r\n<chan>\r\n$<n>\r\n<payload>\r\n
                if buf[off] != 0x2A:  # '*'
                    off = eol + 2
                    continue
                p = eol + 2
                parts: list[bytes] = []
                complete = True
                for _ in range(int(buf[off + 1 : eol])):
                    e2 = buf.find(b"\r\n", p)
                    if e2 < 0:
                        complete = False
                        break
                    if buf[p] == 0x24:  # '$'
                        size = int(buf[p + 1 : e2])
                        if e2 + 2 + size + 2 > n:
                            complete = False
                            break
                        parts.append(bytes(buf[e2 + 2 : e2 + 2 + size]))
                        p = e2 + 2 + size + 2
                    else:
                        parts.append(bytes(buf[p + 1 : e2]))
                        p = e2 + 2
                if not complete:
                    break
                off = p
                if parts and parts[0] == b"message":
                    if on_payload is not None:
                        on_payload(parts[2])
                elif parts and parts[0] == b"subscribe" and not self.ready.done():
                    self.ready.set_result(None)
        if off:
            del buf[:off]


async def _open_text(
    target: Target, on_payload: Callable[[bytes], None] | None, subscribe: bool
) -> _TextSub:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: _TextSub(target.kind, on_payload), target.host, target.port
    )
    assert proto.transport is not None
    topic = target.channel
    if target.kind == "nats":
        proto.transport.write(
            b'CONNECT {"verbose":false,"pedantic":false}\r\n'
            + (f"SUB {topic} 1\r\n".encode() if subscribe else b"")
            + b"PING\r\n"
        )
    else:
        if subscribe:
            proto.transport.write(f"SUBSCRIBE {topic}\r\n".encode())
        else:
            proto.ready.set_result(None)
    await asyncio.wait_for(proto.ready, 30)
    return proto


# ----------------------------------------------------------------- adapters


async def _open_subscriber(target: Target, tally: Tally, i: int, user_index: int) -> Any:
    kind = target.kind
    if kind == "relaydesk":
        return await _relaydesk_connect(
            target,
            tally,
            i,
            f"{target.prefix}s{user_index}",
            "member",
            target.port_of(user_index),
            target.source_of(user_index),
        )
    if kind == "ws":
        _, listener = await ws_connect(
            lambda: _WsSub(tally, i),
            f"ws://{target.host}:{target.port}/sub",
            websocket_handshake_timeout=30,
        )
        return listener
    if kind == "mqtt":
        return await mqtt.open_mqtt(
            target.host,
            target.port,
            f"{target.prefix}s{user_index}",
            topic=target.channel_of(user_index),
            on_publish=_on_payload(tally, i),
        )
    if kind in ("nats", "redis"):
        return await _open_text(target, _on_payload(tally, i), subscribe=True)
    raise ValueError(kind)


async def _join(target: Target, client: Any, user_index: int) -> None:
    if target.kind == "relaydesk":
        await _relaydesk_join(client, target.channel_of(user_index))


def _close(target: Target, client: Any) -> None:
    with contextlib.suppress(Exception):
        if target.kind in ("relaydesk",):
            if client.transport is not None:
                client.transport.disconnect()
        elif target.kind == "ws":
            pass  # picows listener: the process exits right after
        elif target.kind == "mqtt":
            client.close()
        else:
            client.transport.close()


class _Publisher:
    """Publishes ``make_payload(index)`` to the target; counts acknowledgements."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.client: Any = None
        self.ws: WSTransport | None = None
        self.to = f"channel:{target.channel}"
        # relaydesk on several nodes: one connection (and user) per node, client k % n
        # sends message k.  ``client`` / ``ws`` are the first of them.
        self.clients: list[Any] = []
        self.wss: list[WSTransport] = []

    async def open(self) -> None:
        t = self.target
        if t.kind == "relaydesk":
            for k in range(t.nodes):
                user = f"{t.prefix}p" if k == 0 else f"{t.prefix}p{k}"
                client = await _relaydesk_connect(t, None, 0, user, "owner", t.port_of(k))
                await _relaydesk_join(client, t.channel)
                assert client.transport is not None
                self.clients.append(client)
                self.wss.append(client.transport)
            self.client, self.ws = self.clients[0], self.wss[0]
        elif t.kind == "ws":
            self.ws, self.client = await ws_connect(_WsPub, f"ws://{t.host}:{t.port}/pub")
        elif t.kind == "mqtt":
            self.client = await mqtt.open_mqtt(t.host, t.port, f"{t.prefix}p")
            self.client.set_topic(t.channel, MESSAGE_SIZE)
        else:
            self.client = await _open_text(t, None, subscribe=False)
            self._text_head = (
                f"PUB {t.channel} {MESSAGE_SIZE}\r\n".encode()
                if t.kind == "nats"
                else f"*3\r\n$7\r\nPUBLISH\r\n${len(t.channel)}\r\n{t.channel}"
                f"\r\n${MESSAGE_SIZE}\r\n".encode()
            )

    def publish(self, index: int) -> None:
        kind = self.target.kind
        payload = make_payload(index)
        if kind == "relaydesk":
            ws = self.wss[index % len(self.wss)] if len(self.wss) > 1 else self.ws
            assert ws is not None
            ws.send(
                WSMsgType.BINARY,
                _ENCODE({"t": "pub", "id": str(index), "to": self.to, "body": payload}),
            )
        elif kind == "ws":
            assert self.ws is not None
            self.ws.send(WSMsgType.BINARY, payload)
        elif kind == "mqtt":
            self.client.publish(payload)
        else:
            self.client.transport.write(self._text_head + payload + b"\r\n")

    def acked(self) -> int:
        kind = self.target.kind
        if kind == "relaydesk":
            return sum(int(c.pubacks) for c in self.clients)
        if kind == "mqtt":
            return int(self.client.pubacks)
        return -1

    def errors(self) -> list[str]:
        clients = self.clients or [self.client]
        return [e for c in clients for e in getattr(c, "errors", [])]

    def close(self) -> None:
        for c in self.clients or [self.client]:
            _close(self.target, c)


# ----------------------------------------------------------------- process bodies


@dataclass
class _Shared:
    low: Any  # Array('q', procs): low water per subscriber process
    delivered: Any  # Array('q', procs): deliveries counted per subscriber process
    wake_r: int
    wake_w: int


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _recv(conn: Connection) -> Any:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    try:
        await fut
    finally:
        loop.remove_reader(conn.fileno())
        os.set_blocking(conn.fileno(), True)  # the event loop made it non-blocking
    return conn.recv()


async def _subscriber_proc(
    target: Target, slot: int, ids: list[int], shared: _Shared, conn: Connection
) -> None:
    tally = Tally(len(ids), slot, shared.low, shared.delivered, shared.wake_w)
    clients: list[Any] = [None] * len(ids)
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    failures: list[str] = []

    async def one(i: int, fn: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            if len(failures) >= MAX_FAILURES:
                return  # the scenario is aborted anyway: do not wait out every time-out
            try:
                await fn()
            except Exception as exc:  # reported to the parent, which aborts the scenario
                if len(failures) < MAX_FAILURES:
                    failures.append(f"{ids[i]}: {type(exc).__name__}: {exc}")

    async def connect(i: int) -> None:
        clients[i] = await _open_subscriber(target, tally, i, ids[i])

    while True:
        cmd, *args = await _recv(conn)
        if cmd == "connect":
            t0 = time.monotonic()
            await asyncio.gather(*(one(i, partial(connect, i)) for i in range(len(ids))))
            conn.send(
                (
                    "ok",
                    {
                        "failures": failures,
                        "connected": sum(c is not None for c in clients),
                        "s": time.monotonic() - t0,
                    },
                )
            )
        elif cmd == "join":
            t0 = time.monotonic()
            await asyncio.gather(
                *(one(i, partial(_join, target, clients[i], ids[i])) for i in range(len(ids)))
            )
            joined_s = time.monotonic() - t0
            # Let the join events fan out before anything is measured.
            last, quiet_since = tally.frames, time.monotonic()
            deadline = time.monotonic() + 60
            while time.monotonic() - quiet_since < 0.3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if tally.frames != last:
                    last, quiet_since = tally.frames, time.monotonic()
            conn.send(("ok", {"failures": failures, "s": joined_s}))
        elif cmd == "latency":
            tally.lat = array.array("q")
            tally.lat_from = args[0]
            tally.last_ns = [0] * len(ids)
            tally.gap_ns = 0
            conn.send(("ok", {}))
        elif cmd == "collect":
            tally.lat_from = 1 << 62
            errors = [e for c in clients if c is not None for e in getattr(c, "errors", [])]
            conn.send(
                (
                    "ok",
                    {
                        "lat": tally.lat.tobytes(),
                        "gap_ns": tally.gap_ns,
                        "delivered": tally.delivered,
                        "low": tally.low,
                        "errors": errors[:5],
                    },
                )
            )
        elif cmd == "close":
            for c in clients:
                if c is not None:
                    _close(target, c)
            await asyncio.sleep(0.1)
            conn.send(("ok", {}))
            return


async def _publisher_proc(target: Target, shared: _Shared, conn: Connection) -> None:
    pub = _Publisher(target)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def on_wake() -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(shared.wake_r, 65536)
        wake.set()

    os.set_blocking(shared.wake_r, False)
    loop.add_reader(shared.wake_r, on_wake)
    sent = 0
    low = shared.low
    deliv = shared.delivered

    while True:
        cmd, *args = await _recv(conn)
        if cmd == "connect":
            await pub.open()
            conn.send(("ok", {}))
        elif cmd == "run":
            p: dict[str, Any] = args[0]
            res = await _publish_run(pub, sent, p, low, deliv, wake)
            sent = res["last_index"]
            res["errors"] = pub.errors()
            conn.send(("ok", res))
        elif cmd == "close":
            pub.close()
            await asyncio.sleep(0.1)
            conn.send(("ok", {}))
            return


def _cpu_ticks(pid: int) -> int:
    if not pid:
        return 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except OSError:
        return 0


def _machine_busy_ticks() -> int:
    """Busy CPU ticks of the whole machine (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0
    # user + nice + system + steal; irq/softirq (the loopback network stack, not
    # charged to any process) are left out so that "background" means other work.
    return fields[0] + fields[1] + fields[2] + fields[7]


async def _publish_run(
    pub: _Publisher, start: int, p: dict[str, Any], low: Any, deliv: Any, wake: asyncio.Event
) -> dict[str, Any]:
    """Publish up to ``max_msgs`` within ``max_s`` (paced at ``rate`` msg/s if given)."""
    max_msgs: int = p["max_msgs"]
    max_s: float = p["max_s"]
    warm_s: float = p["warm_s"]
    rate: float = p.get("rate") or 0.0
    window: int = p.get("window", WINDOW)
    # CPU is counted for ``server_pids`` (every node of a cluster) or ``server_pid``.
    server_pids: list[int] = p.get("server_pids") or [p.get("server_pid", 0)]

    def server_ticks() -> int:
        return sum(_cpu_ticks(pid) for pid in server_pids)

    sent = start
    last = start + max_msgs
    t0 = time.monotonic()
    deadline = t0 + max_s
    warm_at = t0 + warm_s
    warm: tuple[float, int, int, int] | None = None  # time, deliveries, server CPU, acks
    machine0 = 0
    stalls = 0
    chunk = 200
    while sent < last:
        now = time.monotonic()
        if now >= deadline:
            break
        if warm is None and now >= warm_at:
            warm = (now, sum(deliv), server_ticks(), pub.acked())
            machine0 = _machine_busy_ticks()
        allowed = min(low) + window - sent
        if rate:
            due = start + int((now - t0) * rate) + 1 - sent
            allowed = min(allowed, due)
            if due <= 0:
                # Sleep until the next message is due; at least 1 ms (uvloop's timer
                # granularity: shorter sleeps spin and steal a core from the server).
                await asyncio.sleep(max(0.001, (sent - start) / rate - (now - t0)))
                continue
        allowed = min(allowed, last - sent, chunk)
        if allowed <= 0:
            stalls += 1
            wake.clear()
            if min(low) + window - sent <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 0.05)
            continue
        for _ in range(allowed):
            sent += 1
            pub.publish(sent)
        await asyncio.sleep(0)  # let pubacks and the wake pipe in
    t_stop = time.monotonic()
    # Drain: every subscriber has everything that was sent.
    drain_deadline = time.monotonic() + 60
    while min(low) < sent and time.monotonic() < drain_deadline:
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), 0.05)
    t_end = time.monotonic()
    d_end = sum(deliv)
    cpu_end = server_ticks()
    machine_end = _machine_busy_ticks()
    acked_end = pub.acked()
    if warm is None:
        warm = (t0, 0, cpu_end, acked_end)
        machine0 = machine_end
    return {
        "first_index": start + 1,
        "last_index": sent,
        "sent": sent - start,
        "t_publish_s": t_stop - t0,
        "drained": min(low) >= sent,
        "low": min(low),
        "window_s": t_end - warm[0],
        "deliveries": d_end - warm[1],
        "server_cpu_s": (cpu_end - warm[2]) / os.sysconf("SC_CLK_TCK"),
        "machine_cpu_s": (machine_end - machine0) / os.sysconf("SC_CLK_TCK"),
        "stalls": stalls,
        "acked": acked_end,
        # Publish acknowledgements received within the window (-1: the target has none).
        "acked_in_window": acked_end - warm[3] if acked_end >= 0 else -1,
    }


def _child(body: Callable[..., Any], *args: Any) -> None:
    _raise_nofile()
    try:
        uvloop.run(body(*args))
    except Exception:
        traceback.print_exc()
        conn = args[-1]
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        sys.exit(1)


# ----------------------------------------------------------------- the parent's view


class GeneratorError(RuntimeError):
    pass


@dataclass
class Fleet:
    """Subscriber processes (and optionally a publisher process) for one target."""

    target: Target
    subscribers: int
    procs: int = 2
    publisher: bool = True
    offset: int = 0
    _pipes: list[Connection] = field(default_factory=list)
    _procs: list[Any] = field(default_factory=list)
    _pub: Connection | None = None
    publish_index: int = 0  # the last message index published so far
    # After start(): per subscriber process, connections held and seconds it spent
    # connecting (login included) and joining.
    per_process: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.procs = max(1, min(self.procs, self.subscribers))
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._shared = _Shared(
            _CTX.Array("q", self.procs, lock=False), _CTX.Array("q", self.procs, lock=False), r, w
        )

    def _ask(self, conns: list[Connection], msg: tuple[Any, ...], timeout: float) -> list[Any]:
        for c in conns:
            c.send(msg)
        out = []
        deadline = time.monotonic() + timeout
        for c in conns:
            if not c.poll(max(0.0, deadline - time.monotonic())):
                raise GeneratorError(f"generator did not answer {msg[0]!r} within {timeout:.0f}s")
            try:
                status, payload = c.recv()
            except EOFError:
                raise GeneratorError(f"a generator process died during {msg[0]!r}") from None
            if status != "ok":
                raise GeneratorError(f"generator failed on {msg[0]!r}: {payload}")
            out.append(payload)
        return out

    def start(self, timeout: float = 180) -> dict[str, Any]:
        """Spawn the processes, connect (publisher first) and join; return set-up timings."""
        t0 = time.monotonic()
        if self.publisher:
            parent, child = _CTX.Pipe()
            proc = _CTX.Process(
                target=_child, args=(_publisher_proc, self.target, self._shared, child), daemon=True
            )
            proc.start()
            self._procs.append(proc)
            self._pub = parent
            self._ask([parent], ("connect",), 60)
        ids = list(range(self.offset, self.offset + self.subscribers))
        for slot in range(self.procs):
            parent, child = _CTX.Pipe()
            mine = ids[slot :: self.procs]
            proc = _CTX.Process(
                target=_child,
                args=(_subscriber_proc, self.target, slot, mine, self._shared, child),
                daemon=True,
            )
            proc.start()
            self._procs.append(proc)
            self._pipes.append(parent)
        res = self._ask(self._pipes, ("connect",), timeout)
        self.per_process = [
            {"connections": r["connected"], "connect_s": round(r["s"], 2)} for r in res
        ]
        self._check(res, "connect")
        t1 = time.monotonic()
        res = self._ask(self._pipes, ("join",), timeout)
        self._check(res, "join")
        for row, r in zip(self.per_process, res, strict=True):
            row["join_s"] = round(r["s"], 2)
        return {"connect_s": round(t1 - t0, 2), "join_s": round(time.monotonic() - t1, 2)}

    @staticmethod
    def _check(res: list[dict[str, Any]], what: str) -> None:
        failures = [f for r in res for f in r["failures"]]
        if failures:
            raise GeneratorError(f"{what} failed for some subscribers: {failures[:3]}")

    def publish(self, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self._pub is not None
        t0, cpu0 = time.monotonic(), sum(_cpu_ticks(p.pid) for p in self._procs)
        result: dict[str, Any] = self._ask([self._pub], ("run", params), timeout)[0]
        cpu = (sum(_cpu_ticks(p.pid) for p in self._procs) - cpu0) / os.sysconf("SC_CLK_TCK")
        result["generator_cores"] = cpu / max(1e-9, time.monotonic() - t0)
        self.publish_index = result["last_index"]
        return result

    def latency_from(self, index: int) -> None:
        self._ask(self._pipes, ("latency", index), 30)

    def collect(self) -> dict[str, Any]:
        res = self._ask(self._pipes, ("collect",), 60)
        lat = array.array("q")
        for r in res:
            lat.frombytes(r["lat"])
        return {
            "lat": lat,
            "delivered": sum(r["delivered"] for r in res),
            # Longest inter-delivery gap of any subscriber in the latency run (ms).
            "gap_max_ms": max((r["gap_ns"] for r in res), default=0) / 1e6,
            "errors": [e for r in res for e in r["errors"]],
        }

    def close(self) -> None:
        conns = ([self._pub] if self._pub is not None else []) + self._pipes
        for c in conns:
            with contextlib.suppress(Exception):
                c.send(("close",))
        deadline = time.monotonic() + 10
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for fd in (self._shared.wake_r, self._shared.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def percentiles(
    values: array.array[int], ps: tuple[float, ...] = (50, 99, 99.9)
) -> dict[str, float]:
    """Nearest-rank percentiles in milliseconds."""
    if not values:
        return {f"p{p:g}": float("nan") for p in ps}
    s = sorted(values)
    out = {}
    for p in ps:
        k = min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))
        out[f"p{p:g}"] = s[k] / 1e6
    out["max"] = s[-1] / 1e6
    return out

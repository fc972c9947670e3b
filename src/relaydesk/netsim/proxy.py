"""The impairment proxy: a TCP relay that delays, throttles, cuts and resets links.

Theory of operation
-------------------
``Netsim`` listens on one address and relays every accepted connection to one
upstream ``host:port``.  Each relayed connection runs two *directions* (``upstream``:
client to server, ``downstream``: server to client), and each direction is two
coroutines joined by a bounded queue:

    source socket --read--> [reader] --(release time, bytes)--> queue --> [writer] --> sink

The reader stamps each chunk with its release time (``schedule.ReleaseSchedule``:
latency plus jitter, never reordering) the moment it is read; the writer sleeps until
the head chunk's release time, asks the direction's shared token bucket for the right
to send (bandwidth cap), then writes and drains.  Chunks in the queue are "in flight on
the wire", so a link with latency keeps streaming at full rate instead of stalling for
one latency per chunk.

Bounds (STYLE rule 5).  The queue holds at most ``Limits.queue_chunks`` chunks of at
most ``Limits.read_size`` bytes (default 64 x 16 KiB = 1 MiB per direction and
connection).  The queue must hold the bandwidth-delay product to keep a link busy:
1 MiB covers 80 Mbit/s at 100 ms of added latency.  When it is full, the reader stops
reading from its source socket: the sender's kernel buffers fill and TCP flow control
slows the sender down (back-pressure), exactly as a slow link would; memory never grows
with the sender's speed.  Each such stall is counted in ``backpressure_waits``.
``Limits.max_held`` bounds the connections parked while a link is cut in ``hold`` mode.

Cutting a link aborts every relayed connection with a TCP reset on both sides.  New
connections are then reset at once (``mode="reset"``: the link is down and the remote
host says so) or accepted and parked without a byte relayed until ``restore``
(``mode="hold"``: a black hole, the client only learns through its own time-outs).

Ownership: every connection handler task is tracked in ``_conns``; ``aclose`` stops the
listener, cancels the handlers and waits for them, so nothing outlives the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from relaydesk.clock import Clock, SystemClock
from relaydesk.netsim.schedule import (
    DIRECTIONS,
    Direction,
    LinkProfile,
    ReleaseSchedule,
    TokenBucket,
    bucket_burst,
    should_reset,
    slice_sizes,
)

CutMode = Literal["reset", "hold"]


class Limits(msgspec.Struct, frozen=True):
    """Bounds of one proxy (see the theory of operation for why these sizes)."""

    read_size: int = 16 * 1024
    queue_chunks: int = 64
    max_held: int = 1024
    connect_timeout_s: float = 10.0


class NetsimStats(msgspec.Struct, frozen=True):
    """A snapshot of the proxy's counters (``Netsim.statistics()``)."""

    connections_accepted: int
    connections_active: int
    connections_held: int
    connections_refused: int
    connections_reset: int
    upstream_failures: int
    cuts: int
    restores: int
    bytes_upstream: int
    bytes_downstream: int
    chunks_upstream: int
    chunks_downstream: int
    backpressure_waits: int


class NetsimState(msgspec.Struct, frozen=True):
    """What ``GET /state`` answers: addresses, impairments, cut state and counters."""

    listen: str
    upstream: str
    cut: bool
    cut_mode: CutMode
    upstream_profile: LinkProfile
    downstream_profile: LinkProfile
    stats: NetsimStats


@dataclass
class _Counters:
    accepted: int = 0
    held: int = 0
    refused: int = 0
    reset: int = 0
    upstream_failures: int = 0
    cuts: int = 0
    restores: int = 0
    backpressure_waits: int = 0
    bytes: dict[Direction, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    chunks: dict[Direction, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))


@dataclass(eq=False)
class _Conn:
    """One accepted client connection and, once relayed, its upstream connection."""

    task: asyncio.Task[None]
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    held: bool = False
    dropped: bool = False

    def reset(self) -> None:
        """Abort both sockets with a TCP RST and cancel the relay."""
        if self.dropped:
            return
        self.dropped = True
        for writer in (self.client, self.upstream):
            if writer is not None:
                _abort_with_rst(writer)
        self.task.cancel()


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Netsim:
    """A userspace TCP impairment proxy (construct with ``open_netsim``)."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        upstream_profile: LinkProfile,
        downstream_profile: LinkProfile,
        clock: Clock,
        rng: random.Random,
        limits: Limits,
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._clock = clock
        self._rng = rng
        self._limits = limits
        self._profiles: dict[Direction, LinkProfile] = {
            "upstream": upstream_profile,
            "downstream": downstream_profile,
        }
        self._buckets: dict[Direction, TokenBucket | None] = dict.fromkeys(DIRECTIONS)
        for direction in DIRECTIONS:
            self._rebuild_bucket(direction)
        self._counters = _Counters()
        self._conns: set[_Conn] = set()
        self._cut_mode: CutMode | None = None
        self._restored = asyncio.Event()
        self._restored.set()
        self._server: asyncio.Server | None = None
        self._listen = ("", 0)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def _listen_on(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._handle, host, port, limit=self._limits.read_size * 2
        )
        name = self._server.sockets[0].getsockname()
        self._listen = (str(name[0]), int(name[1]))

    @property
    def listen_address(self) -> tuple[str, int]:
        """The ``(host, port)`` the proxy accepts on (the real port when 0 was asked)."""
        return self._listen

    @property
    def upstream_address(self) -> tuple[str, int]:
        """Where accepted connections are relayed to."""
        return self._upstream

    async def aclose(self) -> None:
        """Stop listening, reset every relayed connection and wait for the handlers."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for conn in conns:
            conn.reset()
        self._restored.set()  # wake held handlers so they see the close
        await asyncio.gather(*(c.task for c in conns), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Netsim:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- run-time control --------------------------------------------------------------

    def profile(self, direction: Direction) -> LinkProfile:
        """The impairment currently applied to ``direction``."""
        return self._profiles[direction]

    def impair(self, direction: Direction, profile: LinkProfile) -> None:
        """Replace the impairment of ``direction``; applies to chunks read from now on."""
        old = self._profiles[direction]
        self._profiles[direction] = profile
        if old.bandwidth_bps != profile.bandwidth_bps:
            self._rebuild_bucket(direction)

    def cut(self, mode: CutMode = "reset") -> None:
        """Take the link down: reset every connection; new ones are reset or held."""
        self._counters.cuts += 1
        self._cut_mode = mode
        self._restored.clear()
        for conn in list(self._conns):
            if not conn.held:
                conn.reset()

    def restore(self) -> None:
        """Bring the link back: held connections are relayed, new ones accepted."""
        if self._cut_mode is not None:
            self._counters.restores += 1
        self._cut_mode = None
        self._restored.set()

    @property
    def is_cut(self) -> bool:
        """Whether the link is currently cut."""
        return self._cut_mode is not None

    def statistics(self) -> NetsimStats:
        """A frozen snapshot of the counters."""
        c = self._counters
        return NetsimStats(
            connections_accepted=c.accepted,
            connections_active=sum(1 for x in self._conns if not x.held),
            connections_held=sum(1 for x in self._conns if x.held),
            connections_refused=c.refused,
            connections_reset=c.reset,
            upstream_failures=c.upstream_failures,
            cuts=c.cuts,
            restores=c.restores,
            bytes_upstream=c.bytes["upstream"],
            bytes_downstream=c.bytes["downstream"],
            chunks_upstream=c.chunks["upstream"],
            chunks_downstream=c.chunks["downstream"],
            backpressure_waits=c.backpressure_waits,
        )

    def state(self) -> NetsimState:
        """Addresses, impairments, cut state and counters, as the control API shows them."""
        return NetsimState(
            listen=_hostport(*self._listen),
            upstream=_hostport(*self._upstream),
            cut=self.is_cut,
            cut_mode=self._cut_mode or "reset",
            upstream_profile=self._profiles["upstream"],
            downstream_profile=self._profiles["downstream"],
            stats=self.statistics(),
        )

    def _rebuild_bucket(self, direction: Direction) -> None:
        rate = self._profiles[direction].bytes_per_second
        self._buckets[direction] = (
            None if rate is None else TokenBucket(rate, bucket_burst(rate), self._clock.monotonic())
        )

    # -- relaying ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(task, writer)
        self._counters.accepted += 1
        if self._closed:
            _abort_with_rst(writer)
            return
        self._conns.add(conn)
        try:
            await self._relay(conn, reader)
        except asyncio.CancelledError:
            if not conn.dropped:
                raise  # cancelled by someone else (proxy or loop shutdown): propagate
        except OSError:
            pass  # a peer reset or closed its socket: the relay is over
        except ExceptionGroup as group:
            _, rest = group.split(OSError)
            if rest is not None:
                raise rest from None
        finally:
            self._conns.discard(conn)
            for w in (conn.client, conn.upstream):
                if w is not None and not conn.dropped:
                    w.close()

    async def _relay(self, conn: _Conn, client_reader: asyncio.StreamReader) -> None:
        if self._cut_mode is not None:
            held = sum(1 for x in self._conns if x.held)
            if self._cut_mode == "reset" or held >= self._limits.max_held:
                self._counters.refused += 1
                conn.reset()
                return
            conn.held = True
            self._counters.held += 1
            await self._restored.wait()
            conn.held = False
            if self._closed:
                return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self._upstream, limit=self._limits.read_size * 2),
                self._limits.connect_timeout_s,
            )
        except (OSError, TimeoutError):
            self._counters.upstream_failures += 1
            conn.reset()
            return
        conn.upstream = up_writer
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._direction(conn, "upstream", client_reader, up_writer))
            tg.create_task(self._direction(conn, "downstream", up_reader, conn.client))

    async def _direction(
        self,
        conn: _Conn,
        direction: Direction,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(self._limits.queue_chunks)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read_side(direction, source, queue))
            tg.create_task(self._write_side(conn, direction, sink, queue))

    async def _read_side(
        self,
        direction: Direction,
        source: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes] | None],
    ) -> None:
        schedule = ReleaseSchedule()
        while True:
            data = await source.read(self._limits.read_size)
            if not data:
                await queue.put(None)
                return
            release = schedule.release_at(
                self._clock.monotonic(), self._profiles[direction], self._rng
            )
            if queue.full():
                self._counters.backpressure_waits += 1
            await queue.put((release, data))

    async def _write_side(
        self,
        conn: _Conn,
        direction: Direction,
        sink: asyncio.StreamWriter,
        queue: asyncio.Queue[tuple[float, bytes] | None],
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                if sink.can_write_eof():
                    with contextlib.suppress(OSError):
                        sink.write_eof()  # half-close: the other direction may go on
                return
            release, data = item
            wait = release - self._clock.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if should_reset(self._profiles[direction], self._rng):
                self._counters.reset += 1
                conn.reset()  # cancels this relay
                return
            bucket = self._buckets[direction]
            if bucket is None:
                sink.write(data)
            else:
                offset = 0
                for size in slice_sizes(len(data), int(bucket.burst)):
                    delay = bucket.reserve(size, self._clock.monotonic())
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sink.write(data[offset : offset + size])
                    offset += size
            await sink.drain()
            self._counters.bytes[direction] += len(data)
            self._counters.chunks[direction] += 1


async def open_netsim(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    *,
    upstream_profile: LinkProfile | None = None,
    downstream_profile: LinkProfile | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    limits: Limits | None = None,
) -> Netsim:
    """Start a proxy on ``listen`` relaying to ``upstream``; close it with ``aclose``.

    ``listen`` may use port 0 (see ``Netsim.listen_address``).  Profiles default to
    no impairment; ``rng`` makes jitter and resets reproducible when seeded.
    """
    netsim = Netsim(
        upstream[0],
        upstream[1],
        upstream_profile=upstream_profile or LinkProfile(),
        downstream_profile=downstream_profile or LinkProfile(),
        clock=clock or SystemClock(),
        rng=rng or random.Random(),
        limits=limits or Limits(),
    )
    await netsim._listen_on(*listen)
    return netsim

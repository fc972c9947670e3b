"""One client connection: outgoing queues and the catch-up/live delivery switch.

Theory of operation (docs/protocol.md §4.3)
-------------------------------------------
A connection delivers the user's feed strictly in position order with nothing
skipped.  ``FeedSwitch`` (handover.py, pure) decides what is written and when: in
catch-up the sender task reads pages of the feed through the hub (its cache of
recent events, shared by every reader, else storage); once the reader is within
the live queue's reach the switch also keeps the hub's live offers, and when the
reader meets the first of them the connection is live.  Live, the sender writes
everything queued as one ``msgs`` frame.  If the queue passes its bound (a slow
consumer), it is dropped and the connection reads from storage again from
``taken``: memory stays bounded, and nobody else waits.

Control frames (welcome, pubacks, replies, pongs, presence, errors) go through a
separate queue that is never dropped; the sender writes it before the next batch.

Output budget (docs/protocol.md §8.1, SLOW_READER).  Every byte waiting to be
written, control frames and live events alike, counts against one per-connection
budget (``gateway.send_queue_bytes``).  Live events over it fall back to storage as
above (they can be re-read); replies cannot, so a connection whose unread replies
pass the budget is a client that stopped reading: its queued replies are dropped
and it is closed with SLOW_READER (4042).  Every reply is small or capped (history
pages are cut to a quarter of the budget), so a reading client never gets there.
Requests are paced by their replies: while unwritten replies fill half the budget,
the gateway reads no further frame from the client (TCP pushes back on it) until
they drain, so a slow but reading client is slowed, never closed, by its own
requests; if they do not drain within ``gateway.reply_drain_timeout_ms`` the client
is not reading and is closed with SLOW_READER.
If the peer is not reading, the close frame cannot be written by the sender (its
write waits for the socket to drain); ``force_close`` writes it past the sender
(``server/gateway/websocket.py`` then drops the TCP connection after a grace), so
the connection and its memory go away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from relaydesk.aio import wait_event
from relaydesk.protocol.codec import Codec
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import ClientFrame, Error, Event, Frame, PresenceChange, Synced
from relaydesk.protocol.server_session import ServerSession
from relaydesk.server.gateway.handover import FeedSwitch, Mode

if TYPE_CHECKING:
    from relaydesk.server.routing.fanout import Run
    from relaydesk.server.routing.hub import Hub
    from relaydesk.telemetry.recorder import ConnTelemetry

# How long a closing connection waits for answers to publishes it already submitted.
CLOSE_DRAIN_S = 2.0

SendFn = Callable[[dict[str, Any]], Awaitable[None]]


class Sink(Protocol):
    """Where a connection on a synchronous transport writes (server/gateway/wire.py).

    ``write`` never blocks: the bytes go to the transport's buffer.  ``writable`` is
    False while that buffer is over its high-water mark (the peer is not keeping up):
    the connection then keeps its output in its own bounded queues, counted against
    the output budget, until the transport asks for more (``Connection.pump``)."""

    @property
    def writable(self) -> bool: ...

    def write(self, data: bytes, binary: bool) -> None: ...

    def write_batch(self, codec: Codec[ClientFrame], items: list[bytes]) -> None:
        """Write one ``msgs`` frame of ``items`` (encoded events), encoded by ``codec``
        (the transport may share the encoding with connections given the same batch)."""

    def write_close(self, code: int, reason: str) -> None: ...

    def schedule(self, conn: Connection) -> None:
        """Call ``conn.pump()`` soon (once per event-loop turn, however often asked)."""

    def start_catchup(self, conn: Connection) -> None:
        """Run ``conn.run_catchup()`` (a task that lives only while catching up)."""

    def replies_drained(self, conn: Connection) -> None:
        """The reply backlog fell under half the budget: reading may resume."""


__all__ = ["CLOSE_DRAIN_S", "Connection", "Mode", "Sink"]


class Connection:
    """State and sender task of one WebSocket connection."""

    # Slots: thousands of mostly idle connections (docs/benchmarks.md, memory).
    __slots__ = (
        "_close_sent",
        "_close_wait",
        "_closing",
        "_control",
        "_control_bytes",
        "_drained",
        "_fault_drop_device",
        "_feed_started",
        "_limit_bytes",
        "_page",
        "_send",
        "_sink",
        "_slow_reader",
        "_wake",
        "active",
        "app",
        "attached",
        "backlog_timer",
        "catchup_s",
        "client_addr",
        "closing_since",
        "codec",
        "device",
        "end_reason",
        "feed",
        "hub",
        "login_ms",
        "net",
        "region",
        "resyncs",
        "sdk",
        "session",
        "tel",
        "user",
    )

    def __init__(
        self,
        hub: Hub,
        send: SendFn,
        codec: Codec[ClientFrame],
        session: ServerSession,
        *,
        queue_items: int,
        queue_bytes: int,
        page: int,
        client_addr: str,
        fault_drop_device: str = "",
        sink: Sink | None = None,
    ) -> None:
        self.hub = hub
        self._send = send
        # A synchronous transport (the native path): no sender task, ``pump`` writes.
        self._sink = sink
        self.codec = codec
        self.session = session
        self.client_addr = client_addr
        self.app = ""
        self.user = ""
        self.device = ""
        self.region = ""
        self.net = ""
        self.sdk = ""
        self.feed = FeedSwitch(queue_items, queue_bytes)
        # Control frames not yet written (a list: idle connections hold an empty one).
        self._control: list[bytes] = []
        self._control_bytes = 0  # bytes in _control, counted against the byte budget
        self._limit_bytes = queue_bytes
        self._slow_reader = False  # closed for SLOW_READER: replies are dropped
        # ASGI path only: the sender task's wake-ups (the native path has no task).
        self._drained = asyncio.Event() if sink is None else None
        self._wake = asyncio.Event() if sink is None else None
        self._close_wait: asyncio.TimerHandle | None = None  # native: pubacks' grace
        # Native: reading paused for a reply backlog; fires SLOW_READER if it stays.
        self.backlog_timer: asyncio.TimerHandle | None = None
        self._closing: tuple[int, str] | None = None
        self.closing_since = 0.0  # loop time of close()
        self._close_sent = False
        self._page = page
        # TEST ONLY (gateway.fault_drop_writes_device): feed batches of this device are
        # not written to the socket, everything else proceeds as if they were.
        self._fault_drop_device = fault_drop_device
        self.login_ms = 0  # wall ms of the login (newest login of a device wins)
        self.attached = False  # registered with the hub (presence, fan-out)
        self.active = False  # welcomed: the feed and presence pushes may flow
        # Telemetry state once logged in (None: telemetry off or not logged in);
        # end_reason is set once by the gateway when it decides to close.
        self.tel: ConnTelemetry | None = None
        self.end_reason = ""
        self.resyncs = 0  # live -> catch-up fallbacks (slow consumer)
        # Seconds from the start of the feed to the handover to live (None: not yet).
        self.catchup_s: float | None = None
        self._feed_started = 0.0

    def _notify(self) -> None:
        """Something is due to be written: wake the sender, or schedule a pump."""
        sink = self._sink
        if sink is not None:
            sink.schedule(self)
        else:
            assert self._wake is not None
            self._wake.set()

    @property
    def taken(self) -> int:
        """Every feed event <= taken is written or being written (acks may reach it)."""
        return self.feed.taken

    @property
    def mode(self) -> Mode:
        return self.feed.mode

    @property
    def synced(self) -> bool:
        return self.feed.synced

    # -- called by the hub and the gateway (synchronous, never block) -----------------

    def offer_run(self, run: Run) -> None:
        """The hub offers a run of feed events (routing/fanout.py): queue what is new."""
        feed = self.feed
        queued = feed.queued
        if run.last_pos <= queued or self._closing:
            return
        mode = feed.mode
        if mode is Mode.CATCHUP and feed.armed_at is None:
            return  # in storage; the reader gets it
        items, size = run.encoded(self.codec)
        if run.first_pos <= queued:  # partly queued already (rare): the rest
            items = items[run.after(queued) :]
            size = sum(map(len, items))
        resyncs = feed.resyncs
        if feed.offer_many(run.last_pos, items, size, self._control_bytes):
            # The sender sleeps only on an empty queue: wake it on the first events.
            self._notify()
        tel = self.tel
        if tel is not None:
            if mode is Mode.LIVE:
                # Sampled events queued live are followed to their ack (or resolved
                # "resync" below if this very run overflowed the queue).
                if run.traced:
                    for pos, trace in run.traced:
                        if pos > queued:
                            tel.trace_offered(trace)
                if tel.first_gen < 0 and feed.mode is Mode.LIVE:
                    tel.first_gen = tel.rec.fan_gen  # the only per-offer telemetry work
            if feed.resyncs != resyncs:
                tel.resynced(feed.over_items)  # which bound bound
        if feed.resyncs != resyncs:
            self.resyncs += 1

    def push_presence(self, change: PresenceChange) -> None:
        if self.active:  # never ahead of welcome; presence is ephemeral (query it)
            self.send_frame(change)

    def send_frame(self, frame: Frame) -> None:
        # Still accepted while closing: answers to publishes already submitted
        # (pubacks) go out before the close frame.
        if self._close_sent or self._slow_reader:
            return
        data = self.codec.encode(frame)
        self._control.append(data)
        self._control_bytes += len(data)
        self._notify()
        if self._control_bytes + self.feed.queued_bytes > self._limit_bytes:
            self._over_budget()

    def _over_budget(self) -> None:
        """Unread output passed the budget: drop live events first (storage has
        them), and if replies alone still pass it, the client is not reading."""
        feed = self.feed
        if feed.queue:
            resyncs = feed.resyncs
            feed.over_items = False  # the byte bound bound
            feed.shed()
            if feed.resyncs != resyncs:
                self.resyncs += 1
                if self.tel is not None:
                    self.tel.resynced(False)
        if self._control_bytes <= self._limit_bytes:
            return
        self.slow_reader(f"over {self._limit_bytes} bytes of replies unread; read your socket")

    @property
    def replies_backlogged(self) -> bool:
        """Unwritten replies fill half the budget: stop reading requests until they drain."""
        return self._control_bytes > self._limit_bytes // 2

    async def replies_drained(self, within_s: float) -> bool:
        """Wait until the reply backlog is under half the budget; False after ``within_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        drained = self._drained
        assert drained is not None, "ASGI path only"
        while self.replies_backlogged and not self.closing:
            drained.clear()
            if not await wait_event(drained, max(0.0, deadline - loop.time())):
                return not self.replies_backlogged
        return True

    def slow_reader(self, msg: str) -> None:
        """Close with SLOW_READER: the client does not read; its queued replies go."""
        self._control.clear()
        self._control_bytes = 0
        code = ErrorCode.SLOW_READER
        self._slow_reader = True
        self._closing = None  # SLOW_READER overrides a close still waiting to be sent
        self.end_reason = self.end_reason or "protocol_error"
        self.close(int(code), code.name, Error(code=int(code), msg=msg))
        if self._sink is not None:
            # Not reading: the close cannot wait for the buffer to drain (it will not).
            self._close_now()

    def start_feed(self, cursor: int) -> None:
        """Begin delivering the feed after ``cursor`` (catch-up first)."""
        self._feed_started = self.hub.clock.monotonic()
        self.feed.start(cursor, self.hub.fanned_pos(self.app))
        self._notify()

    def close(self, code: int, reason: str, final: Frame | None = None) -> None:
        """Send ``final`` (if any) after pending control frames, then close."""
        if self._closing is not None:
            return
        if final is not None:
            data = self.codec.encode(final)
            self._control.append(data)
            self._control_bytes += len(data)
        self._closing = (code, reason[:120])
        self.closing_since = asyncio.get_running_loop().time()
        self._notify()

    async def force_close(self) -> None:
        """Write the close frame now, past a sender stuck on a peer that is not reading
        (the transport then drops the connection if the peer still does not read)."""
        if self._closing is None or self._close_sent:
            return
        code, reason = self._closing
        self._close_sent = True
        if self._sink is not None:
            self._sink.write_close(code, reason)
            return
        with contextlib.suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    @property
    def inflight(self) -> int:
        """Publishes submitted, not yet answered (kept by the session)."""
        return self.session.inflight

    @property
    def closing(self) -> bool:
        return self._closing is not None

    # -- the native path: no task, the transport's flusher pumps ----------------------

    def pump(self, wrote: list[ConnTelemetry] | None = None) -> None:
        """Write what is due now, never waiting (called once per loop turn at most).

        ``wrote``: where the flusher collects the live batches written in its pass
        for telemetry (recorded after the pass's writes); None: recorded here.

        The same order as ``run_sender``: control frames first, then the close (after
        the pubacks of publishes already submitted, at most CLOSE_DRAIN_S), then the
        live batch.  Nothing is written while the transport is not writable: the
        output stays in the connection's queues, counted against the budget, and the
        transport's ``resume_writing`` pumps again."""
        sink = self._sink
        assert sink is not None, "native path only"
        if self._close_sent:
            return
        control = self._control
        if control:
            self._pump_control(sink, control)
        if control or not sink.writable:
            return
        if self._closing is not None:
            self._pump_close()
            return
        if not self.active:
            return
        feed = self.feed
        if feed.mode is Mode.CATCHUP:
            sink.start_catchup(self)
            return
        if feed.queue:
            items = feed.take_batch()
            tel = self.tel
            if tel is not None:
                if wrote is not None:  # stamped and recorded by the pass
                    tel.wrote_pos, tel.wrote_n = self.taken, len(items)
                    wrote.append(tel)
                else:
                    # Stamped before the write: an ack can only follow the bytes.
                    tel.written_live(self.taken, len(items))
            if not self._fault_drops_writes():
                sink.write_batch(self.codec, items)

    def _pump_control(self, sink: Sink, control: list[bytes]) -> None:
        """Write queued control frames while the transport takes them."""
        if sink.writable:
            backlogged = self.replies_backlogged
            binary = self.codec.binary
            written = 0
            for data in control:
                if not sink.writable:
                    break
                written += 1
                self._control_bytes -= len(data)
                sink.write(data, binary)
            del control[:written]
            if backlogged and not self.replies_backlogged:
                sink.replies_drained(self)

    def _pump_close(self) -> None:
        """Closing: write the close once the pubacks of publishes already submitted
        are out (at most CLOSE_DRAIN_S)."""
        if self.inflight > 0 and self._close_wait is None:
            # Answer publishes already submitted before closing (bounded): each
            # answer pumps again; the timer closes if they do not all come.
            loop = asyncio.get_running_loop()
            self._close_wait = loop.call_later(CLOSE_DRAIN_S, self._close_now)
            return
        if self.inflight > 0 and self._close_wait is not None:
            return
        self._close_now()

    def transport_gone(self) -> None:
        """Native: the transport closed; nothing more is written or waited for."""
        self._close_sent = True
        if self._closing is None:
            self._closing = (1006, "")
        if self._close_wait is not None:
            self._close_wait.cancel()
            self._close_wait = None
        self._control.clear()
        self._control_bytes = 0

    def _close_now(self) -> None:
        if self._close_wait is not None:
            self._close_wait.cancel()
            self._close_wait = None
        if self._closing is None or self._close_sent:
            return
        assert self._sink is not None
        code, reason = self._closing
        self._close_sent = True
        self._sink.write_close(code, reason)

    async def run_catchup(self, writable: Callable[[], Awaitable[None]]) -> None:
        """Read the feed from the hub page by page until live (native path); each
        page waits until the transport is writable, so a slow reader paces it."""
        while self.feed.mode is Mode.CATCHUP and self._closing is None and self.active:
            await writable()
            if self._closing is not None:
                break
            await self._catchup_step()
        self._notify()  # live: the queue may hold events already

    # -- the sender task -----------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink.write(data, self.codec.binary)
            return
        if self.codec.binary:
            await self._send({"type": "websocket.send", "bytes": data})
        else:
            await self._send({"type": "websocket.send", "text": data.decode()})

    async def run_sender(self) -> None:
        """Write control frames, catch-up pages and live batches until closed (ASGI)."""
        wake, drained = self._wake, self._drained
        assert wake is not None and drained is not None, "ASGI path only"
        while True:
            if self._control:
                while self._control:
                    data = self._control.pop(0)
                    self._control_bytes -= len(data)
                    drained.set()
                    await self._write(data)
                continue
            if self._closing is not None:
                if self.inflight > 0:
                    # Answer publishes already submitted before closing (bounded).
                    wake.clear()
                    await wait_event(wake, CLOSE_DRAIN_S)
                    if self._control:
                        continue
                code, reason = self._closing
                self._close_sent = True
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
                return
            if not self.active:
                wake.clear()
                await wake.wait()
                continue
            feed = self.feed
            if feed.mode is Mode.CATCHUP:
                await self._catchup_step()
                continue
            if feed.queue:
                items = feed.take_batch()
                data = self.codec.encode_batch(items)
                if self.tel is not None:
                    # Stamped before the write: an ack can only follow the bytes.
                    self.tel.written_live(self.taken, len(items))
                if not self._fault_drops_writes():
                    await self._write(data)
                continue
            wake.clear()
            await wake.wait()

    def _fault_drops_writes(self) -> bool:
        """TEST ONLY: this feed batch is lost on the way to the socket (the injected
        fault of diagnosis scenario 1); the caller keeps every bookkeeping step."""
        return bool(self._fault_drop_device) and self.device == self._fault_drop_device

    async def _catchup_step(self) -> None:
        feed = self.feed
        req = feed.next_read(self.hub.fanned_pos(self.app))
        if req.upto <= req.after:
            page: list[tuple[Event, dict[str, bytes]]] = []
        else:
            page = await self.hub.catchup(self.app, self.user, req.after, req.upto, self._page)
        if self._closing is not None:
            return
        # Decided before the write's await: the switch's view of offers stays exact.
        last = page[-1][0].pos if page else None
        result = feed.page_read(req, last, len(page) >= self._page, self.hub.fanned_pos(self.app))
        if result.synced is not None:
            self.catchup_s = self.hub.clock.monotonic() - self._feed_started
            self.send_frame(Synced(pos=result.synced))
        if page:
            name = self.codec.name
            items = []
            for event, encodings in page:
                data = encodings.get(name)
                if data is None:
                    data = encodings[name] = self.codec.encode_event(event)
                items.append(data)
            if self.tel is not None:
                self.tel.written_catchup(page[-1][0].pos, len(page), self._page)
            if not self._fault_drops_writes():
                await self._write(self.codec.encode_batch(items))
        if result.live and self.tel is not None:
            self.tel.caught_up()  # catch-up stage and saturation episodes

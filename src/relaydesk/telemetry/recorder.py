"""The telemetry recorder: message lifecycle, connection history and probes, in memory.

Theory of operation (docs/telemetry.md)
---------------------------------------
Everything here runs on the event loop, called synchronously by the gateway and
the hub; nothing awaits, nothing does I/O.  The flusher (``service.py``) takes
what accumulated every few seconds (``take``: O(1), containers swapped) and turns
it into rows and writes them off the loop (docs/telemetry.md "Cost").

**Aggregates.**  Counters and fixed-bucket histograms (``Agg``) are kept per
(app, client region) for the current wall-clock minute; the node and its region
are constant per process and added when rows are written.  ``tick()`` (once a
second) closes the minute; the flusher drains closed minutes and the current
partial one as deltas that the store adds to the stored rows.

**Stages** (all from one monotonic clock, so they add up exactly):

* ``received``: the gateway decoded the ``pub`` frame;
* ``commit start``: the hub's writer took the batch (``commit_window``);
* ``committed``: the transaction returned (``commit_window``);
* ``fanned out``: the writer finished offering the whole batch to every live
  recipient connection (``batch_fanned``) — no sender can write before that,
  since both run on this loop;
* ``written``: a connection's sender handed the ``msgs`` frame containing the
  event to the socket;
* ``acknowledged``: the device's cumulative ``ack`` covering it arrived.

Per-delivery work is O(1) per *batch*.  The only per-offer work is noting, when
a connection's live queue gets its first event since the last write, which hub
batch ("fan-out generation") it came from.  A write then records the queue wait
from the fan-out time of that generation (kept in a small ring): exact when the
written batch came from one hub batch, the common case since senders run between
hub batches; when it spans several, the oldest event gets its exact wait and the
others the wait since the newest hub batch (a lower bound).  Each write pushes
one (last position, write time, count) entry on the connection's ack window; an
ack pops the entries it covers.  Entries older than the ack deadline, or still there when the
connection closes, count as *not delivered*.  An ack that covers only part of a
written batch leaves the entry until a later ack covers the rest (the SDK acks
cumulatively, so this only delays the count).

**Traces.**  One publish in ``trace_sample_every`` is traced in full: the trace
holds the server-side stamps; the hub tells each connection that queued the
sampled event (``Connection.traced``), which keeps a reference, stamps its write
and its ack, and resolves the trace for itself.  A
trace produces one row per recipient connection (or one ``no_recipient`` row).

**Bounds** (each with its reason, overflow counted in ``stats``):

* ack window: ``MAX_WINDOW`` entries per connection (one per written batch; a
  client that never acks hits the deadline first at any sane batch rate);
* open traces: ``MAX_OPEN_TRACES`` (sampling pauses while full);
* trace rows, connection-history rows and closed minutes waiting for the flusher:
  ``MAX_PENDING_ROWS``/``MAX_CLOSED_WINDOWS`` (only reached if the database
  refuses writes for a long time; the oldest are dropped);
* label values: ``LabelBounder``.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable
from operator import mul

from relaydesk.clock import Clock, SystemClock
from relaydesk.config import TelemetrySettings
from relaydesk.storage.telemetry import COUNTERS, ConnectionRow, SeriesRow, TraceRow
from relaydesk.telemetry.histogram import LATENCY_BOUNDS_MS, Histogram
from relaydesk.telemetry.labels import UNKNOWN, LabelBounder
from relaydesk.telemetry.probe import ProbeReport, validate_probe
from relaydesk.telemetry.saturation import (
    CATCHUP_PAGE,
    COMMIT_BATCH,
    SEND_QUEUE_BYTES,
    SEND_QUEUE_ITEMS,
    Episode,
    PoolGauge,
    demand_stage,
    duration_stage,
)

Key = tuple[str, str]  # (app, client region)

# Disconnect reasons, in the order of the ``disc_*`` counters.
REASONS: tuple[str, ...] = (
    "client_close",
    "heartbeat_timeout",
    "server_shutdown",
    "protocol_error",
    "auth_expiry",
    "transport_error",
)
_REASON_INDEX = {r: i for i, r in enumerate(REASONS)}
# Disconnects that mean something went wrong (the disconnect rate counts these).
UNEXPECTED = ("heartbeat_timeout", "protocol_error", "auth_expiry", "transport_error")

# Latency histograms (milliseconds) and the loss histogram (fraction) of an Agg.
LATENCY_STAGES: tuple[str, ...] = (
    "commit_wait",  # received -> commit start
    "commit",  # commit start -> committed
    "fanout",  # committed -> fanned out
    "server",  # received -> fanned out (the three above)
    "queue_wait",  # fanned out -> written, per recipient connection
    "client_ack",  # written -> acknowledged, per recipient connection
    "catchup",  # catch-up from storage: start or resync -> live, per connection
    "c2s_est",  # sender's probe RTT / 2, per publish (estimate)
    "s2c_est",  # recipient's probe RTT / 2, per acknowledged delivery (estimate)
    "rtt",  # probe RTT median, per probe
    "rtt_p95",  # probe RTT p95, per probe
)
HIST_NAMES: tuple[str, ...] = (*LATENCY_STAGES, "loss")
#: Histograms kept by name in ``Agg.extra`` (stored with the stages): the saturation
#: episodes of every bounded setting (``saturation.py``), and the client clock offset
#: estimated NTP-style from probe timestamps (|offset| in ms by sign, and its error bound).
CLOCK_AHEAD = "clock_ahead"
CLOCK_BEHIND = "clock_behind"
CLOCK_ERROR = "clock_error"

FAN_RING = 4096  # fan-out generations remembered; a mark older than this is skipped
MAX_WINDOW = 4096
WINDOW_VALUES = 3 * MAX_WINDOW  # (last pos, write time, messages) per written batch
MAX_OPEN_TRACES = 1000
# Recipient connections one trace follows: a trace is a sample, and following all
# members of a large channel would make trace rows cost as much as the deliveries.
MAX_TRACE_RECIPIENTS = 16
MAX_PENDING_ROWS = 50_000
MAX_CLOSED_WINDOWS = 180  # three hours of minutes without a successful flush


class Agg:
    """Counters and histograms of one (app, client region) in one minute."""

    __slots__ = (
        "active_max",
        "c2s_est",
        "catchup",
        "client_ack",
        "commit",
        "commit_wait",
        "connects",
        "delivered",
        "disc",
        "extra",
        "fanout",
        "late",
        "loss",
        "probes",
        "probes_clamped",
        "probes_rejected",
        "queue_wait",
        "resumes",
        "rtt",
        "rtt_p95",
        "s2c_est",
        "send_errors",
        "sent",
        "server",
        "traces",
        "undelivered",
    )

    def __init__(self) -> None:
        self.sent = self.send_errors = 0
        self.delivered = self.late = self.undelivered = 0
        self.connects = self.resumes = 0
        self.disc = [0] * len(REASONS)
        self.probes = self.probes_rejected = self.probes_clamped = 0
        self.traces = 0
        self.active_max = 0
        self.commit_wait = Histogram.latency()
        self.commit = Histogram.latency()
        self.fanout = Histogram.latency()
        self.server = Histogram.latency()
        self.queue_wait = Histogram.latency()
        self.client_ack = Histogram.latency()
        self.catchup = Histogram.latency()
        self.extra: dict[str, Histogram] = {}
        self.c2s_est = Histogram.latency()
        self.s2c_est = Histogram.latency()
        self.rtt = Histogram.latency()
        self.rtt_p95 = Histogram.latency()
        self.loss = Histogram.loss()

    def hist(self, name: str) -> Histogram:
        h: Histogram = getattr(self, name)
        return h

    def observe_extra(self, name: str, value: float, n: int = 1) -> None:
        """Observe ``value`` in the named extra histogram (created on first use)."""
        h = self.extra.get(name)
        if h is None:
            h = self.extra[name] = Histogram.latency()
        h.observe(value, n)

    def episode(self, ep: Episode, n: int = 1) -> None:
        """Record a saturation episode of a bounded setting (``saturation.py``)."""
        self.observe_extra(duration_stage(ep.setting), ep.duration_ms, n)
        self.observe_extra(demand_stage(ep.setting), max(ep.demand, 0.01), n)

    def counts(self) -> list[int]:
        """Counter values in ``storage.telemetry.COUNTERS`` order."""
        return [
            self.sent,
            self.send_errors,
            self.delivered,
            self.late,
            self.undelivered,
            self.connects,
            self.resumes,
            *self.disc,
            self.probes,
            self.probes_rejected,
            self.probes_clamped,
            self.traces,
            self.active_max,
        ]

    def merge(self, other: Agg) -> None:
        self.sent += other.sent
        self.send_errors += other.send_errors
        self.delivered += other.delivered
        self.late += other.late
        self.undelivered += other.undelivered
        self.connects += other.connects
        self.resumes += other.resumes
        self.disc = [a + b for a, b in zip(self.disc, other.disc, strict=True)]
        self.probes += other.probes
        self.probes_rejected += other.probes_rejected
        self.probes_clamped += other.probes_clamped
        self.traces += other.traces
        self.active_max = max(self.active_max, other.active_max)
        for name in HIST_NAMES:
            self.hist(name).merge(other.hist(name))
        for name, h in other.extra.items():
            mine = self.extra.get(name)
            if mine is None:
                mine = self.extra[name] = Histogram.latency()
            mine.merge(h)

    def to_row(self, key: Key, node_region: str, node: str, start_ms: int) -> SeriesRow:
        hists = {n: self.hist(n).to_data() for n in HIST_NAMES if self.hist(n).n}
        hists.update({n: h.to_data() for n, h in self.extra.items() if h.n})
        return SeriesRow(key[0], node_region, node, key[1], 60, start_ms, self.counts(), hists)


assert len(Agg().counts()) == len(COUNTERS)


class Trace:
    """Server-side stamps of one sampled message (monotonic seconds)."""

    __slots__ = (
        "app",
        "c2s_ms",
        "commit",
        "conv",
        "fanned",
        "finished",
        "followers",
        "pending",
        "pos",
        "received_ms",
        "recv",
        "rows",
        "sender_region",
        "start",
    )

    def __init__(
        self,
        app: str,
        sender_region: str,
        pos: int,
        conv: str,
        recv: float,
        start: float,
        commit: float,
        received_ms: int,
        c2s_ms: float | None,
    ) -> None:
        self.app, self.sender_region, self.pos, self.conv = app, sender_region, pos, conv
        self.recv, self.start, self.commit = recv, start, commit
        self.fanned = 0.0
        self.received_ms = received_ms
        self.c2s_ms = c2s_ms
        self.pending = 0  # recipient connections that have not resolved yet
        self.followers = 0  # recipient connections followed (<= MAX_TRACE_RECIPIENTS)
        self.finished = False
        self.rows: list[TraceRow] = []


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class ConnTelemetry:
    """Telemetry state of one logged-in connection (owned by the gateway's Connection)."""

    __slots__ = (
        "_expired",
        "_mono",
        "_traced",
        "app",
        "catchup_events",
        "catchup_full_pages",
        "catchup_since",
        "closed",
        "connected_ms",
        "delivered",
        "device",
        "first_gen",
        "key",
        "loss",
        "net",
        "probes",
        "queue_setting",
        "rec",
        "region",
        "resumed",
        "rtt_ms",
        "sdk",
        "trace_acks",
        "undelivered",
        "user",
        "whead",
        "window",
        "wrote_n",
        "wrote_pos",
    )

    def __init__(
        self,
        rec: Recorder,
        app: str,
        user: str,
        device: str,
        region: str,
        net: str,
        sdk: str,
        resumed: bool,
        connected_ms: int,
    ) -> None:
        self.rec = rec
        self.app, self.user, self.device = app, user, device
        self.region, self.net, self.sdk = region, net, sdk
        self.key: Key = (app, region)
        self.resumed = resumed
        self.connected_ms = connected_ms
        self.rtt_ms: float | None = None
        self.loss: float | None = None
        self.probes = 0
        self.delivered = 0
        self.undelivered = 0
        self.closed = False
        self._mono = rec.mono
        # Fan-out generation of the first event queued since the last write (-1: none).
        self.first_gen = -1
        self._traced: list[Trace] = []  # bounded by the live queue's item bound
        # (last pos, write time, messages) per written batch, oldest first, flat in one
        # array of doubles from index ``whead`` on (positions stay exact below 2**53).
        # No object is allocated per entry: entries live about an ack interval (1 s
        # in the SDK), and a tuple per written batch held that long made the cyclic
        # GC run its full collection every few seconds (docs/telemetry.md §cost).
        self.window = array("d")
        self.whead = 0
        # What the current write pass wrote here (last pos, events), for written_pass:
        # kept on the connection rather than in a tuple per write (no allocation).
        self.wrote_pos = 0
        self.wrote_n = 0
        # Allocated on first use, as _expired: most connections never carry a sampled
        # trace, and an empty deque is ~600 bytes (docs/benchmarks.md, memory).
        self.trace_acks: deque[tuple[int, Trace, float]] | None = None
        # (pos, written) of sampled events resolved "unacked" at the deadline: an ack
        # covering one later is a slow reader, recorded as a ``late_ack`` trace row.
        self._expired: deque[tuple[int, Trace, float]] | None = None  # maxlen 64
        # The catch-up in progress (from login or from a resync) and what it served.
        self.catchup_since: float | None = self._mono()
        self.catchup_events = 0
        self.catchup_full_pages = 0
        self.queue_setting = ""  # the send-queue bound that forced this catch-up

    # -- live path (Connection.offer / run_sender) --------------------------------

    def trace_offered(self, trace: Trace) -> None:
        """The sampled event of ``trace`` was just queued on this connection."""
        if trace.followers >= MAX_TRACE_RECIPIENTS:
            return
        trace.followers += 1
        trace.pending += 1
        self._traced.append(trace)

    def resynced(self, over_items: bool = True) -> None:
        """The live queue was dropped (slow consumer); its events come from storage.

        ``over_items``: the item bound was passed (else the byte bound); the episode of
        that setting lasts until the connection is live again (``caught_up``)."""
        self.first_gen = -1
        now = self._mono()
        if self.catchup_since is None:
            self.catchup_since = now
            self.catchup_events = self.catchup_full_pages = 0
        self.queue_setting = SEND_QUEUE_ITEMS if over_items else SEND_QUEUE_BYTES
        for trace in self._traced:
            self.rec.resolve(trace, self, None, now, "resync")
        self._traced.clear()

    def written_live(self, last_pos: int, n: int, now: float | None = None) -> None:
        """The ``n`` queued events ending at ``last_pos`` are being written now (or were
        at ``now``, taken before the write).  The gateway's write pass records all its
        connections at once (``Recorder.written_pass``); this is the one-connection
        form of the same."""
        self.wrote_pos, self.wrote_n = last_pos, n
        self.rec.written_pass([self], self._mono() if now is None else now)

    def _queue_waits(self, first: int, n: int, now: float) -> None:
        """Queue waits of ``n`` events queued since fan-out ``first``, which is not the
        newest: the first event at its own fan-out's time, the rest at the newest's."""
        rec = self.rec
        ring = rec.fan_times
        newest = rec.fan_gen - 1
        hist = (rec._aggs.get(self.key) or rec.agg(self.key)).queue_wait
        stamp_gen, fanned = ring[first % FAN_RING]
        if stamp_gen == first:
            hist.observe((now - fanned) * 1000.0)
        stamp_gen, fanned = ring[newest % FAN_RING]
        if stamp_gen == newest and n > 1:
            hist.observe((now - fanned) * 1000.0, n - 1)

    def _traced_written(self, now: float) -> None:
        """The sampled events queued here were written at ``now``: await their acks."""
        acks = self.trace_acks
        if acks is None:
            acks = self.trace_acks = deque()
        for trace in self._traced:
            acks.append((trace.pos, trace, now))
        self._traced.clear()
        self.rec.unacked.add(self)

    def written_catchup(self, last_pos: int, n: int, page: int = 0) -> None:
        """A catch-up page of ``n`` events (read from storage) ending at ``last_pos``;
        a page of ``page`` events (the bound) means the bound made it take another read."""
        if n:
            self._push(last_pos, self._mono(), n)
            self.catchup_events += n
            if page and n >= page:
                self.catchup_full_pages += 1

    def caught_up(self, now: float | None = None) -> None:
        """The connection is live again (or closed while catching up, ``close``): record
        the catch-up stage and the episodes of the bounds that made it necessary (send
        queue) or longer (catch-up page)."""
        since = self.catchup_since
        if since is None:
            return
        now = self._mono() if now is None else now
        self.catchup_since = None
        agg = self.rec.agg(self.key)
        waited_ms = max(now - since, 0.0) * 1000.0
        agg.catchup.observe(waited_ms)
        if self.queue_setting:
            agg.episode(Episode(self.queue_setting, waited_ms, float(self.catchup_events)))
            self.queue_setting = ""
        if self.catchup_full_pages:
            agg.episode(Episode(CATCHUP_PAGE, waited_ms, float(self.catchup_events)))

    def _push(self, last_pos: int, now: float, n: int) -> None:
        window = self.window
        if not window:
            self.rec.unacked.add(self)
        elif len(window) - self.whead >= WINDOW_VALUES:
            self._overflow()
        window.append(last_pos)
        window.append(now)
        window.append(n)

    def _overflow(self) -> None:
        """The window is full: its oldest batch counts as not delivered."""
        dropped = int(self.window[self.whead + 2])
        self._pop(3)
        self.rec.agg(self.key).undelivered += dropped
        self.undelivered += dropped
        self.rec.stats["ack_window_overflow"] += 1

    def _pop(self, k: int) -> None:
        """Drop the ``k`` oldest values (``k / 3`` entries) of the window."""
        head = self.whead + k
        window = self.window
        if head >= len(window):
            del window[:]
            head = 0
        elif head >= 3 * 256 and 2 * head >= len(window):
            del window[:head]  # amortised O(1): the live part is at most as long
            head = 0
        self.whead = head

    def pending(self) -> int:
        """Written batches not yet acknowledged or expired."""
        return (len(self.window) - self.whead) // 3

    # -- acknowledgements and deadlines -------------------------------------------

    def acked(self, pos: int) -> None:
        """The device acknowledged its feed up to ``pos`` (cumulative)."""
        window = self.window
        i = self.whead
        end = len(window)
        trace_acks = self.trace_acks
        if not ((i < end and window[i] <= pos) or (trace_acks and trace_acks[0][0] <= pos)):
            if self._expired and self._expired[0][0] <= pos:
                self._late_acks(pos)
            return
        rec = self.rec
        now = self._mono()
        deadline = rec.deadline_s
        agg = rec.agg(self.key)
        if i < end and window[i] <= pos:
            # One ack covers every batch written since the last: hundreds at a steady
            # rate, and the subscribers of a busy channel ack at the same moment.
            # Per-entry Python work here was a 25-60 ms pause of the loop when 100
            # of them acked 500 batches each (issue 20): _ack_window does C-level
            # work per entry and Python work per histogram bucket touched.
            start = i
            covered = bisect_right(window[i:end:3], pos)
            i += 3 * covered
            delivered, late = self._ack_window(start, i, now, deadline, agg.client_ack)
            self._pop(i - start)
            if delivered:
                agg.delivered += delivered
                self.delivered += delivered
                if self.rtt_ms is not None:
                    agg.s2c_est.observe(self.rtt_ms / 2.0, delivered)
            if late:
                agg.late += late
                self.undelivered += late
        while trace_acks and trace_acks[0][0] <= pos:
            _, trace, written = trace_acks.popleft()
            outcome = "acked" if now - written <= deadline else "late"
            rec.resolve(trace, self, written, now, outcome, acked=now)
        if self._expired:
            self._late_acks(pos)

    def _ack_window(
        self, start: int, stop: int, now: float, deadline: float, hist: Histogram
    ) -> tuple[int, int]:
        """Record the waits of the window's entries in ``[start, stop)`` (acknowledged at
        ``now``) into ``hist``; returns (delivered, late) event counts.

        Write times only grow along the window, so the waits, newest first, ascend:
        one list of waits (a comprehension), then per histogram bucket touched a
        bisect and a C-level sum of its counts.  The same buckets and sums as
        observing every entry, without a Python loop per entry."""
        window = self.window
        # Waits in ms, newest first: ascending.
        ms = [(now - t) * 1000.0 for t in window[stop - 2 : start : -3]]
        counts = window[stop - 1 : start + 1 : -3]
        ok = bisect_right(ms, deadline * 1000.0)
        late = int(sum(counts[ok:]))
        if not ok:
            return 0, late
        bounds = hist.bounds
        buckets = hist.counts
        last = len(bounds)
        at = 0
        while at < ok:
            j = bisect_left(bounds, ms[at])
            cut = bisect_right(ms, bounds[j], at, ok) if j < last else ok
            buckets[j] += int(sum(counts[at:cut]))
            at = cut
        delivered = int(sum(counts[:ok]))
        hist.sum += sum(map(mul, ms, counts[:ok]))
        hist.n += delivered
        return delivered, late

    def _late_acks(self, pos: int) -> None:
        expired, now = self._expired, self._mono()
        while expired and expired[0][0] <= pos:
            _, trace, written = expired.popleft()
            self.rec.late_ack(trace, self, written, now)

    def expire(self, now: float) -> None:
        """Count deliveries unacknowledged past the deadline as not delivered."""
        limit = now - self.rec.deadline_s
        window = self.window
        i = self.whead
        end = len(window)
        if i < end and window[i + 1] < limit:
            agg = self.rec.agg(self.key)
            start = i
            while i < end and window[i + 1] < limit:
                n = int(window[i + 2])
                i += 3
                agg.undelivered += n
                self.undelivered += n
            self._pop(i - start)
        trace_acks = self.trace_acks
        while trace_acks and trace_acks[0][2] < limit:
            entry = trace_acks.popleft()
            self.rec.resolve(entry[1], self, entry[2], now, "unacked")
            if self._expired is None:
                self._expired = deque(maxlen=64)
            self._expired.append(entry)

    def close(self, now: float) -> None:
        """The connection ended: everything still pending was not delivered."""
        if self.closed:
            return
        if self.queue_setting or self.catchup_full_pages:
            self.caught_up(now)  # a catch-up cut short by the close still cost its time
        self.closed = True
        self.rec.unacked.discard(self)
        pending = int(sum(self.window[self.whead + 2 :: 3]))
        del self.window[:]
        self.whead = 0
        if pending:
            self.rec.agg(self.key).undelivered += pending
            self.undelivered += pending
        for _, trace, written in self.trace_acks or ():
            self.rec.resolve(trace, self, written, now, "closed")
        self.trace_acks = None
        for trace in self._traced:
            self.rec.resolve(trace, self, None, now, "closed")
        self._traced.clear()


class Recorder:
    """Hot-path recording API for one node (see the module docstring)."""

    def __init__(
        self, settings: TelemetrySettings, node: str, node_region: str, clock: Clock
    ) -> None:
        self.settings = settings
        self.node = node
        self.node_region = node_region
        self.clock = clock
        # The monotonic clock as the hot path calls it (once per written batch): the
        # C function itself for the system clock, saving a Python frame per call.
        self.mono = time.monotonic if type(clock) is SystemClock else clock.monotonic
        self.deadline_s = settings.ack_deadline_ms / 1000.0
        self.sample_every = settings.trace_sample_every
        self.labels = LabelBounder(settings.label_max_len, settings.label_max_values)
        self.minute = int(clock.time() // 60)
        self._aggs: dict[Key, Agg] = {}
        self._closed: list[tuple[int, dict[Key, Agg]]] = []
        self._active: dict[Key, int] = {}
        self.conns: set[ConnTelemetry] = set()
        # Connections with written batches (or traced events) not yet acknowledged:
        # the only ones ``tick`` has to look at for expired deadlines, so an idle
        # fleet costs the loop nothing once a second.
        self.unacked: set[ConnTelemetry] = set()
        # Windows handed to the flusher and not yet added to ``totals`` (``current``
        # still counts them, so exported counters never go backwards meanwhile).
        self._flushing: list[Drained] = []
        # Hub writer batch state: set by commit_window, used by published and
        # cleared by batch_fanned.  The key, not the Agg, is kept: in a cluster the
        # writer awaits between the two, and a flush may take the minute meanwhile.
        self._commit_start = 0.0
        self._commit_end = 0.0
        self._commit_behind = 0
        self._gauges: list[PoolGauge] = []
        self._scratch: list[tuple[Key, float, Trace | None]] = []
        self.fan_gen = 0
        self.fan_times: list[tuple[int, float]] = [(-1, 0.0)] * FAN_RING
        # (app, pos) -> trace: positions are per app (docs/protocol.md §4).
        self.open_traces: dict[tuple[str, int], Trace] = {}
        # Traces started by ``published`` in the current batch, until the hub routes
        # their events (the hub calls every puback of a batch before fanning it out).
        self.tracing: dict[tuple[str, int], Trace] = {}
        self._sample_n = 0
        self._trace_rows: list[TraceRow] = []
        self._history: list[ConnectionRow] = []
        self.totals = Agg()  # everything flushed so far (Prometheus counters)
        self.stats = {
            "ack_window_overflow": 0,
            "traces_skipped": 0,
            "rows_dropped": 0,
            "flushes": 0,
            "flush_errors": 0,
            "login_failures": 0,
        }
        self.probe_rejections: dict[str, int] = {}
        self.probe_clamps: dict[str, int] = {}

    # -- aggregates ------------------------------------------------------------

    def agg(self, key: Key) -> Agg:
        """The current minute's aggregate of ``key``."""
        a = self._aggs.get(key)
        if a is None:
            a = self._aggs[key] = Agg()
            a.active_max = self._active.get(key, 0)
        return a

    def active_connections(self) -> int:
        return sum(self._active.values())

    # -- connections -------------------------------------------------------------

    def attach(
        self, app: str, user: str, device: str, *, region: str, net: str, sdk: str, resumed: bool
    ) -> ConnTelemetry:
        """A connection logged in; returns its telemetry state."""
        b = self.labels
        region = b.bound("region", region)
        tel = ConnTelemetry(
            self,
            app,
            user,
            device,
            region,
            b.bound("net", net),
            b.bound("sdk", sdk),
            resumed,
            int(self.clock.time() * 1000),
        )
        self.conns.add(tel)
        key = tel.key
        n = self._active[key] = self._active.get(key, 0) + 1
        agg = self.agg(key)
        agg.connects += 1
        if resumed:
            agg.resumes += 1
        agg.active_max = max(agg.active_max, n)
        return tel

    def detach(self, tel: ConnTelemetry, reason: str) -> None:
        """The connection closed for ``reason`` (one of ``REASONS``)."""
        if tel.closed:
            return
        tel.close(self.clock.monotonic())
        self.conns.discard(tel)
        key = tel.key
        left = self._active.get(key, 1) - 1
        if left > 0:
            self._active[key] = left
        else:
            self._active.pop(key, None)
        agg = self.agg(key)
        agg.disc[_REASON_INDEX.get(reason, _REASON_INDEX["protocol_error"])] += 1
        self._keep(
            self._history,
            ConnectionRow(
                app=tel.app,
                node_region=self.node_region,
                node=self.node,
                client_region=tel.region,
                net=tel.net,
                sdk=tel.sdk,
                user_id=tel.user,
                device=tel.device,
                connected_ms=tel.connected_ms,
                closed_ms=int(self.clock.time() * 1000),
                reason=reason if reason in _REASON_INDEX else "protocol_error",
                resumed=tel.resumed,
                probes=tel.probes,
                rtt_ms=tel.rtt_ms,
                loss=tel.loss,
                delivered=tel.delivered,
                undelivered=tel.undelivered,
            ),
        )

    def login_failed(
        self, app: str, user: str, device: str, code: int, *, region: str, net: str, sdk: str
    ) -> None:
        """A ``hello`` with an authentic but expired token (``code`` 4011) was refused.

        Kept as a zero-length connection-history row closed with ``auth_expiry`` (the
        close the client saw), so a client retrying with a stale token shows up as a
        reconnect loop.  No minute counter moves: the connection never logged in, so it
        is neither a connect nor a disconnect of an active connection.
        """
        b = self.labels
        now_ms = int(self.clock.time() * 1000)
        self.stats["login_failures"] += 1
        self._keep(
            self._history,
            ConnectionRow(
                app=app,
                node_region=self.node_region,
                node=self.node,
                client_region=b.bound("region", region),
                net=b.bound("net", net),
                sdk=b.bound("sdk", sdk),
                user_id=user,
                device=device,
                connected_ms=now_ms,
                closed_ms=now_ms,
                reason="auth_expiry" if code == 4011 else "protocol_error",
                resumed=False,
                probes=0,
                rtt_ms=None,
                loss=None,
                delivered=0,
                undelivered=0,
            ),
        )

    def _keep(
        self,
        rows: list[TraceRow] | list[ConnectionRow],
        row: TraceRow | ConnectionRow,
    ) -> None:
        if len(rows) >= MAX_PENDING_ROWS:
            del rows[0]
            self.stats["rows_dropped"] += 1
        rows.append(row)  # type: ignore[arg-type]

    # -- publishing (gateway completion callbacks, inside the hub writer) ---------

    def commit_window(self, start: float, end: float, demand: int = 0) -> None:
        """The hub's writer took a batch at ``start``; its transaction returned at ``end``.
        ``demand``: when the batch cap bound, the operations the writer had (the full
        batch plus those the cap left queued); 0 when it did not.  A full batch is one
        saturation episode, however many publishes rode it: counting one per publish
        made a few full batches look like thousands of episodes and hours at the bound."""
        self._commit_start, self._commit_end = start, end
        self._commit_behind = demand

    def publish_failed(self, tel: ConnTelemetry | None, key: Key | None = None) -> None:
        """A publish was answered with an error (any code)."""
        k = tel.key if tel is not None else key
        if k is not None:
            self.agg(k).send_errors += 1

    def published(self, tel: ConnTelemetry, recv: float, pos: int, conv: str, routed: bool) -> None:
        """A publish received at ``recv`` committed at ``pos`` (``routed``: not a dup)."""
        agg = self.agg(tel.key)
        agg.sent += 1
        start, end = self._commit_start, self._commit_end
        agg.commit_wait.observe(max(start - recv, 0.0) * 1000.0)
        agg.commit.observe((end - start) * 1000.0)
        if self._commit_behind:  # the batch cap bound: recorded with its first publish,
            # lasting from that publish's arrival to the commit (what the cap made it wait)
            agg.episode(Episode(COMMIT_BATCH, (end - recv) * 1000.0, self._commit_behind))
            self._commit_behind = 0
        if tel.rtt_ms is not None:
            agg.c2s_est.observe(tel.rtt_ms / 2.0)
        if not routed:
            return
        trace: Trace | None = None
        if self.sample_every:
            self._sample_n += 1
            if self._sample_n >= self.sample_every:
                self._sample_n = 0
                if len(self.open_traces) < MAX_OPEN_TRACES:
                    received_ms = int((self.clock.time() - (self.clock.monotonic() - recv)) * 1000)
                    c2s = None if tel.rtt_ms is None else tel.rtt_ms / 2.0
                    trace = Trace(
                        tel.app, tel.region, pos, conv, recv, start, end, received_ms, c2s
                    )
                    self.open_traces[(tel.app, pos)] = trace
                    self.tracing[(tel.app, pos)] = trace
                    agg.traces += 1
                else:
                    self.stats["traces_skipped"] += 1
        self._scratch.append((tel.key, recv, trace))

    def written_pass(self, written: list[ConnTelemetry], now: float) -> None:
        """One write pass wrote a live batch to each of these connections (its last
        position and events in ``wrote_pos`` and ``wrote_n``), stamped ``now`` (before
        the bytes, so an ack can only follow it).

        Per connection: its queue wait and an ack-window entry.  This runs for every
        delivery's connection at load (issue 20), so what the pass's connections
        share is done once: most of them were queued by the newest fan-out, so their
        waits fall in one bucket and are summed per key, and observed once per key
        after the loop."""
        newest = self.fan_gen - 1
        stamp_gen, fanned = self.fan_times[newest % FAN_RING]
        stamped = stamp_gen == newest
        same: dict[Key, int] = {}  # events queued by the newest fan-out, per key
        unacked = self.unacked
        for tel in written:
            if tel.closed:
                continue  # the connection ended in the same write pass
            n = tel.wrote_n
            first = tel.first_gen
            if first >= 0:
                tel.first_gen = -1
                if first != newest:
                    tel._queue_waits(first, n, now)
                elif stamped:
                    key = tel.key
                    same[key] = same.get(key, 0) + n
            window = tel.window
            if not window:
                unacked.add(tel)
            elif len(window) - tel.whead >= WINDOW_VALUES:
                tel._overflow()
            window.append(tel.wrote_pos)
            window.append(now)
            window.append(n)
            if tel._traced:
                tel._traced_written(now)
        if same:
            ms = (now - fanned) * 1000.0
            bucket = bisect_left(LATENCY_BOUNDS_MS, ms)
            for key, n in same.items():
                hist = (self._aggs.get(key) or self.agg(key)).queue_wait
                hist.counts[bucket] += n
                hist.sum += ms * n
                hist.n += n

    def trace_for(self, app: str, pos: int) -> Trace | None:
        """The trace of event ``pos`` of ``app`` if it is sampled (the hub asks once per
        event; another app's event may have the same position)."""
        tracing = self.tracing
        return tracing.pop((app, pos), None) if tracing else None

    def batch_fanned(self, now: float) -> None:
        """The hub finished offering the current batch to every live connection."""
        self.tracing.clear()
        gen = self.fan_gen
        self.fan_times[gen % FAN_RING] = (gen, now)
        self.fan_gen = gen + 1
        end = self._commit_end
        fan_ms = max(now - end, 0.0) * 1000.0
        for key, recv, trace in self._scratch:
            agg = self.agg(key)
            agg.fanout.observe(fan_ms)
            agg.server.observe(max(now - recv, 0.0) * 1000.0)
            if trace is not None:
                trace.fanned = now
                if trace.pending == 0:
                    self._finish(trace, "no_recipient")
        self._scratch.clear()

    # -- traces ---------------------------------------------------------------

    def resolve(
        self,
        trace: Trace,
        tel: ConnTelemetry,
        written: float | None,
        now: float,
        outcome: str,
        acked: float | None = None,
    ) -> None:
        """One recipient of ``trace`` is done (acked, late, unacked, closed or resync)."""
        if trace.finished:
            return
        fanned = trace.fanned or now
        end_to_end = None if acked is None else _ms(acked - trace.recv)
        self_rtt = tel.rtt_ms
        trace.rows.append(
            TraceRow(
                app=trace.app,
                node_region=self.node_region,
                node=self.node,
                pos=trace.pos,
                conv=trace.conv,
                sender_region=trace.sender_region,
                recipient_region=tel.region,
                recipient_device=tel.device,
                received_ms=trace.received_ms,
                outcome=outcome,
                commit_wait_ms=_ms(trace.start - trace.recv),
                commit_ms=_ms(trace.commit - trace.start),
                fanout_ms=_ms(fanned - trace.commit),
                queue_wait_ms=None if written is None else _ms(written - fanned),
                client_ack_ms=None if acked is None or written is None else _ms(acked - written),
                end_to_end_ms=end_to_end,
                c2s_est_ms=trace.c2s_ms,
                s2c_est_ms=None if self_rtt is None else self_rtt / 2.0,
            )
        )
        trace.pending -= 1
        if trace.pending <= 0 and trace.fanned:
            self._finish(trace, "")

    def late_ack(self, trace: Trace, tel: ConnTelemetry, written: float, now: float) -> None:
        """A device acknowledged a sampled event after its trace was resolved ``unacked``:
        the event was delivered, only slowly (a slow reader, not loss).  Kept as an extra
        ``late_ack`` row with the measured client-ack time."""
        fanned = trace.fanned or written
        self._keep(
            self._trace_rows,
            TraceRow(
                app=trace.app,
                node_region=self.node_region,
                node=self.node,
                pos=trace.pos,
                conv=trace.conv,
                sender_region=trace.sender_region,
                recipient_region=tel.region,
                recipient_device=tel.device,
                received_ms=trace.received_ms,
                outcome="late_ack",
                commit_wait_ms=_ms(trace.start - trace.recv),
                commit_ms=_ms(trace.commit - trace.start),
                fanout_ms=_ms(fanned - trace.commit),
                queue_wait_ms=_ms(written - fanned),
                client_ack_ms=_ms(now - written),
                end_to_end_ms=_ms(now - trace.recv),
                c2s_est_ms=trace.c2s_ms,
                s2c_est_ms=None if tel.rtt_ms is None else tel.rtt_ms / 2.0,
            ),
        )

    def _finish(self, trace: Trace, outcome: str) -> None:
        trace.finished = True
        self.open_traces.pop((trace.app, trace.pos), None)
        if outcome:
            fanned = trace.fanned
            trace.rows.append(
                TraceRow(
                    app=trace.app,
                    node_region=self.node_region,
                    node=self.node,
                    pos=trace.pos,
                    conv=trace.conv,
                    sender_region=trace.sender_region,
                    recipient_region="",
                    recipient_device="",
                    received_ms=trace.received_ms,
                    outcome=outcome,
                    commit_wait_ms=_ms(trace.start - trace.recv),
                    commit_ms=_ms(trace.commit - trace.start),
                    fanout_ms=_ms(fanned - trace.commit),
                    queue_wait_ms=None,
                    client_ack_ms=None,
                    end_to_end_ms=None,
                    c2s_est_ms=trace.c2s_ms,
                    s2c_est_ms=None,
                )
            )
        for row in trace.rows:
            self._keep(self._trace_rows, row)
        trace.rows = []

    # -- probes ---------------------------------------------------------------

    def probe(self, tel: ConnTelemetry, report: ProbeReport) -> bool:
        """Record a client probe; returns False when it was rejected (and counted)."""
        verdict = validate_probe(report, int(self.clock.time() * 1000))
        sample = verdict.sample
        if sample is None:
            self.agg(tel.key).probes_rejected += 1
            if verdict.rejected in ("future", "stale") and 0 <= report.rtt_p95_ms <= 600_000:
                self._clock_offset(
                    self.agg(tel.key), report.ts, report.rtt_p50_ms, report.rtt_p95_ms
                )
            reason = verdict.rejected
            self.probe_rejections[reason] = self.probe_rejections.get(reason, 0) + 1
            return False
        if tel.region == UNKNOWN and report.region:
            self._move(tel, self.labels.bound("region", report.region))
        agg = self.agg(tel.key)
        if verdict.clamped:
            agg.probes_clamped += 1
            for field in verdict.clamped:
                self.probe_clamps[field] = self.probe_clamps.get(field, 0) + 1
        agg.probes += 1
        agg.rtt.observe(sample.rtt_p50_ms)
        if report.ts:
            self._clock_offset(agg, report.ts, sample.rtt_p50_ms, sample.rtt_p95_ms)
        agg.rtt_p95.observe(sample.rtt_p95_ms)
        agg.loss.observe(sample.loss)
        tel.rtt_ms = sample.rtt_p50_ms
        tel.loss = sample.loss
        tel.probes += 1
        if report.net:
            tel.net = self.labels.bound("net", report.net)
        if report.sdk:
            tel.sdk = self.labels.bound("sdk", report.sdk)
        return True

    def _clock_offset(self, agg: Agg, ts_ms: int, rtt_p50: float, rtt_p95: float) -> None:
        """NTP-style client clock offset from one probe: the client stamped ``ts`` when it
        sent the report, which took between 0 and one RTT to arrive, so the offset is
        ``ts - (received - rtt_p50 / 2)`` within ``± rtt_p95 / 2`` (+1 ms of stamping)."""
        now_ms = self.clock.time() * 1000.0
        offset = ts_ms - (now_ms - max(rtt_p50, 0.0) / 2.0)
        agg.observe_extra(CLOCK_AHEAD if offset >= 0 else CLOCK_BEHIND, max(abs(offset), 0.01))
        agg.observe_extra(CLOCK_ERROR, max(rtt_p95, 0.0) / 2.0 + 1.0)

    def watch(self, gauge: PoolGauge) -> None:
        """Report a node-wide bound (the storage reader pool) in every (app, region) that
        is active when its episodes are drained (each second): a full pool delays every
        app on the node, so each app's diagnosis sees the node's own counter."""
        self._gauges.append(gauge)

    def _move(self, tel: ConnTelemetry, region: str) -> None:
        """Adopt the probe's region for a connection whose hello named none."""
        old = tel.key
        left = self._active.get(old, 1) - 1
        if left > 0:
            self._active[old] = left
        else:
            self._active.pop(old, None)
        tel.region = region
        tel.key = (tel.app, region)
        n = self._active[tel.key] = self._active.get(tel.key, 0) + 1
        agg = self.agg(tel.key)
        agg.active_max = max(agg.active_max, n)

    # -- periodic work (the telemetry service's task) --------------------------------

    def tick(self) -> None:
        """Once a second: close the minute, expire ack windows and stale traces."""
        minute = int(self.clock.time() // 60)
        if minute != self.minute:
            if self._aggs:
                self._closed.append((self.minute, self._aggs))
                if len(self._closed) > MAX_CLOSED_WINDOWS:
                    _, lost = self._closed.pop(0)
                    self.stats["rows_dropped"] += len(lost)
            self._aggs = {}
            self.minute = minute
        for key, n in self._active.items():
            agg = self.agg(key)
            if n > agg.active_max:
                agg.active_max = n
        now = self.clock.monotonic()
        unacked = self.unacked
        for tel in list(unacked):
            tel.expire(now)
            if not tel.window and not tel.trace_acks:
                unacked.discard(tel)
        for gauge in self._gauges:
            episodes = gauge.drain()
            if episodes:
                for key in list(self._active) or list(self._aggs):
                    agg = self.agg(key)
                    for ep in episodes:
                        agg.episode(ep)
        if self.open_traces:
            # Recipients resolve their own part; this only bounds how long a trace
            # whose recipient never wrote or closed stays open.
            stale = now - 2 * self.deadline_s - 5.0
            for trace in [t for t in self.open_traces.values() if t.fanned and t.fanned < stale]:
                self._finish(trace, "")

    def take(self) -> Drained:
        """Hand everything recorded since the last take to the flusher, in O(1).

        The loop only swaps containers here; turning the aggregates into rows
        (``Drained.convert``) is the flusher's job on its own thread, and
        ``settle`` then adds them to ``totals``.  Nothing here touches the taken
        objects again: every hot-path method looks its aggregate up by key.
        """
        windows = self._closed
        windows.append((self.minute, self._aggs))
        self._closed = []
        self._aggs = {}
        traces, self._trace_rows = self._trace_rows, []
        history, self._history = self._history, []
        batch = Drained(windows, traces, history, self.node_region, self.node)
        self._flushing.append(batch)
        return batch

    def settle(self, batch: Drained) -> None:
        """``batch`` was converted: count it in ``totals`` (one merge, on the loop)."""
        if batch in self._flushing:
            self._flushing.remove(batch)
            self.totals.merge(batch.total())

    def drain(self) -> tuple[list[SeriesRow], list[TraceRow], list[ConnectionRow]]:
        """Take and convert in one call (tests, tools); the flusher uses ``take``."""
        batch = self.take()
        rows = batch.convert()
        self.settle(batch)
        return rows, batch.traces, batch.history

    def current(self) -> Agg:
        """Totals including what has not been flushed yet (a copy)."""
        out = Agg()
        out.merge(self.totals)
        for agg in self._iter_unflushed():
            out.merge(agg)
        return out

    def _iter_unflushed(self) -> Iterable[Agg]:
        for batch in self._flushing:
            for _, aggs in batch.windows:
                yield from aggs.values()
        for _, aggs in self._closed:
            yield from aggs.values()
        yield from self._aggs.values()


class Drained:
    """What one ``Recorder.take`` handed over: minute aggregates, trace and history rows.

    Owned by the flusher once taken: the recorder never writes to these objects
    again, so ``convert`` may run on another thread while the loop goes on.
    """

    __slots__ = ("_total", "history", "node", "node_region", "traces", "windows")

    def __init__(
        self,
        windows: list[tuple[int, dict[Key, Agg]]],
        traces: list[TraceRow],
        history: list[ConnectionRow],
        node_region: str,
        node: str,
    ) -> None:
        self.windows = windows
        self.traces = traces
        self.history = history
        self.node_region = node_region
        self.node = node
        self._total: Agg | None = None

    def convert(self) -> list[SeriesRow]:
        """The minute rows (deltas) of the taken windows; also sums them for ``total``."""
        total = Agg()
        rows = []
        for minute, aggs in self.windows:
            for key, agg in aggs.items():
                total.merge(agg)
                rows.append(agg.to_row(key, self.node_region, self.node, minute * 60_000))
        self._total = total
        return rows

    def total(self) -> Agg:
        """Everything taken, summed (after ``convert``)."""
        if self._total is None:
            self.convert()
        assert self._total is not None
        return self._total

"""The telemetry component of a node: recorder, flusher task, retention, queries, metrics.

Built by the composition root (``server/app.py``) with ``open_telemetry``; the
gateway and hub receive ``telemetry.recorder`` (None when ``[telemetry] enabled
= false``, so every hook is one ``is None`` test).  One task owns all periodic
work: ``Recorder.tick`` every second, a flush every ``flush_interval_s`` and
retention/downsampling every ``MAINTAIN_EVERY_S``; ``aclose`` cancels it and
writes a last flush.

Theory of operation: telemetry never stalls delivery (docs/telemetry.md §cost)
---------------------------------------------------------------------------
* On the event loop a flush only swaps containers (``Recorder.take``, O(1)) and
  later adds one summed aggregate to the Prometheus totals (``Recorder.settle``).
* Turning minute aggregates into rows, encoding histograms and merging with rows
  left over from a failed flush run on this component's own thread
  (``telemetry-convert``).
* Rows are written by a database engine of their own (``writer``: its own
  connection and writer thread), never by the messaging engine whose single writer
  thread runs the hub's group commits.  It commits with ``sync = "normal"``: a
  telemetry row needs no fsync of its own (the next durable message commit, or the
  checkpoint, syncs it; a crash loses at most what was still in memory anyway).
* Rows go out in transactions of at most ``CHUNK_ROWS`` rows.  SQLite has one
  write lock per database: a message commit that finds it taken by telemetry
  waits (its busy handler retries after 1 ms), so telemetry holds it only briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from relaydesk.clock import Clock
from relaydesk.config import Settings
from relaydesk.storage import Database, Tx, open_database
from relaydesk.storage.telemetry import (
    ConnectionRow,
    SeriesRow,
    TelemetryStore,
    TraceRow,
    telemetry_migrations,
)
from relaydesk.telemetry.metrics import MetricsExporter
from relaydesk.telemetry.query import QualityService
from relaydesk.telemetry.recorder import MAX_PENDING_ROWS, Drained, Recorder

log = logging.getLogger("relaydesk.telemetry")

MAINTAIN_EVERY_S = 600.0
DAY_MS = 86_400_000
# Rows (series + traces + history) per telemetry transaction: a few hundred
# microseconds of SQLite's write lock, so a message commit never waits long on it.
CHUNK_ROWS = 200
# Pause between two telemetry transactions: a message commit that found SQLite's
# write lock taken sleeps 1 ms, then 2 ms, ... before it retries; without a gap the
# telemetry writer would take the lock again first and the commit would lose again.
CHUNK_PAUSE_S = 0.003

Pending = tuple[list[SeriesRow], list[TraceRow], list[ConnectionRow]]


class Telemetry:
    """Owns the recorder, its flusher task and the read side (queries, metrics).

    ``db`` is the node's database (queries read it); ``writer``, another engine on
    the same database, is where the flusher and retention write.  None only when
    telemetry is off (then nothing is ever written).
    """

    def __init__(
        self, db: Database, settings: Settings, clock: Clock, writer: Database | None = None
    ) -> None:
        self.db = db
        self.writer = writer
        self.settings = settings.telemetry
        self.clock = clock
        self.store = TelemetryStore()
        s = settings.server
        if self.settings.enabled and writer is None:
            raise ValueError("telemetry is on but has no writer engine (see open_telemetry)")
        self.recorder: Recorder | None = (
            Recorder(self.settings, s.node_id, s.region, clock) if self.settings.enabled else None
        )
        self.quality = QualityService(db, self.store)
        self.metrics = MetricsExporter(self.recorder)
        self._task: asyncio.Task[None] | None = None
        # Retention and roll-ups run on one node of a cluster (each node flushes its own).
        self.maintains = settings.cluster.leader
        self._lock = asyncio.Lock()  # one flush at a time (task, API, close)
        self._flushes: set[asyncio.Task[int]] = set()  # running flushes (see flush)
        # Converting aggregates to rows: off the event loop, one at a time.
        self._convert = ThreadPoolExecutor(1, thread_name_prefix="telemetry-convert")
        # Rows not written yet (a failed flush leaves them for the next), bounded
        # like the recorder's own buffers, the oldest dropped first.
        self._pending: Pending = ([], [], [])

    async def start(self) -> None:
        if self.recorder is not None:
            self._task = asyncio.create_task(self._run(), name="telemetry")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # A flush whose caller was cancelled (the task above, an HTTP request) is
        # still finishing; the last flush below queues behind it on the lock.
        await asyncio.gather(*self._flushes, return_exceptions=True)
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await self.flush()
        self._convert.shutdown(wait=True)
        if self.writer is not None:
            await self.writer.aclose()

    async def _run(self) -> None:
        rec = self.recorder
        assert rec is not None
        mono = self.clock.monotonic
        next_flush = mono() + self.settings.flush_interval_s
        next_maintain = mono() + 5.0
        while True:
            await asyncio.sleep(min(1.0, self.settings.flush_interval_s))
            rec.tick()
            now = mono()
            if now >= next_flush:
                next_flush = now + self.settings.flush_interval_s
                try:
                    await self.flush()
                except Exception:
                    log.exception("telemetry flush failed; rows kept for the next one")
            if self.maintains and now >= next_maintain:
                next_maintain = now + MAINTAIN_EVERY_S
                try:
                    await self.maintain()
                except Exception:
                    log.exception("telemetry retention failed")

    async def flush(self) -> int:
        """Write everything recorded so far; return the rows written.

        Raises the database's error when a write fails; the rows not written are
        kept for the next flush.  A flush, once started, runs to its end even if the
        caller is cancelled (a transaction may commit after the caller stopped
        waiting; only the flush itself knows which rows are then written).
        """
        if self.recorder is None or self.writer is None:
            return 0
        task = asyncio.create_task(self._flush(), name="telemetry-flush")
        self._flushes.add(task)
        task.add_done_callback(self._flush_done)
        return await asyncio.shield(task)

    def _flush_done(self, task: asyncio.Task[int]) -> None:
        self._flushes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: counted in stats, raised to a waiting caller

    async def _flush(self) -> int:
        rec = self.recorder
        writer = self.writer
        assert rec is not None and writer is not None
        async with self._lock:
            rec.tick()
            batch = rec.take()
            loop = asyncio.get_running_loop()
            try:
                self._pending, dropped = await loop.run_in_executor(
                    self._convert, _prepare, batch, self._pending
                )
            finally:
                rec.settle(batch)
            rec.stats["rows_dropped"] += dropped
            rows, traces, history = self._pending
            if not (rows or traces or history):
                return 0
            written = 0
            try:
                while rows or traces or history:
                    if written:
                        await asyncio.sleep(CHUNK_PAUSE_S)
                    chunk = _take_chunk(rows, traces, history, CHUNK_ROWS)
                    await writer.write(functools.partial(self._write_tx, chunk=chunk))
                    # Committed: forget the chunk (it is at the head of each list).
                    del rows[: len(chunk[0])]
                    del traces[: len(chunk[1])]
                    del history[: len(chunk[2])]
                    written += sum(len(part) for part in chunk)
            except Exception:
                rec.stats["flush_errors"] += 1
                raise
            rec.stats["flushes"] += 1
            return written

    def _write_tx(self, tx: Tx, *, chunk: Pending) -> None:
        """(Telemetry writer thread.)  One chunk in one transaction."""
        rows, traces, history = chunk
        if rows:
            self.store.merge_series_tx(tx, rows)
        if traces:
            self.store.insert_traces_tx(tx, traces)
        if history:
            self.store.insert_connections_tx(tx, history)

    async def maintain(self) -> tuple[int, int]:
        """Downsample old minute rows into hours and prune; return (rolled, pruned)."""
        now_ms = int(self.clock.time() * 1000)
        minutes_before = now_ms - self.settings.retention_minutes_days * DAY_MS
        hours_before = now_ms - self.settings.retention_hours_days * DAY_MS
        writer = self.writer
        if writer is None:
            return 0, 0
        rolled = 0
        while True:
            n = await writer.write(lambda tx: self.store.downsample_tx(tx, minutes_before))
            rolled += n
            if n < self.store.DOWNSAMPLE_BATCH:
                break
        pruned = await writer.write(
            lambda tx: self.store.prune_tx(tx, hours_before, minutes_before)
        )
        return rolled, pruned


def _prepare(batch: Drained, pending: Pending) -> tuple[Pending, int]:
    """(Convert thread.)  Rows of ``batch`` after the rows still pending, bounded;
    and how many were dropped to keep the bound (the oldest)."""
    rows = pending[0] + batch.convert()
    traces = pending[1] + batch.traces
    history = pending[2] + batch.history
    over = sum(max(0, len(x) - MAX_PENDING_ROWS) for x in (rows, traces, history))
    kept = (rows[-MAX_PENDING_ROWS:], traces[-MAX_PENDING_ROWS:], history[-MAX_PENDING_ROWS:])
    return kept, over


def _take_chunk(
    rows: list[SeriesRow], traces: list[TraceRow], history: list[ConnectionRow], limit: int
) -> Pending:
    """The first ``limit`` rows, series first, then traces, then history (copies)."""
    a = rows[:limit]
    b = traces[: limit - len(a)]
    c = history[: limit - len(a) - len(b)]
    return a, b, c


def open_telemetry(db: Database, settings: Settings, clock: Clock) -> Telemetry:
    """Bring the telemetry schema up to date and build the component.

    With telemetry on, this opens the telemetry writer: a second engine on
    ``settings.storage_url`` (its own connection and thread, ``sync = "normal"``).
    """
    db.migrate("telemetry", telemetry_migrations(db.dialect))
    writer = None
    if settings.telemetry.enabled:
        writer = open_database(settings.storage_url, sync="normal", readers=1)
    return Telemetry(db, settings, clock, writer)

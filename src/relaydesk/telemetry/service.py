"""The telemetry component of a node: recorder, flusher task, retention, queries, metrics.

Built by the composition root (``server/app.py``) with ``open_telemetry``; the
gateway and hub receive ``telemetry.recorder`` (None when ``[telemetry] enabled
= false``, so every hook is one ``is None`` test).  One task owns all periodic
work: ``Recorder.tick`` every second, a flush every ``flush_interval_s`` and
retention/downsampling every ``MAINTAIN_EVERY_S``; ``aclose`` cancels it and
writes a last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from relaydesk.clock import Clock
from relaydesk.config import Settings
from relaydesk.storage import Database, Tx
from relaydesk.storage.telemetry import (
    ConnectionRow,
    SeriesRow,
    TelemetryStore,
    TraceRow,
    telemetry_migrations,
)
from relaydesk.telemetry.metrics import MetricsExporter
from relaydesk.telemetry.query import QualityService
from relaydesk.telemetry.recorder import MAX_PENDING_ROWS, Recorder

log = logging.getLogger("relaydesk.telemetry")

MAINTAIN_EVERY_S = 600.0
DAY_MS = 86_400_000


class Telemetry:
    """Owns the recorder, its flusher task and the read side (queries, metrics)."""

    def __init__(self, db: Database, settings: Settings, clock: Clock) -> None:
        self.db = db
        self.settings = settings.telemetry
        self.clock = clock
        self.store = TelemetryStore()
        s = settings.server
        self.recorder: Recorder | None = (
            Recorder(self.settings, s.node_id, s.region, clock) if self.settings.enabled else None
        )
        self.quality = QualityService(db, self.store)
        self.metrics = MetricsExporter(self.recorder)
        self._task: asyncio.Task[None] | None = None
        # Retention and roll-ups run on one node of a cluster (each node flushes its own).
        self.maintains = settings.cluster.leader
        self._lock = asyncio.Lock()  # one flush at a time (task, API, close)
        # Rows whose write failed, retried with the next flush; bounded like the
        # recorder's own buffers, the oldest dropped first.
        self._retry: tuple[list[SeriesRow], list[TraceRow], list[ConnectionRow]] = ([], [], [])

    async def start(self) -> None:
        if self.recorder is not None:
            self._task = asyncio.create_task(self._run(), name="telemetry")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await self.flush()

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
        """Write everything recorded so far in one transaction; return rows written."""
        rec = self.recorder
        if rec is None:
            return 0
        async with self._lock:
            rec.tick()
            rows, traces, history = rec.drain()
            r_rows, r_traces, r_history = self._retry
            rows, traces, history = r_rows + rows, r_traces + traces, r_history + history
            self._retry = ([], [], [])
            if not (rows or traces or history):
                return 0

            def write(tx: Tx) -> None:
                self.store.merge_series_tx(tx, rows)
                self.store.insert_traces_tx(tx, traces)
                self.store.insert_connections_tx(tx, history)

            try:
                await self.db.write(write)
            except Exception:
                rec.stats["flush_errors"] += 1
                self._retry = (
                    rows[-MAX_PENDING_ROWS:],
                    traces[-MAX_PENDING_ROWS:],
                    history[-MAX_PENDING_ROWS:],
                )
                rec.stats["rows_dropped"] += sum(
                    max(0, len(x) - MAX_PENDING_ROWS) for x in (rows, traces, history)
                )
                raise
            rec.stats["flushes"] += 1
            return len(rows) + len(traces) + len(history)

    async def maintain(self) -> tuple[int, int]:
        """Downsample old minute rows into hours and prune; return (rolled, pruned)."""
        now_ms = int(self.clock.time() * 1000)
        minutes_before = now_ms - self.settings.retention_minutes_days * DAY_MS
        hours_before = now_ms - self.settings.retention_hours_days * DAY_MS
        rolled = 0
        while True:
            n = await self.db.write(lambda tx: self.store.downsample_tx(tx, minutes_before))
            rolled += n
            if n < self.store.DOWNSAMPLE_BATCH:
                break
        pruned = await self.db.write(
            lambda tx: self.store.prune_tx(tx, hours_before, minutes_before)
        )
        return rolled, pruned


def open_telemetry(db: Database, settings: Settings, clock: Clock) -> Telemetry:
    """Bring the telemetry schema up to date and build the component."""
    db.migrate("telemetry", telemetry_migrations(db.dialect))
    return Telemetry(db, settings, clock)

"""Telemetry never stalls delivery: the flush does no database or encoding work on the
event loop, nor on the messaging engine's writer thread (issue 20; docs/telemetry.md §cost).

Real engines (SQLite and PostgreSQL), the real component from ``open_telemetry``; the
store and ``Agg.to_row`` are only wrapped to note the thread they run on.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pg import ENGINES, pg_schema
from relaydesk.clock import FakeClock
from relaydesk.config import Settings, StorageSettings, TelemetrySettings
from relaydesk.storage import Database, Tx, open_database
from relaydesk.storage.telemetry import ConnectionRow, SeriesRow, TelemetryStore, TraceRow
from relaydesk.telemetry import Agg, Recorder, Telemetry, open_telemetry
from relaydesk.telemetry.recorder import MAX_WINDOW

NOW_S = 1_700_000_000.0


class ThreadNotingStore(TelemetryStore):
    """The real store; each write method also notes the thread it ran on."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def merge_series_tx(self, tx: Tx, rows: Sequence[SeriesRow]) -> None:  # type: ignore[override]
        self.threads.append(threading.current_thread())
        super().merge_series_tx(tx, rows)

    def insert_traces_tx(self, tx: Tx, rows: Sequence[TraceRow]) -> None:
        self.threads.append(threading.current_thread())
        super().insert_traces_tx(tx, rows)

    def insert_connections_tx(self, tx: Tx, rows: Sequence[ConnectionRow]) -> None:
        self.threads.append(threading.current_thread())
        super().insert_connections_tx(tx, rows)


@pytest.fixture(params=ENGINES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'node.db'}"
        return
    with pg_schema() as schema_url:
        yield schema_url


def _settings(url: str) -> Settings:
    return Settings(
        storage=StorageSettings(url=url),
        telemetry=TelemetrySettings(trace_sample_every=1, ack_deadline_ms=1000),
    )


def _traffic(rec: Recorder, clock: FakeClock, publishes: int) -> None:
    """Publishes fanned out to two devices, written, acknowledged; one disconnect."""
    sender = rec.attach("app", "s", "ds", region="eu", net="", sdk="", resumed=False)
    peers = [
        rec.attach("app", f"u{i}", f"d{i}", region=r, net="", sdk="", resumed=False)
        for i, r in enumerate(("eu", "us"))
    ]
    for pos in range(1, publishes + 1):
        recv = clock.monotonic()
        clock.advance(0.001)
        rec.commit_window(clock.monotonic(), clock.monotonic() + 0.001)
        rec.published(sender, recv, pos=pos, conv="ch:room", routed=True)
        trace = rec.trace_for("app", pos)
        for tel in peers:
            tel.first_gen = rec.fan_gen
            if trace is not None:
                tel.trace_offered(trace)
        rec.batch_fanned(clock.monotonic())
        for tel in peers:
            tel.written_live(pos, 1)
            tel.acked(pos)
    rec.detach(peers[1], "heartbeat_timeout")


def test_flush_runs_no_database_or_row_work_on_the_loop_or_the_commit_writer(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(start=NOW_S)
    settings = _settings(url)
    db = open_database(settings.storage_url)
    converted_on: list[threading.Thread] = []
    to_row = Agg.to_row

    def noting_to_row(self: Agg, *args: Any) -> SeriesRow:
        converted_on.append(threading.current_thread())
        return to_row(self, *args)

    monkeypatch.setattr(Agg, "to_row", noting_to_row)

    async def main() -> tuple[threading.Thread, int, Telemetry]:
        telemetry = open_telemetry(db, settings, clock)
        telemetry.store = store = ThreadNotingStore()
        rec = telemetry.recorder
        assert rec is not None
        _traffic(rec, clock, publishes=300)
        written = await telemetry.flush()
        await telemetry.aclose()
        assert store.threads
        return threading.current_thread(), written, telemetry

    try:
        loop_thread, written, telemetry = asyncio.run(main())
        commit_writer = db.write_sync(lambda tx: threading.current_thread())
        store = telemetry.store
        assert isinstance(store, ThreadNotingStore)
        # 300 publishes x 2 recipients traced, 1 history row, series rows: several
        # chunks, every one of them on the telemetry writer's thread.
        assert written > 600 and len(store.threads) >= 3
        assert {t.ident for t in store.threads}.isdisjoint({loop_thread.ident, commit_writer.ident})
        assert len({t.ident for t in store.threads}) == 1  # one writer thread, in order
        assert converted_on and loop_thread.ident not in {t.ident for t in converted_on}
        # And the data is there, complete, for the readers of the node's database.
        rows = db.read_sync(lambda tx: store.series_tx(tx, "app", 0, 2**62))
        assert sum(r.count("sent") for r in rows) == 300
        assert sum(r.count("delivered") for r in rows) == 600
        traces = db.read_sync(lambda tx: store.traces_tx(tx, "app", 0, 2**62, 10_000))
        assert len(traces) == 600
        history = db.read_sync(lambda tx: store.connections_tx(tx, "app", 0, 2**62, 10))
        assert [h.reason for h in history] == ["heartbeat_timeout"]
    finally:
        db.close_sync()


def test_a_failed_flush_keeps_the_rows_and_the_next_one_writes_them(url: str) -> None:
    clock = FakeClock(start=NOW_S)
    settings = _settings(url)
    db = open_database(settings.storage_url)

    async def main() -> None:
        telemetry = open_telemetry(db, settings, clock)
        rec = telemetry.recorder
        assert rec is not None
        _traffic(rec, clock, publishes=50)
        # A real failure: the table the trace rows go to is gone.
        await db.write(lambda tx: tx.execute("ALTER TABLE telemetry_traces RENAME TO t_away"))
        with pytest.raises(Exception):  # noqa: B017 - the engine's own error type
            await telemetry.flush()
        assert rec.stats["flush_errors"] == 1
        await db.write(lambda tx: tx.execute("ALTER TABLE t_away RENAME TO telemetry_traces"))
        await telemetry.flush()
        await telemetry.aclose()
        store = telemetry.store
        rows = await db.read(lambda tx: store.series_tx(tx, "app", 0, 2**62))
        assert sum(r.count("sent") for r in rows) == 50  # written once, not twice
        traces = await db.read(lambda tx: store.traces_tx(tx, "app", 0, 2**62, 10_000))
        assert len(traces) == 100
        assert rec.current().sent == 50  # Prometheus totals: counted once

    try:
        asyncio.run(main())
    finally:
        db.close_sync()


def _recorder() -> tuple[Recorder, FakeClock]:
    clock = FakeClock(start=NOW_S)
    settings = TelemetrySettings(trace_sample_every=0, ack_deadline_ms=1000)
    return Recorder(settings, "n1", "eu-west", clock), clock


def test_written_batches_waiting_for_their_ack_allocate_no_gc_tracked_objects() -> None:
    # A tuple per written batch, alive for an ack interval, drove the cyclic GC into a
    # full collection every few seconds: the 40-50 ms delivery stalls of issue 20.
    rec, clock = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for pos in range(1, 4001):
            tel.written_live(pos, 2)
            clock.advance(0.0001)
        after = len(gc.get_objects())
    finally:
        gc.enable()
    assert after - before < 20, after - before
    assert tel.pending() == 4000
    tel.acked(2500)
    assert tel.pending() == 1500
    tel.acked(4000)
    rows, _, _ = rec.drain()
    assert rows[0].count("delivered") == 8000 and rows[0].hists["client_ack"].n == 8000


def test_tick_looks_only_at_connections_waiting_for_acks() -> None:
    rec, clock = _recorder()
    idle = [
        rec.attach("app", f"u{i}", "d", region="eu", net="", sdk="", resumed=False)
        for i in range(1000)
    ]
    busy = idle[0]
    assert not rec.unacked
    busy.written_live(1, 1)
    busy.written_live(2, 3)
    assert rec.unacked == {busy}
    clock.advance(2.0)  # past the 1 s deadline
    rec.tick()
    assert not rec.unacked and busy.pending() == 0
    rows, _, _ = rec.drain()
    assert rows[0].count("undelivered") == 4
    busy.written_live(3, 1)
    rec.detach(busy, "client_close")
    assert not rec.unacked


def test_window_overflow_and_compaction_keep_order() -> None:
    rec, _ = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    for pos in range(1, MAX_WINDOW + 11):
        tel.written_live(pos, 1)
    assert tel.pending() == MAX_WINDOW and rec.stats["ack_window_overflow"] == 10
    for pos in range(20, MAX_WINDOW + 11, 7):  # partial acks compact the array
        tel.acked(pos)
    tel.acked(MAX_WINDOW + 10)
    assert tel.pending() == 0 and len(tel.window) == 0
    rows, _, _ = rec.drain()
    assert rows[0].count("delivered") == MAX_WINDOW
    assert rows[0].count("undelivered") == 10


def test_drained_minutes_count_in_current_until_settled() -> None:
    rec, clock = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    rec.commit_window(clock.monotonic(), clock.monotonic())
    rec.published(tel, clock.monotonic(), pos=1, conv="ch:x", routed=True)
    rec.batch_fanned(clock.monotonic())
    batch = rec.take()
    assert rec.current().sent == 1  # taken, not yet converted: still counted once
    batch.convert()
    rec.settle(batch)
    assert rec.current().sent == 1 and rec.totals.sent == 1
    rec.settle(batch)  # idempotent
    assert rec.current().sent == 1


def test_a_flush_between_publish_and_fanout_loses_no_stage(tmp_path: Path) -> None:
    # In a cluster the hub writer awaits between ``published`` and ``batch_fanned``;
    # a flush in between must not leave the fan-out stage in a taken aggregate.
    rec, clock = _recorder()
    tel = rec.attach("app", "u", "d", region="eu", net="", sdk="", resumed=False)
    rec.commit_window(clock.monotonic(), clock.monotonic())
    rec.published(tel, clock.monotonic(), pos=1, conv="ch:x", routed=True)
    first, _, _ = rec.drain()
    rec.batch_fanned(clock.monotonic())
    second, _, _ = rec.drain()
    assert first[0].count("sent") == 1
    assert second[0].hists["fanout"].n == 1 and second[0].hists["server"].n == 1


def test_telemetry_on_needs_its_writer(tmp_path: Path) -> None:
    db: Database = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(ValueError, match="writer"):
            Telemetry(db, Settings(), FakeClock(start=NOW_S))
        off = Telemetry(db, Settings(telemetry=TelemetrySettings(enabled=False)), FakeClock())
        assert off.recorder is None and asyncio.run(off.flush()) == 0
    finally:
        db.close_sync()


def test_a_flush_whose_caller_is_cancelled_still_writes_every_row_once(url: str) -> None:
    clock = FakeClock(start=NOW_S)
    settings = _settings(url)
    db = open_database(settings.storage_url)

    async def main() -> None:
        telemetry = open_telemetry(db, settings, clock)
        rec = telemetry.recorder
        assert rec is not None
        _traffic(rec, clock, publishes=400)  # 800 trace rows: several transactions
        caller = asyncio.create_task(telemetry.flush())
        for _ in range(3):
            await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await telemetry.flush()  # waits for the first (lock); then writes what is new
        await telemetry.aclose()
        store = telemetry.store
        rows = await db.read(lambda tx: store.series_tx(tx, "app", 0, 2**62))
        assert sum(r.count("sent") for r in rows) == 400
        traces = await db.read(lambda tx: store.traces_tx(tx, "app", 0, 2**62, 10_000))
        assert len(traces) == 800

    try:
        asyncio.run(main())
    finally:
        db.close_sync()

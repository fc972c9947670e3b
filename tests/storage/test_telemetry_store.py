"""Telemetry retention SQL: minute rows roll into hour rows losslessly; pruning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import ENGINES, open_test_database
from relaydesk.storage import Database
from relaydesk.storage.telemetry import (
    COUNTERS,
    ConnectionRow,
    HistData,
    SeriesRow,
    TelemetryStore,
    TraceRow,
    telemetry_migrations,
)

H = 3_600_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % H  # an hour boundary


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as database:
        database.migrate("telemetry", telemetry_migrations(database.dialect))
        yield database


def row(start_ms: int, sent: int, active: int, rtt_bucket: int, node: str = "n1") -> SeriesRow:
    counts = [0] * len(COUNTERS)
    counts[COUNTERS.index("sent")] = sent
    counts[COUNTERS.index("active_max")] = active
    hists = {"rtt": HistData(sum=10.0 * sent, n=sent, buckets={rtt_bucket: sent})}
    return SeriesRow("app", "eu", node, "eu", 60, start_ms, counts, hists)


def all_rows(db: Database, store: TelemetryStore) -> list[SeriesRow]:
    return db.read_sync(lambda tx: store.series_tx(tx, "app", 0, 2**62))


def test_downsample_rolls_minutes_into_hours_without_losing_counts(db: Database) -> None:
    store = TelemetryStore()
    minutes = [row(T0 + 60_000 * i, sent=i + 1, active=10 * i, rtt_bucket=i % 2) for i in range(3)]
    minutes += [row(T0 + H + 60_000 * i, sent=5, active=7, rtt_bucket=3) for i in range(2)]
    minutes.append(row(T0, sent=4, active=99, rtt_bucket=0, node="n2"))
    db.write_sync(lambda tx: store.merge_series_tx(tx, minutes))
    total_sent = sum(r.count("sent") for r in all_rows(db, store))

    rolled = db.write_sync(lambda tx: store.downsample_tx(tx, T0 + H))
    assert rolled == 4  # the first hour's minute rows, both nodes
    rows = all_rows(db, store)
    hours = {(r.node, r.start_ms): r for r in rows if r.step_s == 3600}
    assert set(hours) == {("n1", T0), ("n2", T0)}
    h = hours[("n1", T0)]
    assert h.count("sent") == 1 + 2 + 3
    assert h.count("active_max") == 20  # a maximum, not a sum
    assert h.hists["rtt"].n == 6 and h.hists["rtt"].buckets == {0: 1 + 3, 1: 2}
    assert [r.start_ms for r in rows if r.step_s == 60] == [T0 + H, T0 + H + 60_000]
    assert sum(r.count("sent") for r in rows) == total_sent
    assert db.write_sync(lambda tx: store.downsample_tx(tx, T0 + H)) == 0


def test_downsample_in_bounded_passes_merges_into_existing_hour_rows(db: Database) -> None:
    store = TelemetryStore()
    store.DOWNSAMPLE_BATCH = 2
    minutes = [row(T0 + 60_000 * i, sent=1, active=i, rtt_bucket=0) for i in range(5)]
    db.write_sync(lambda tx: store.merge_series_tx(tx, minutes))
    passes = []
    while (n := db.write_sync(lambda tx: store.downsample_tx(tx, T0 + H))) > 0:
        passes.append(n)
    assert passes == [2, 2, 1]
    (hour,) = all_rows(db, store)
    assert (hour.step_s, hour.count("sent"), hour.count("active_max")) == (3600, 5, 4)
    assert hour.hists["rtt"].n == 5


def test_prune_removes_only_what_is_past_retention(db: Database) -> None:
    store = TelemetryStore()
    db.write_sync(lambda tx: store.merge_series_tx(tx, [row(T0, 1, 1, 0), row(T0 + H, 1, 1, 0)]))
    db.write_sync(lambda tx: store.downsample_tx(tx, T0 + 2 * H))
    removed = db.write_sync(lambda tx: store.prune_tx(tx, T0 + H, 0))
    assert removed == 1
    assert [r.start_ms for r in all_rows(db, store)] == [T0 + H]


def test_merge_adds_repeated_keys_and_stored_rows_across_lookup_batches(db: Database) -> None:
    store = TelemetryStore()
    store.MERGE_LOOKUP = 3  # several lookup statements in one merge
    db.write_sync(lambda tx: store.merge_series_tx(tx, [row(T0, 2, 5, 1), row(T0 + H, 1, 1, 0)]))
    again = [row(T0 + 60_000 * i, sent=1, active=i, rtt_bucket=1) for i in range(7)]
    again += [row(T0, sent=3, active=9, rtt_bucket=2), row(T0 + H, sent=4, active=0, rtt_bucket=0)]
    db.write_sync(lambda tx: store.merge_series_tx(tx, again))
    rows = {r.start_ms: r for r in all_rows(db, store)}
    assert len(rows) == 8
    first = rows[T0]  # stored 2, then 1 and 3 in one call
    assert (first.count("sent"), first.count("active_max")) == (6, 9)
    assert first.hists["rtt"].buckets == {1: 2 + 1, 2: 3}
    assert rows[T0 + H].count("sent") == 5 and rows[T0 + H].count("active_max") == 1
    assert sum(r.count("sent") for r in rows.values()) == 2 + 1 + 7 + 3 + 4


def test_trace_and_history_rows_round_trip_in_multi_row_batches(db: Database) -> None:
    store = TelemetryStore()
    traces = [
        TraceRow(
            "app",
            "eu",
            "n1",
            pos,
            "ch:x",
            "eu",
            "us",
            f"d{pos}",
            T0 + pos,
            "acked",
            0.5,
            1.25,
            0.125,
            None if pos % 3 else 2.0,
            3.5,
            None,
            1.0 if pos % 2 else None,
            2,
        )
        for pos in range(1, 1203)  # more than one multi-row INSERT on PostgreSQL
    ]
    history = [
        ConnectionRow(
            "app",
            "eu",
            "n1",
            "us",
            "wifi",
            "py/1",
            f"u{i}",
            "d",
            T0,
            T0 + i,
            "client_close",
            bool(i % 2),
            i,
            None if i % 2 else 12.5,
            0.0,
            i,
            0,
        )
        for i in range(3)
    ]
    db.write_sync(lambda tx: store.insert_traces_tx(tx, traces))
    db.write_sync(lambda tx: store.insert_connections_tx(tx, history))
    assert db.read_sync(lambda tx: store.traces_tx(tx, "app", 0, 2**62, 5000)) == traces
    assert db.read_sync(lambda tx: store.connections_tx(tx, "app", 0, 2**62, 10)) == history

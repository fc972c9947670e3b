"""A diagnosis reads only the app it is asked about: another app's faults on the same node
and in the same window never reach its snapshot or its findings (no cross-app
aggregation), on both storage engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import ENGINES, open_test_database
from relaydesk.config import Settings
from relaydesk.desk.diagnosis import diagnose
from relaydesk.desk.diagnosis.adapter import TelemetrySnapshots, run_settings
from relaydesk.storage.engine import Database
from relaydesk.storage.telemetry import (
    COUNTERS,
    ConnectionRow,
    SeriesRow,
    TelemetryStore,
    TraceRow,
    telemetry_migrations,
)
from relaydesk.telemetry.histogram import Histogram

T0 = 1_709_546_400_000


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as database:
        database.migrate("telemetry", telemetry_migrations(database.dialect))
        yield database


def _rows(app: str, commit_ms: float, device: str, outcome: str) -> tuple[list, list, list]:  # type: ignore[type-arg]
    commit = Histogram.latency()
    commit.observe(commit_ms, 300)
    counts = [0] * len(COUNTERS)
    counts[COUNTERS.index("sent")] = 300
    series = [
        SeriesRow(app, "eu-west", "edge-1", "eu-west", 60, T0 + i * 60_000, list(counts),
                  {"commit": commit.to_data()})
        for i in range(5)
    ]  # fmt: skip
    traces = [
        TraceRow(app, "eu-west", "edge-1", pos, "ch:room", "eu-west", "eu-west", d, T0 + pos,
                 outcome if d == device else "acked", 1.0, commit_ms, 0.1, 0.5, 30.0, 40.0,
                 None, None)
        for pos in range(10, 20)
        for d in (device, f"{app}-other")
    ]  # fmt: skip
    conns = [
        ConnectionRow(app, "eu-west", "edge-1", "eu-west", "", "py/1", "u", device,
                      T0 + i * 3000, T0 + i * 3000 + 2000, "transport_error", False, 0, None,
                      None, 0, 5)
        for i in range(8)
    ]  # fmt: skip
    return series, traces, conns


def test_a_diagnosis_never_reads_another_apps_telemetry(db: Database) -> None:
    store = TelemetryStore()
    healthy = _rows("acme", 3.0, "acme-phone", "acked")
    broken = _rows("other-co", 900.0, "victim-phone", "unacked")

    def write(tx: object) -> None:
        for series, traces, conns in (healthy, broken):
            store.merge_series_tx(tx, series)  # type: ignore[arg-type]
            store.insert_traces_tx(tx, traces)  # type: ignore[arg-type]
            store.insert_connections_tx(tx, conns)  # type: ignore[arg-type]

    db.write_sync(write)  # type: ignore[arg-type]
    snaps = TelemetrySnapshots(store, run_settings(Settings()))
    mine = db.read_sync(lambda tx: snaps.snapshot_tx(tx, "acme", T0, T0 + 3_600_000))
    theirs = db.read_sync(lambda tx: snaps.snapshot_tx(tx, "other-co", T0, T0 + 3_600_000))
    assert {t.recipient_device for t in mine.traces} == {"acme-phone", "acme-other"}
    assert {c.device for c in mine.connections} == {"acme-phone"}
    assert len(mine.minutes) == 5 and len(theirs.minutes) == 5
    d = diagnose(mine)
    text = " ".join([d.summary] + [f.title for f in d.findings] + [r.reason for r in d.rejected])
    assert "victim-phone" not in text and "other-co" not in text
    assert all(f.rule != "slow_storage" for f in d.findings)  # their 900 ms commits
    assert any(f.rule == "slow_storage" for f in diagnose(theirs).findings)

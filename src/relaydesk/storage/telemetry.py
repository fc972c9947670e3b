"""Telemetry store: per-minute/per-hour quality rows, sampled traces, connection history.

Theory of operation (docs/telemetry.md §storage)
------------------------------------------------
``telemetry_series`` holds one row per (app, node region, node, client region,
step, start): counters as columns (so SQL can sum them) and the stage
histograms as one MessagePack blob of sparse bucket counts.  Every histogram
of a stage shares one fixed bucket layout (``relaydesk.telemetry.histogram``),
so merging two rows is adding counts bucket by bucket: the flusher writes deltas
and ``merge_series_tx`` adds them to whatever row is already there, and
downsampling merges sixty minute rows into one hour row the same way.  Nothing
here knows what a stage means; it only adds numbers.

Counters are summed when rows merge, except ``active_max`` (a gauge), which
keeps the maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from relaydesk.storage.engine import Tx

COUNTERS: tuple[str, ...] = (
    "sent",
    "send_errors",
    "delivered",
    "late",
    "undelivered",
    "connects",
    "resumes",
    "disc_client_close",
    "disc_heartbeat_timeout",
    "disc_server_shutdown",
    "disc_protocol_error",
    "disc_auth_expiry",
    "disc_transport_error",
    "probes",
    "probes_rejected",
    "probes_clamped",
    "traces",
    "active_max",
)
_MAX_MERGED = frozenset({"active_max"})
_COUNTER_SQL = ", ".join(COUNTERS)
_KEY = ("app", "node_region", "node", "client_region", "step_s", "start_ms")

_SCHEMA_V1 = (
    "CREATE TABLE telemetry_series ("
    " app TEXT NOT NULL, node_region TEXT NOT NULL, node TEXT NOT NULL,"
    " client_region TEXT NOT NULL, step_s INTEGER NOT NULL, start_ms BIGINT NOT NULL, "
    + ", ".join(f"{c} BIGINT NOT NULL DEFAULT 0" for c in COUNTERS)
    + ", hists {blob} NOT NULL,"
    " PRIMARY KEY (app, step_s, start_ms, node_region, node, client_region));"
    " CREATE INDEX telemetry_series_by_time ON telemetry_series (step_s, start_ms);"
    " CREATE TABLE telemetry_traces ("
    " app TEXT NOT NULL, node_region TEXT NOT NULL, node TEXT NOT NULL,"
    " pos BIGINT NOT NULL, conv TEXT NOT NULL, sender_region TEXT NOT NULL,"
    " recipient_region TEXT NOT NULL, recipient_device TEXT NOT NULL,"
    " received_ms BIGINT NOT NULL, outcome TEXT NOT NULL,"
    " commit_wait_ms {real} NOT NULL, commit_ms {real} NOT NULL, fanout_ms {real} NOT NULL,"
    " queue_wait_ms {real}, client_ack_ms {real}, end_to_end_ms {real},"
    " c2s_est_ms {real}, s2c_est_ms {real});"
    " CREATE INDEX telemetry_traces_by_time ON telemetry_traces (app, received_ms);"
    " CREATE TABLE telemetry_connections ("
    " app TEXT NOT NULL, node_region TEXT NOT NULL, node TEXT NOT NULL,"
    " client_region TEXT NOT NULL, net TEXT NOT NULL, sdk TEXT NOT NULL,"
    " user_id TEXT NOT NULL, device TEXT NOT NULL, connected_ms BIGINT NOT NULL,"
    " closed_ms BIGINT NOT NULL, reason TEXT NOT NULL, resumed INTEGER NOT NULL,"
    " probes BIGINT NOT NULL, rtt_ms {real}, loss {real},"
    " delivered BIGINT NOT NULL, undelivered BIGINT NOT NULL);"
    " CREATE INDEX telemetry_connections_by_time ON telemetry_connections (app, closed_ms)"
)
_TYPES = {
    "sqlite": {"blob": "BLOB", "real": "REAL"},
    # REAL is 4 bytes on PostgreSQL; SQLite's REAL is a double.
    "postgres": {"blob": "BYTEA", "real": "DOUBLE PRECISION"},
}


def telemetry_migrations(dialect: str = "sqlite") -> list[str]:
    """The telemetry schema steps for ``dialect`` (``sqlite`` or ``postgres``)."""
    types = _TYPES[dialect]
    return [_SCHEMA_V1.replace("{blob}", types["blob"]).replace("{real}", types["real"])]


#: Schema steps for SQLite (``db.migrate("telemetry", telemetry_migrations(db.dialect))``).
TELEMETRY_MIGRATIONS = telemetry_migrations("sqlite")


class HistData(msgspec.Struct, array_like=True):
    """One stage histogram on disk: sum, count and sparse bucket counts."""

    sum: float
    n: int
    buckets: dict[int, int]

    def merge(self, other: HistData) -> None:
        self.sum += other.sum
        self.n += other.n
        b = self.buckets
        for i, c in other.buckets.items():
            b[i] = b.get(i, 0) + c


def merge_hists(into: dict[str, HistData], other: dict[str, HistData]) -> None:
    """Add every stage histogram of ``other`` into ``into`` (copying new stages)."""
    for stage, h in other.items():
        mine = into.get(stage)
        if mine is None:
            into[stage] = HistData(h.sum, h.n, dict(h.buckets))
        else:
            mine.merge(h)


_HISTS_ENC = msgspec.msgpack.Encoder()
_HISTS_DEC = msgspec.msgpack.Decoder(dict[str, HistData])


def encode_hists(hists: dict[str, HistData]) -> bytes:
    return _HISTS_ENC.encode(hists)


def decode_hists(blob: bytes) -> dict[str, HistData]:
    return _HISTS_DEC.decode(blob) if blob else {}


@dataclass(slots=True)
class SeriesRow:
    """One aggregate row; ``counts`` follows ``COUNTERS``."""

    app: str
    node_region: str
    node: str
    client_region: str
    step_s: int
    start_ms: int
    counts: list[int]
    hists: dict[str, HistData] = field(default_factory=dict)

    def merge(self, other: SeriesRow) -> None:
        """Add ``other`` (same key) into this row."""
        for i, name in enumerate(COUNTERS):
            if name in _MAX_MERGED:
                self.counts[i] = max(self.counts[i], other.counts[i])
            else:
                self.counts[i] += other.counts[i]
        merge_hists(self.hists, other.hists)

    def count(self, name: str) -> int:
        return self.counts[COUNTERS.index(name)]


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One sampled message as seen by one recipient connection (or none)."""

    app: str
    node_region: str
    node: str
    pos: int
    conv: str
    sender_region: str
    recipient_region: str
    recipient_device: str
    received_ms: int
    outcome: str  # acked | late | unacked | closed | resync | no_recipient
    commit_wait_ms: float
    commit_ms: float
    fanout_ms: float
    queue_wait_ms: float | None
    client_ack_ms: float | None
    end_to_end_ms: float | None
    c2s_est_ms: float | None
    s2c_est_ms: float | None


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    """The history of one closed, logged-in connection."""

    app: str
    node_region: str
    node: str
    client_region: str
    net: str
    sdk: str
    user_id: str
    device: str
    connected_ms: int
    closed_ms: int
    reason: str
    resumed: bool
    probes: int
    rtt_ms: float | None
    loss: float | None
    delivered: int
    undelivered: int


_TRACE_COLS = (
    "app, node_region, node, pos, conv, sender_region, recipient_region, recipient_device,"
    " received_ms, outcome, commit_wait_ms, commit_ms, fanout_ms, queue_wait_ms,"
    " client_ack_ms, end_to_end_ms, c2s_est_ms, s2c_est_ms"
)
_CONN_COLS = (
    "app, node_region, node, client_region, net, sdk, user_id, device, connected_ms,"
    " closed_ms, reason, resumed, probes, rtt_ms, loss, delivered, undelivered"
)


# Rows per multi-row INSERT on PostgreSQL (18 parameters each: 9,000 per statement).
_VALUES_ROWS = 500


def _insert_many(tx: Tx, table: str, cols: str, width: int, values: list[tuple[Any, ...]]) -> None:
    """Insert ``values`` in as few round trips as the dialect allows.

    SQLite runs in-process, so ``executemany`` is one prepared statement stepped
    per row.  On PostgreSQL every statement is a round trip: one multi-row
    ``INSERT ... VALUES (...), (...)`` per ``_VALUES_ROWS`` rows instead.
    """
    if not values:
        return
    one = "(" + ", ".join("?" * width) + ")"
    if tx.dialect != "postgres":
        tx.executemany(f"INSERT INTO {table} ({cols}) VALUES {one}", values)
        return
    for at in range(0, len(values), _VALUES_ROWS):
        part = values[at : at + _VALUES_ROWS]
        tx.execute(
            f"INSERT INTO {table} ({cols}) VALUES " + ", ".join([one] * len(part)),
            [v for row in part for v in row],
        )


def _row_from(r: Sequence[Any]) -> SeriesRow:
    n = len(COUNTERS)
    return SeriesRow(
        app=r[0],
        node_region=r[1],
        node=r[2],
        client_region=r[3],
        step_s=r[4],
        start_ms=r[5],
        counts=list(r[6 : 6 + n]),
        hists=decode_hists(bytes(r[6 + n])),
    )


class TelemetryStore:
    """SQL of telemetry; every method runs inside ``Database.read/write``."""

    # Upper bound of rows one downsampling transaction rolls up, so one pass never
    # holds the write lock for long (on SQLite message commits wait for it; a pass of
    # 1,000 rows takes a few milliseconds); the next pass continues.
    DOWNSAMPLE_BATCH = 1_000

    # Keys looked up per SELECT in ``merge_series_tx`` (6 parameters each: well
    # under SQLite's 32,766 and PostgreSQL's 65,535 parameters per statement).
    MERGE_LOOKUP = 500

    def merge_series_tx(self, tx: Tx, rows: Iterable[SeriesRow]) -> None:
        """Add each row to the stored row with the same key (insert if none).

        Set-based: rows with the same key are added together first, the stored
        rows of all keys are read with one ``SELECT`` per ``MERGE_LOOKUP`` keys,
        then one ``executemany`` inserts the new keys and one updates the rest.
        """
        merged: dict[tuple[Any, ...], SeriesRow] = {}
        for row in rows:
            key = (row.app, row.node_region, row.node, row.client_region, row.step_s, row.start_ms)
            mine = merged.get(key)
            if mine is None:
                merged[key] = mine = SeriesRow(*key, list(row.counts), {})
                merge_hists(mine.hists, row.hists)
            else:
                mine.merge(row)
        if not merged:
            return
        keys = list(merged)
        stored: dict[tuple[Any, ...], SeriesRow] = {}
        for at in range(0, len(keys), self.MERGE_LOOKUP):
            part = keys[at : at + self.MERGE_LOOKUP]
            found = tx.query(
                f"SELECT {', '.join(_KEY)}, {_COUNTER_SQL}, hists FROM telemetry_series"
                f" WHERE ({', '.join(_KEY)}) IN (VALUES "
                + ", ".join(["(" + ", ".join("?" * len(_KEY)) + ")"] * len(part))
                + ")",
                [v for key in part for v in key],
            )
            for r in found:
                stored[tuple(r[: len(_KEY)])] = _row_from(r)
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for key, row in merged.items():
            prior = stored.get(key)
            if prior is None:
                inserts.append((*key, *row.counts, encode_hists(row.hists)))
            else:
                prior.merge(row)
                updates.append((*prior.counts, encode_hists(prior.hists), *key))
        if inserts:
            tx.executemany(
                f"INSERT INTO telemetry_series ({', '.join(_KEY)}, {_COUNTER_SQL}, hists)"
                f" VALUES ({', '.join('?' * (len(_KEY) + len(COUNTERS) + 1))})",
                inserts,
            )
        if updates:
            where = " AND ".join(f"{k} = ?" for k in _KEY)
            tx.executemany(
                f"UPDATE telemetry_series SET {', '.join(f'{c} = ?' for c in COUNTERS)},"
                f" hists = ? WHERE {where}",
                updates,
            )

    def series_tx(
        self,
        tx: Tx,
        app: str,
        from_ms: int,
        to_ms: int,
        node_region: str | None = None,
        node: str | None = None,
        client_region: str | None = None,
    ) -> list[SeriesRow]:
        """Rows of ``app`` (both resolutions) starting in ``[from_ms, to_ms)``.

        Hour rows are included when their hour overlaps the range, so data that
        has been downsampled still shows up (at hour resolution).
        """
        sql = (
            f"SELECT {', '.join(_KEY)}, {_COUNTER_SQL}, hists FROM telemetry_series"
            " WHERE app = ? AND start_ms < ? AND start_ms + step_s * 1000 > ?"
        )
        params: list[Any] = [app, to_ms, from_ms]
        for col, value in (
            ("node_region", node_region),
            ("node", node),
            ("client_region", client_region),
        ):
            if value is not None:
                sql += f" AND {col} = ?"
                params.append(value)
        sql += " ORDER BY start_ms"
        return [_row_from(r) for r in tx.query(sql, params)]

    def downsample_tx(self, tx: Tx, before_ms: int) -> int:
        """Roll minute rows starting before ``before_ms`` into hour rows; return rows rolled."""
        found = tx.query(
            f"SELECT {', '.join(_KEY)}, {_COUNTER_SQL}, hists FROM telemetry_series"
            " WHERE step_s = 60 AND start_ms < ? ORDER BY start_ms LIMIT ?",
            (before_ms, self.DOWNSAMPLE_BATCH),
        )
        if not found:
            return 0
        hours: dict[tuple[str, str, str, str, int], SeriesRow] = {}
        for r in found:
            row = _row_from(r)
            hour = row.start_ms - row.start_ms % 3_600_000
            key = (row.app, row.node_region, row.node, row.client_region, hour)
            acc = hours.get(key)
            if acc is None:
                hours[key] = SeriesRow(
                    row.app,
                    row.node_region,
                    row.node,
                    row.client_region,
                    3600,
                    hour,
                    list(row.counts),
                    row.hists,
                )
            else:
                acc.merge(row)
        self.merge_series_tx(tx, hours.values())
        where = " AND ".join(f"{k} = ?" for k in _KEY)
        tx.executemany(f"DELETE FROM telemetry_series WHERE {where}", [r[:6] for r in found])
        return len(found)

    def prune_tx(self, tx: Tx, hours_before_ms: int, detail_before_ms: int) -> int:
        """Delete hour rows, traces and connection history past their retention."""
        removed = tx.execute(
            "DELETE FROM telemetry_series WHERE step_s = 3600 AND start_ms < ?",
            (hours_before_ms,),
        )
        removed += tx.execute(
            "DELETE FROM telemetry_traces WHERE received_ms < ?", (detail_before_ms,)
        )
        removed += tx.execute(
            "DELETE FROM telemetry_connections WHERE closed_ms < ?", (detail_before_ms,)
        )
        return removed

    def insert_traces_tx(self, tx: Tx, rows: Sequence[TraceRow]) -> None:
        _insert_many(
            tx,
            "telemetry_traces",
            _TRACE_COLS,
            18,
            [
                (
                    r.app,
                    r.node_region,
                    r.node,
                    r.pos,
                    r.conv,
                    r.sender_region,
                    r.recipient_region,
                    r.recipient_device,
                    r.received_ms,
                    r.outcome,
                    r.commit_wait_ms,
                    r.commit_ms,
                    r.fanout_ms,
                    r.queue_wait_ms,
                    r.client_ack_ms,
                    r.end_to_end_ms,
                    r.c2s_est_ms,
                    r.s2c_est_ms,
                )
                for r in rows
            ],
        )

    def insert_connections_tx(self, tx: Tx, rows: Sequence[ConnectionRow]) -> None:
        _insert_many(
            tx,
            "telemetry_connections",
            _CONN_COLS,
            17,
            [
                (
                    r.app,
                    r.node_region,
                    r.node,
                    r.client_region,
                    r.net,
                    r.sdk,
                    r.user_id,
                    r.device,
                    r.connected_ms,
                    r.closed_ms,
                    r.reason,
                    int(r.resumed),
                    r.probes,
                    r.rtt_ms,
                    r.loss,
                    r.delivered,
                    r.undelivered,
                )
                for r in rows
            ],
        )

    def traces_tx(self, tx: Tx, app: str, from_ms: int, to_ms: int, limit: int) -> list[TraceRow]:
        rows = tx.query(
            f"SELECT {_TRACE_COLS} FROM telemetry_traces WHERE app = ? AND received_ms >= ?"
            " AND received_ms < ? ORDER BY received_ms, pos LIMIT ?",
            (app, from_ms, to_ms, limit),
        )
        return [TraceRow(*r) for r in rows]

    def connections_tx(
        self, tx: Tx, app: str, from_ms: int, to_ms: int, limit: int
    ) -> list[ConnectionRow]:
        rows = tx.query(
            f"SELECT {_CONN_COLS} FROM telemetry_connections WHERE app = ? AND closed_ms >= ?"
            " AND closed_ms < ? ORDER BY closed_ms LIMIT ?",
            (app, from_ms, to_ms, limit),
        )
        out = []
        for r in rows:
            values = list(r)
            values[11] = bool(values[11])
            out.append(ConnectionRow(*values))
        return out

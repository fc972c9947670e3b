"""The quality query service: stored aggregate rows -> series of points with rates and percentiles.

Rows are read and folded on a database reader thread (``Database.read``), so a
day of minutes for many regions never blocks the event loop.  A point merges
every row of its group whose start falls in its time bucket; hour rows (data
older than the minute retention) land in the bucket of their hour.

Definitions (docs/telemetry.md §aggregates):

* send success = publishes committed / publishes answered (committed + errors);
* delivery success = deliveries acknowledged within the deadline / deliveries
  resolved (acknowledged in time + acknowledged late + not acknowledged);
* disconnect rate = unexpected disconnects (heartbeat timeout, protocol error,
  auth expiry, transport error) / peak active connections of the bucket;
* latency percentiles per stage from the merged histograms (milliseconds);
  RTT from probe medians (``rtt_ms``) and probe p95s (``rtt_p95_ms``), loss as
  a fraction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from relaydesk.storage import Database, Tx
from relaydesk.storage.telemetry import (
    COUNTERS,
    ConnectionRow,
    HistData,
    SeriesRow,
    TelemetryStore,
    TraceRow,
    merge_hists,
)
from relaydesk.telemetry.histogram import LATENCY_BOUNDS_MS, LOSS_BOUNDS, Histogram
from relaydesk.telemetry.recorder import LATENCY_STAGES, REASONS, UNEXPECTED

GroupBy = Literal["none", "node", "region", "client_region"]
GROUPS: tuple[str, ...] = ("none", "node", "region", "client_region")
WorstBy = Literal[
    "delivery_success",
    "send_success",
    "server_p95",
    "queue_wait_p95",
    "client_ack_p95",
    "rtt_p95",
    "loss_p95",
    "disconnect_rate",
]
WORST_BY: tuple[str, ...] = (
    "delivery_success",
    "send_success",
    "server_p95",
    "queue_wait_p95",
    "client_ack_p95",
    "rtt_p95",
    "loss_p95",
    "disconnect_rate",
)
ALL = "*"


class Percentiles(msgspec.Struct, frozen=True):
    """Percentiles of one stage in one point (milliseconds; loss: fraction)."""

    n: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None


class Point(msgspec.Struct, frozen=True):
    """One time bucket of one group."""

    t: int  # bucket start, epoch ms
    node_region: str
    node: str
    client_region: str
    sent: int
    send_errors: int
    send_success: float | None
    deliveries: int
    delivered: int
    late: int
    undelivered: int
    delivery_success: float | None
    latency_ms: dict[str, Percentiles]
    connects: int
    resumes: int
    disconnects: dict[str, int]
    unexpected_disconnects: int
    disconnect_rate: float | None
    active: int
    probes: int
    probes_rejected: int
    probes_clamped: int
    rtt_ms: Percentiles
    rtt_p95_ms: Percentiles
    loss: Percentiles
    traces: int


class Series(msgspec.Struct, frozen=True):
    """The points of one group, and the group's total over the whole range."""

    node_region: str
    node: str
    client_region: str
    points: list[Point]
    total: Point


class SeriesResult(msgspec.Struct, frozen=True):
    app: str
    from_ms: int
    to_ms: int
    step_s: int
    group_by: str
    series: list[Series]


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """What to read: one app, a time range, optional filters, bucket step and grouping."""

    app: str
    from_ms: int
    to_ms: int
    step_s: int = 60
    node_region: str | None = None
    node: str | None = None
    client_region: str | None = None
    group_by: GroupBy = "node"


def _pct(h: Histogram, scale: float = 1.0) -> Percentiles:
    def q(x: float) -> float | None:
        v = h.quantile(x)
        return None if v is None else round(v * scale, 4)

    mean = h.mean()
    return Percentiles(h.n, q(0.5), q(0.95), q(0.99), None if mean is None else round(mean, 4))


@dataclass(slots=True)
class _Acc:
    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTERS))
    active_at: dict[int, int] = field(default_factory=dict)
    hists: dict[str, HistData] = field(default_factory=dict)

    def add(self, row: SeriesRow) -> None:
        for i, c in enumerate(row.counts):
            self.counts[i] += c
        self.active_at[row.start_ms] = self.active_at.get(row.start_ms, 0) + row.count("active_max")
        merge_hists(self.hists, row.hists)

    def merge(self, other: _Acc) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        for t, n in other.active_at.items():
            self.active_at[t] = self.active_at.get(t, 0) + n
        merge_hists(self.hists, other.hists)

    def hist(self, name: str) -> Histogram:
        data = self.hists.get(name)
        if name == "loss":
            return Histogram.from_data(data, LOSS_BOUNDS, log=False) if data else Histogram.loss()
        if data is None:
            return Histogram.latency()
        return Histogram.from_data(data, LATENCY_BOUNDS_MS, log=True)

    def point(self, t: int, labels: tuple[str, str, str]) -> Point:
        c = dict(zip(COUNTERS, self.counts, strict=True))
        sent, errors = c["sent"], c["send_errors"]
        delivered, late, undelivered = c["delivered"], c["late"], c["undelivered"]
        deliveries = delivered + late + undelivered
        disc = {r: c[f"disc_{r}"] for r in REASONS}
        unexpected = sum(disc[r] for r in UNEXPECTED)
        active = max(self.active_at.values(), default=0)
        return Point(
            t=t,
            node_region=labels[0],
            node=labels[1],
            client_region=labels[2],
            sent=sent,
            send_errors=errors,
            send_success=round(sent / (sent + errors), 6) if sent + errors else None,
            deliveries=deliveries,
            delivered=delivered,
            late=late,
            undelivered=undelivered,
            delivery_success=round(delivered / deliveries, 6) if deliveries else None,
            latency_ms={s: _pct(self.hist(s)) for s in LATENCY_STAGES if s in self.hists},
            connects=c["connects"],
            resumes=c["resumes"],
            disconnects=disc,
            unexpected_disconnects=unexpected,
            disconnect_rate=round(unexpected / max(active, 1), 6) if active or unexpected else None,
            active=active,
            probes=c["probes"],
            probes_rejected=c["probes_rejected"],
            probes_clamped=c["probes_clamped"],
            rtt_ms=_pct(self.hist("rtt")),
            rtt_p95_ms=_pct(self.hist("rtt_p95")),
            loss=_pct(self.hist("loss")),
            traces=c["traces"],
        )


def _labels(row: SeriesRow, group_by: str) -> tuple[str, str, str]:
    if group_by == "node":
        return (row.node_region, row.node, ALL)
    if group_by == "region":
        return (row.node_region, ALL, ALL)
    if group_by == "client_region":
        return (ALL, ALL, row.client_region)
    return (ALL, ALL, ALL)


def build_series(rows: Iterable[SeriesRow], q: SeriesQuery) -> SeriesResult:
    """Fold ``rows`` into points (pure; exposed for tests)."""
    step_ms = q.step_s * 1000
    groups: dict[tuple[str, str, str], dict[int, _Acc]] = {}
    for row in rows:
        t = max(row.start_ms, q.from_ms)
        bucket = q.from_ms + (t - q.from_ms) // step_ms * step_ms
        acc = groups.setdefault(_labels(row, q.group_by), {}).setdefault(bucket, _Acc())
        acc.add(row)
    series = []
    for labels in sorted(groups):
        buckets = groups[labels]
        total = _Acc()
        points = []
        for t in sorted(buckets):
            total.merge(buckets[t])
            points.append(buckets[t].point(t, labels))
        series.append(
            Series(labels[0], labels[1], labels[2], points, total.point(q.from_ms, labels))
        )
    return SeriesResult(q.app, q.from_ms, q.to_ms, q.step_s, q.group_by, series)


def _score(by: str) -> Callable[[Point], float | None]:
    """Badness of a point for ``by`` (higher is worse); None: not applicable."""
    if by == "delivery_success":
        return lambda p: None if p.delivery_success is None else 1.0 - p.delivery_success
    if by == "send_success":
        return lambda p: None if p.send_success is None else 1.0 - p.send_success
    if by == "disconnect_rate":
        return lambda p: p.disconnect_rate
    if by == "rtt_p95":
        return lambda p: p.rtt_p95_ms.p95
    if by == "loss_p95":
        return lambda p: p.loss.p95
    stage = by.removesuffix("_p95")

    def latency(p: Point) -> float | None:
        pct = p.latency_ms.get(stage)
        return None if pct is None else pct.p95

    return latency


def worst_points(result: SeriesResult, by: str, limit: int) -> list[Point]:
    """The ``limit`` worst points across all series for ``by`` (pure)."""
    score = _score(by)
    scored = [
        (s, p)
        for series in result.series
        for p in series.points
        if (s := score(p)) is not None and s > 0
    ]
    scored.sort(key=lambda sp: (-sp[0], sp[1].t))
    return [p for _, p in scored[:limit]]


class QualityService:
    """Reads quality data for the API, the CLI report and the desk's diagnosis."""

    def __init__(self, db: Database, store: TelemetryStore) -> None:
        self.db = db
        self.store = store

    async def series(self, q: SeriesQuery) -> SeriesResult:
        def run(tx: Tx) -> SeriesResult:
            rows = self.store.series_tx(
                tx, q.app, q.from_ms, q.to_ms, q.node_region, q.node, q.client_region
            )
            return build_series(rows, q)

        return await self.db.read(run)

    async def worst(self, q: SeriesQuery, by: str, limit: int) -> list[Point]:
        """The worst minutes (per region and node unless grouped otherwise)."""
        result = await self.series(q)
        return worst_points(result, by, limit)

    async def traces(self, app: str, from_ms: int, to_ms: int, limit: int) -> list[TraceRow]:
        return await self.db.read(lambda tx: self.store.traces_tx(tx, app, from_ms, to_ms, limit))

    async def connections(
        self, app: str, from_ms: int, to_ms: int, limit: int
    ) -> list[ConnectionRow]:
        return await self.db.read(
            lambda tx: self.store.connections_tx(tx, app, from_ms, to_ms, limit)
        )

"""The Network quality page's pure parts: the query form and the view built from a result.

``parse_quality_form`` turns the page's query string into a ``QualityForm`` (the
telemetry ``SeriesQuery`` plus presentation choices) and inline errors;
``quality_view`` turns the query service's ``SeriesResult`` and worst points into what
the template places: per-series totals, chart SVG (``telemetry/charts.py``, the same
code as ``relaydesk quality report --html``) and the worst-minutes rows.  No I/O here,
so all of it is unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast
from urllib.parse import urlencode

import msgspec

from relaydesk.telemetry import GROUPS, WORST_BY, Point, Series, SeriesQuery, SeriesResult
from relaydesk.telemetry.charts import (
    connections_chart,
    fill_buckets,
    fmt_minute,
    fmt_ms,
    fmt_pct,
    latency_chart,
    loss_chart,
    rtt_chart,
    success_chart,
    table_row,
    volume_chart,
)
from relaydesk.telemetry.query import ALL, GroupBy
from relaydesk.web.console._forms import Errors, parse_local_utc

MINUTE_MS: Final = 60_000
#: Quick ranges (label shown on the page, length in ms); ``custom`` takes from/to.
PRESETS: Final[dict[str, tuple[str, int]]] = {
    "15m": ("15 min", 15 * MINUTE_MS),
    "1h": ("1 h", 60 * MINUTE_MS),
    "6h": ("6 h", 6 * 60 * MINUTE_MS),
    "24h": ("24 h", 24 * 60 * MINUTE_MS),
    "7d": ("7 days", 7 * 24 * 60 * MINUTE_MS),
}
DEFAULT_PRESET: Final = "1h"
MAX_RANGE_MS: Final = 31 * 24 * 60 * MINUTE_MS
#: Worst *minutes* are read at one-minute resolution up to this range, beyond it at the
#: charts' step (minute rows older than the retention are hour rows anyway).
WORST_MINUTES_MAX_MS: Final = 7 * 24 * 60 * MINUTE_MS
#: Bucket sizes the charts use: the smallest one that keeps a chart under MAX_BUCKETS.
STEPS_S: Final = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_BUCKETS: Final = 360
WORST_LIMIT: Final = 10
MAX_FILTER: Final = 256
PERCENTILES: Final = ("p50", "p95", "p99")
GROUP_LABELS: Final[dict[str, str]] = {
    "node": "per region and node",
    "region": "per region",
    "client_region": "per client region",
    "none": "all together",
}
WORST_LABELS: Final[dict[str, str]] = {
    "delivery_success": "lowest delivery success",
    "send_success": "lowest send success",
    "server_p95": "highest server p95",
    "queue_wait_p95": "highest queue wait p95",
    "client_ack_p95": "highest client ack p95",
    "rtt_p95": "highest RTT p95",
    "loss_p95": "highest loss p95",
    "disconnect_rate": "highest disconnect rate",
}
CHART_WIDTH: Final = 640
CHART_HEIGHT: Final = 220


def step_for(range_ms: int) -> int:
    """The chart bucket (seconds) for a range: the smallest that keeps <= MAX_BUCKETS."""
    for step in STEPS_S:
        if range_ms <= step * 1000 * MAX_BUCKETS:
            return step
    return STEPS_S[-1]


def local_input(t_ms: int) -> str:
    """Epoch ms as a ``datetime-local`` value in UTC (``YYYY-MM-DDTHH:MM``)."""
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True, slots=True)
class QualityForm:
    """What the page shows: the query, and how (latency percentile, worst criterion)."""

    app: str
    range: str
    from_ms: int
    to_ms: int
    step_s: int
    group: str
    region: str
    node: str
    by: str
    pct: str

    @property
    def query(self) -> SeriesQuery:
        return SeriesQuery(
            self.app,
            self.from_ms,
            self.to_ms,
            self.step_s,
            node_region=self.region or None,
            node=self.node or None,
            group_by=cast(GroupBy, self.group),  # checked against GROUPS
        )

    @property
    def worst_step_s(self) -> int:
        return 60 if self.to_ms - self.from_ms <= WORST_MINUTES_MAX_MS else self.step_s

    @property
    def worst_query(self) -> SeriesQuery:
        q = self.query
        step_s = self.worst_step_s
        from_ms = self.from_ms - self.from_ms % (step_s * 1000)
        return SeriesQuery(
            q.app, from_ms, q.to_ms, step_s, q.node_region, q.node, q.client_region, q.group_by
        )

    def params(self, **change: str) -> str:
        """This page's query string, with ``change`` applied (links keep the other choices)."""
        values = {
            "app": self.app,
            "range": self.range,
            "group": self.group,
            "region": self.region,
            "node": self.node,
            "by": self.by,
            "pct": self.pct,
        }
        if self.range == "custom":
            values["from"] = local_input(self.from_ms)
            values["to"] = local_input(self.to_ms)
        values.update(change)
        if values["range"] != "custom":
            values.pop("from", None)
            values.pop("to", None)
        return urlencode({k: v for k, v in values.items() if v})


def parse_quality_form(
    params: Mapping[str, str], apps: Sequence[str], now_ms: int
) -> tuple[QualityForm, Errors]:
    """The page's query string: app, range (preset or custom from/to in UTC), grouping,
    filters, latency percentile and worst criterion.  Unknown values get inline errors
    and fall back to defaults so that the form still renders."""
    errors: Errors = {}

    def text(name: str) -> str:
        return (params.get(name) or "").strip()

    app = text("app") or (apps[0] if apps else "")
    if app and app not in apps:
        errors["app"] = f"There is no app {app!r} on this node."
    elif not app:
        errors["app"] = "No apps exist on this node yet."

    range_ = text("range") or DEFAULT_PRESET
    to_ms = now_ms
    from_ms = now_ms - PRESETS[DEFAULT_PRESET][1]
    if range_ == "custom":
        lo, hi = parse_local_utc(text("from")), parse_local_utc(text("to"))
        if lo is None:
            errors["from"] = "Give a start as YYYY-MM-DDTHH:MM (UTC)."
        if hi is None:
            errors["to"] = "Give an end as YYYY-MM-DDTHH:MM (UTC)."
        if lo is not None and hi is not None:
            lo_ms, hi_ms = int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)
            if hi_ms <= lo_ms:
                errors["to"] = "The range ends before it starts."
            elif hi_ms - lo_ms > MAX_RANGE_MS:
                errors["to"] = "The range is longer than 31 days."
            else:
                from_ms, to_ms = lo_ms, hi_ms
    elif range_ in PRESETS:
        from_ms = now_ms - PRESETS[range_][1]
    else:
        errors["range"] = "Unknown range; pick one of the presets or custom."
        range_ = DEFAULT_PRESET

    step_s = step_for(to_ms - from_ms)
    from_ms -= from_ms % (step_s * 1000)  # buckets on clock boundaries

    group = text("group") or "node"
    if group not in GROUPS:
        errors["group"] = "Unknown grouping."
        group = "node"
    region, node = text("region"), text("node")
    for name, value in (("region", region), ("node", node)):
        if len(value) > MAX_FILTER:
            errors[name] = f"At most {MAX_FILTER} characters."
    by = text("by") or "delivery_success"
    if by not in WORST_BY:
        errors["by"] = "Unknown criterion."
        by = "delivery_success"
    pct = text("pct") or "p95"
    if pct not in PERCENTILES:
        errors["pct"] = "Pick p50, p95 or p99."
        pct = "p95"
    form = QualityForm(
        app=app,
        range=range_,
        from_ms=from_ms,
        to_ms=to_ms,
        step_s=step_s,
        group=group,
        region=region[:MAX_FILTER],
        node=node[:MAX_FILTER],
        by=by,
        pct=pct,
    )
    return form, errors


# -- the view --------------------------------------------------------------------------------


def series_title(node_region: str, node: str, client_region: str) -> str:
    """``region eu-west · node edge-1``; ``all traffic`` when nothing is split out."""
    parts = []
    if node_region != ALL:
        parts.append(f"region {node_region}")
    if node != ALL:
        parts.append(f"node {node}")
    if client_region != ALL:
        parts.append(f"client region {client_region}")
    return " · ".join(parts) or "all traffic"


@dataclass(slots=True)
class SeriesView:
    """One group (region and node, region, client region or everything) of the page."""

    key: str
    title: str
    total: list[str]
    charts: list[str]
    points: int


@dataclass(slots=True)
class WorstRow:
    minute: str
    t: int
    title: str
    node_region: str
    node: str
    client_region: str
    value: str
    cells: list[str]
    zoom: str


@dataclass(slots=True)
class QualityView:
    series: list[SeriesView] = field(default_factory=list)
    worst: list[WorstRow] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)


def worst_value(point: Point, by: str) -> str:
    """The value that made ``point`` one of the worst, formatted for the table."""
    if by == "delivery_success":
        return fmt_pct(point.delivery_success)
    if by == "send_success":
        return fmt_pct(point.send_success)
    if by == "disconnect_rate":
        return fmt_pct(point.disconnect_rate)
    if by == "rtt_p95":
        return f"{fmt_ms(point.rtt_p95_ms.p95)} ms"
    if by == "loss_p95":
        return fmt_pct(point.loss.p95)
    pct = point.latency_ms.get(by.removesuffix("_p95"))
    return f"{fmt_ms(None if pct is None else pct.p95)} ms"


def _labels(p: Point | Series) -> tuple[str, str, str]:
    return (p.node_region, p.node, p.client_region)


def quality_view(form: QualityForm, result: SeriesResult, worst: Sequence[Point]) -> QualityView:
    """Totals, charts and worst rows for the template (pure)."""
    view = QualityView()
    step_ms = form.step_s * 1000
    # Worst minutes shade the chart bucket that holds them.
    marks: dict[tuple[str, str, str], set[int]] = {}
    for p in worst:
        marks.setdefault(_labels(p), set()).add((p.t - result.from_ms) // step_ms)
    for s in result.series:
        labels = _labels(s)
        points: list[dict[str, Any]] = msgspec.to_builtins(s.points)
        xs, filled = fill_buckets(points, result.from_ms, result.to_ms, step_ms)
        m = sorted(marks.get(labels, ()))
        x_range = (result.from_ms, result.to_ms)
        charts = [
            success_chart(xs, filled, m, x_range=x_range, width=CHART_WIDTH, height=CHART_HEIGHT),
            latency_chart(
                xs, filled, m, form.pct, x_range=x_range, width=CHART_WIDTH, height=CHART_HEIGHT
            ),
            rtt_chart(xs, filled, m, x_range=x_range, width=CHART_WIDTH, height=CHART_HEIGHT),
            loss_chart(xs, filled, m, x_range=x_range, width=CHART_WIDTH, height=CHART_HEIGHT),
            volume_chart(xs, filled, m, x_range=x_range, width=CHART_WIDTH, height=CHART_HEIGHT),
            connections_chart(
                xs, filled, m, x_range=x_range, width=CHART_WIDTH, height=CHART_HEIGHT
            ),
        ]
        view.series.append(
            SeriesView(
                key="/".join(labels),
                title=series_title(*labels),
                total=table_row(msgspec.to_builtins(s.total))[1:],
                charts=charts,
                points=len(points),
            )
        )
        if s.node_region != ALL and s.node_region not in view.regions:
            view.regions.append(s.node_region)
        if s.node != ALL and s.node not in view.nodes:
            view.nodes.append(s.node)
    for p in worst:
        half = 7 * MINUTE_MS
        zoom = form.params(
            range="custom",
            **{"from": local_input(p.t - half), "to": local_input(p.t + half + MINUTE_MS)},
        )
        view.worst.append(
            WorstRow(
                minute=fmt_minute(p.t),
                t=p.t,
                title=series_title(*_labels(p)),
                node_region=p.node_region,
                node=p.node,
                client_region=p.client_region,
                value=worst_value(p, form.by),
                cells=table_row(msgspec.to_builtins(p))[1:],
                zoom=zoom,
            )
        )
    return view

"""Quality charts and tables as inline SVG/HTML: pure functions, no I/O, no JavaScript.

Shared by ``relaydesk quality report --html`` (``cli/quality.py``, an offline file) and
the console's Network quality page (``web/console``).  Points are the quality API's
JSON shape (``msgspec.to_builtins`` of ``telemetry.query.Point``); ``None`` stands for a
bucket without data and breaks the lines there.

Every text placed in the markup (titles, legend names, units, table cells) goes
through ``html.escape``; numbers are formatted here.  That is what lets the console
embed the returned SVG as-is (see docs/console.md §Security).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

PointDict = Mapping[str, Any]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
#: Stages drawn on the latency chart, in pipeline order (docs/telemetry.md §Stages).
CHART_STAGES = ("commit_wait", "commit", "fanout", "queue_wait", "client_ack")
_DAY_MS = 86_400_000


# -- formatting ------------------------------------------------------------------------------


def p95(point: PointDict, stage: str) -> float | None:
    """The p95 of ``stage`` in ``point`` (ms), None when the stage has no samples."""
    return stage_pct(point, stage, "p95")


def stage_pct(point: PointDict, stage: str, pct: str) -> float | None:
    """``pct`` (p50, p95, p99, mean) of ``stage`` in ``point`` (ms)."""
    found = point["latency_ms"].get(stage)
    return None if found is None else found[pct]


def fmt_pct(v: float | None) -> str:
    """A fraction as a percentage with two decimals; ``-`` for no value."""
    return "-" if v is None else f"{100 * v:.2f}%"


def fmt_ms(v: float | None) -> str:
    """Milliseconds: one decimal below 100, none above; ``-`` for no value."""
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def fmt_minute(t_ms: int) -> str:
    """``2024-03-04 10:15`` (UTC)."""
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


TABLE_HEAD = (
    "minute (UTC)",
    "sent",
    "send ok",
    "deliv",
    "deliv ok",
    "server p95",
    "queue p95",
    "ack p95",
    "disc/conn",
    "rtt p50/p95",
    "loss p95",
    "active",
)


def table_row(p: PointDict) -> list[str]:
    """The cells of one point under ``TABLE_HEAD``."""
    loss = p["loss"]["p95"]
    return [
        fmt_minute(p["t"]),
        str(p["sent"]),
        fmt_pct(p["send_success"]),
        str(p["deliveries"]),
        fmt_pct(p["delivery_success"]),
        fmt_ms(p95(p, "server")),
        fmt_ms(p95(p, "queue_wait")),
        fmt_ms(p95(p, "client_ack")),
        f"{p['unexpected_disconnects']}/{p['connects']}",
        f"{fmt_ms(p['rtt_ms']['p50'])}/{fmt_ms(p['rtt_p95_ms']['p95'])}",
        "-" if loss is None else f"{100 * loss:.1f}%",
        str(p["active"]),
    ]


# -- the chart -------------------------------------------------------------------------------


_NICE = (1.0, 1.2, 1.6, 2.0, 2.4, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def nice_ceiling(v: float) -> float:
    """The top of a y axis: ``v`` rounded up so that quarter steps read well (1, 1.2, 1.6,
    2, 2.4, 3, 4, 5, 6, 8 times a power of ten); 1 for nothing positive."""
    if not v > 0 or not math.isfinite(v):
        return 1.0
    exp = math.floor(math.log10(v))

    def scaled(m: float) -> float:  # dividing keeps 0.3 exact where 3 * 0.1 is not
        return m * 10.0**exp if exp >= 0 else m / 10.0**-exp

    for m in _NICE:
        if v <= scaled(m) * (1 + 1e-9):
            return scaled(m)
    return scaled(10.0)


#: Tick steps for the time axis, smallest first (ms): each a round clock interval.
_TIME_STEPS = (
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000,
    60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
    3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
    _DAY_MS, 2 * _DAY_MS, 7 * _DAY_MS, 14 * _DAY_MS, 28 * _DAY_MS,
)  # fmt: skip


def time_ticks(t0: int, t1: int, max_ticks: int = 6) -> list[tuple[int, str]]:
    """Ticks for the time axis ``[t0, t1]`` (epoch ms): instants on a round clock step
    (at most ``max_ticks`` of them) and their labels, never two alike: seconds when the
    step is under a minute, the date when the range spans more than a day."""
    span = t1 - t0
    if span <= 0:
        return [(t0, fmt_minute(t0)[11:])]
    step = next((st for st in _TIME_STEPS if span / st <= max_ticks - 1), _TIME_STEPS[-1])
    while span / step > max_ticks - 1:  # longer than the table: whole multiples of 4 weeks
        step *= 2
    first = -(-t0 // step) * step
    ticks = list(range(first, t1 + 1, step)) or [t0]

    def label(t: int) -> str:
        dt = datetime.fromtimestamp(t / 1000, UTC)
        if step < 60_000:
            return dt.strftime("%H:%M:%S")
        if step >= _DAY_MS:
            return dt.strftime("%m-%d")
        return dt.strftime("%m-%d %H:%M" if span > _DAY_MS else "%H:%M")

    return [(t, label(t)) for t in ticks]


def svg_chart(
    title: str,
    xs: Sequence[int],
    lines: Sequence[tuple[str, Sequence[float | None]]],
    unit: str,
    marks: Sequence[int] = (),
    width: int = 760,
    height: int = 220,
    *,
    x_range: tuple[int, int] | None = None,
    y_label: str = "",
) -> str:
    """A line chart as inline SVG: time on x, ``lines`` on y, ``marks`` (x indexes) in red.

    ``x_range`` (epoch ms) fixes the time axis to a chosen range instead of the
    first and last point.  A ``None`` value breaks a line; a lone value is a dot.
    ``unit`` follows every y tick (`` ms``, ``%``); ``y_label`` names what is counted
    when the values have no unit (``messages``), shown after the title.
    """
    left, right, top, bottom = 60, 150, 28, 30
    pw, ph = width - left - right, height - top - bottom
    values = [v for _, ys in lines for v in ys if v is not None and math.isfinite(v)]
    lo, hi = 0.0, nice_ceiling(max(values, default=1.0))
    if x_range is not None:
        t0, t1 = x_range
    else:
        t0, t1 = (xs[0], xs[-1]) if xs else (0, 1)
    span = max(t1 - t0, 1)
    single = x_range is None and len(xs) <= 1

    def px(t: int) -> float:
        return left + pw / 2 if single else left + pw * (t - t0) / span

    def py(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" font-size="13" font-weight="bold">{html.escape(title)}'
        + (
            f' <tspan font-weight="normal" fill="#666">({html.escape(y_label)})</tspan>'
            if y_label
            else ""
        )
        + "</text>",
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>',
    ]
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = py(v)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{v:.3g}{html.escape(unit)}</text>"
        )
    for t, text in time_ticks(t0, t0 if single else t1):
        x = px(t)
        anchor = "middle"
        if not single and x - left < 20:
            anchor = "start"
        elif not single and left + pw - x < 20:
            anchor = "end"
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#999"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{height - 10}" font-size="10" '
            f'text-anchor="{anchor}">{text}</text>'
        )
    out.append(
        f'<text x="{left + pw + 12}" y="{height - 10}" font-size="10" fill="#666">UTC</text>'
    )
    for i in marks:
        if 0 <= i < len(xs):
            out.append(
                f'<line x1="{px(xs[i]):.1f}" x2="{px(xs[i]):.1f}" y1="{top}" '
                f'y2="{top + ph}" stroke="#d62728" stroke-opacity="0.35" '
                'stroke-width="6"/>'
            )
    for n, (name, ys) in enumerate(lines):
        color = COLORS[n % len(COLORS)]
        segs: list[list[str]] = []
        cur: list[str] = []
        for t, val in zip(xs, ys, strict=True):
            if val is None or not math.isfinite(val):
                if cur:
                    segs.append(cur)
                cur = []
            else:
                cur.append(f"{px(t):.1f},{py(val):.1f}")
        if cur:
            segs.append(cur)
        for seg in segs:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            else:
                out.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
                    f'points="{" ".join(seg)}"/>'
                )
        ly = top + 14 * n + 8
        out.append(
            f'<rect x="{left + pw + 12}" y="{ly - 8}" width="10" height="10" '
            f'fill="{color}"/><text x="{left + pw + 26}" y="{ly + 1}" font-size="11">'
            f"{html.escape(name)}</text>"
        )
    if not values:
        out.append(
            f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" font-size="12" '
            'fill="#888" text-anchor="middle">no data</text>'
        )
    out.append("</svg>")
    return "".join(out)


# -- the quality charts of one series ---------------------------------------------------------

Points = Sequence[PointDict | None]
XRange = tuple[int, int] | None


def _each(points: Points, f: Callable[[PointDict], float | None]) -> list[float | None]:
    return [None if p is None else f(p) for p in points]


def _times100(v: float | None) -> float | None:
    return None if v is None else 100 * v


def volume_chart(
    xs: Sequence[int],
    points: Points,
    marks: Sequence[int] = (),
    *,
    x_range: XRange = None,
    width: int = 760,
    height: int = 220,
) -> str:
    """Messages sent, delivered and not delivered (late or unacknowledged) per bucket."""
    return svg_chart(
        "messages",
        xs,
        [
            ("sent", _each(points, lambda p: float(p["sent"]))),
            ("delivered", _each(points, lambda p: float(p["delivered"]))),
            ("not delivered", _each(points, lambda p: float(p["undelivered"] + p["late"]))),
        ],
        "",
        marks,
        x_range=x_range,
        width=width,
        height=height,
        y_label="count per bucket",
    )


def success_chart(
    xs: Sequence[int],
    points: Points,
    marks: Sequence[int] = (),
    *,
    x_range: XRange = None,
    width: int = 760,
    height: int = 220,
) -> str:
    """Send and delivery success in percent."""
    return svg_chart(
        "success rate",
        xs,
        [
            ("send", _each(points, lambda p: _times100(p["send_success"]))),
            ("delivery", _each(points, lambda p: _times100(p["delivery_success"]))),
        ],
        "%",
        marks,
        x_range=x_range,
        width=width,
        height=height,
    )


def latency_chart(
    xs: Sequence[int],
    points: Points,
    marks: Sequence[int] = (),
    pct: str = "p95",
    *,
    x_range: XRange = None,
    width: int = 760,
    height: int = 220,
) -> str:
    """One line per server/delivery stage at percentile ``pct`` (p50, p95, p99), in ms."""

    def of(stage: str) -> Callable[[PointDict], float | None]:
        return lambda p: stage_pct(p, stage, pct)

    return svg_chart(
        f"stage latency {pct}",
        xs,
        [(stage, _each(points, of(stage))) for stage in CHART_STAGES],
        " ms",
        marks,
        x_range=x_range,
        width=width,
        height=height,
    )


def network_chart(
    xs: Sequence[int],
    points: Points,
    marks: Sequence[int] = (),
    *,
    x_range: XRange = None,
    width: int = 760,
    height: int = 220,
) -> str:
    """RTT p50/p95 and loss p95 (×1000) of client probes on one axis (the compact report)."""
    return svg_chart(
        "network (client probes)",
        xs,
        [
            ("rtt p50", _each(points, lambda p: p["rtt_ms"]["p50"])),
            ("rtt p95", _each(points, lambda p: p["rtt_p95_ms"]["p95"])),
            (
                "loss p95 (‰)",
                _each(
                    points, lambda p: None if p["loss"]["p95"] is None else 1000 * p["loss"]["p95"]
                ),
            ),
        ],
        "",
        marks,
        x_range=x_range,
        width=width,
        height=height,
        y_label="RTT in ms, loss in ‰",
    )


def rtt_chart(
    xs: Sequence[int],
    points: Points,
    marks: Sequence[int] = (),
    *,
    x_range: XRange = None,
    width: int = 760,
    height: int = 220,
) -> str:
    """Probe round-trip time: median of probe medians, p95 of probe p95s (ms)."""
    return svg_chart(
        "round-trip time (client probes)",
        xs,
        [
            ("rtt p50", _each(points, lambda p: p["rtt_ms"]["p50"])),
            ("rtt p95", _each(points, lambda p: p["rtt_p95_ms"]["p95"])),
        ],
        " ms",
        marks,
        x_range=x_range,
        width=width,
        height=height,
    )


def loss_chart(
    xs: Sequence[int],
    points: Points,
    marks: Sequence[int] = (),
    *,
    x_range: XRange = None,
    width: int = 760,
    height: int = 220,
) -> str:
    """Probe packet loss, p50 and p95 over probes, in percent."""
    return svg_chart(
        "packet loss (client probes)",
        xs,
        [
            ("loss p50", _each(points, lambda p: _times100(p["loss"]["p50"]))),
            ("loss p95", _each(points, lambda p: _times100(p["loss"]["p95"]))),
        ],
        "%",
        marks,
        x_range=x_range,
        width=width,
        height=height,
    )


def connections_chart(
    xs: Sequence[int],
    points: Points,
    marks: Sequence[int] = (),
    *,
    x_range: XRange = None,
    width: int = 760,
    height: int = 220,
) -> str:
    """Connections per bucket: peak active, new connects, unexpected disconnects."""
    return svg_chart(
        "connections",
        xs,
        [
            ("active (peak)", _each(points, lambda p: float(p["active"]))),
            ("connects", _each(points, lambda p: float(p["connects"]))),
            ("unexpected disc.", _each(points, lambda p: float(p["unexpected_disconnects"]))),
        ],
        "",
        marks,
        x_range=x_range,
        width=width,
        height=height,
        y_label="connections",
    )


def fill_buckets(
    points: Sequence[PointDict], from_ms: int, to_ms: int, step_ms: int
) -> tuple[list[int], list[PointDict | None]]:
    """Every bucket start of ``[from_ms, to_ms)`` and its point (None where no data)."""
    by_t = {p["t"]: p for p in points}
    xs = list(range(from_ms, to_ms, step_ms)) or [from_ms]
    grid = set(xs)
    extra = sorted(t for t in by_t if t not in grid)
    if extra:  # a point off the grid (should not happen): keep it, in time order
        xs = sorted({*xs, *extra})
    return xs, [by_t.get(t) for t in xs]


# -- the offline report ------------------------------------------------------------------------


def render_html(
    result: Mapping[str, Any], marked: Mapping[tuple[int, int], list[str]], generated: str
) -> str:
    """A self-contained HTML report (inline CSS and SVG; nothing loaded from anywhere)."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>relaydesk quality — {esc(result['app'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin:8px 0 24px}"
        "td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}"
        "th{background:#f4f4f4}td:first-child{text-align:left}"
        "tr.worst td{background:#fde2e2;color:#900;font-weight:bold}"
        "section{margin-bottom:36px}</style></head><body>",
        f"<h1>Quality of app {esc(result['app'])}</h1>",
        f"<p>{esc(fmt_minute(result['from_ms']))} to {esc(fmt_minute(result['to_ms']))} UTC, "
        f"step {result['step_s']} s; generated {esc(generated)}. Minutes that stand out as "
        "worst (clearly worse than the others) are shaded red. "
        "Client&#8594;server and server&#8594;client figures are estimates (probe RTT/2).</p>",
    ]
    if not result["series"]:
        parts.append("<p>No data in this range.</p>")
    for si, s in enumerate(result["series"]):
        pts = s["points"]
        xs = [p["t"] for p in pts]
        marks = [pi for pi in range(len(pts)) if (si, pi) in marked]
        parts.append(f"<section><h2>region {esc(s['node_region'])} · node {esc(s['node'])}</h2>")
        parts.append(volume_chart(xs, pts, marks))
        parts.append(success_chart(xs, pts, marks))
        parts.append(latency_chart(xs, pts, marks))
        parts.append(rtt_chart(xs, pts, marks))
        parts.append(loss_chart(xs, pts, marks))
        parts.append(
            "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in TABLE_HEAD) + "<th>why</th></tr>"
        )
        for pi, p in enumerate(pts):
            why = marked.get((si, pi))
            cls = " class='worst'" if why else ""
            parts.append(
                f"<tr{cls}>"
                + "".join(f"<td>{esc(c)}</td>" for c in table_row(p))
                + f"<td>{esc('; '.join(why or []))}</td></tr>"
            )
        parts.append(
            "<tr><th>total</th>"
            + "".join(f"<th>{esc(c)}</th>" for c in table_row(s["total"])[1:])
            + "<th></th></tr></table></section>"
        )
    parts.append("</body></html>")
    return "".join(parts)

"""``relaydesk quality report``: per-region, per-node quality tables and an offline HTML report.

The command reads ``/api/quality/apps/<app>/series`` (grouped by region and
node) with the app's secret or the operator key, prints one table per region
and node with the worst minutes highlighted, and with ``--html`` writes a
self-contained page: inline SVG charts rendered here (no JavaScript, no
network), so the file opens offline and can be attached to a ticket.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

quality_app = typer.Typer(
    name="quality",
    help="Delivery and network quality: per-region/per-node reports.",
    no_args_is_help=True,
    add_completion=False,
)


@quality_app.callback()
def _group() -> None:
    """Delivery and network quality: per-region/per-node reports."""
    # A callback keeps ``report`` a subcommand (typer collapses one-command apps).


# What makes a minute "worst", and how it reads in the report.
_CRITERIA: tuple[tuple[str, str], ...] = (
    ("delivery", "lowest delivery success"),
    ("send", "lowest send success"),
    ("latency", "highest server+queue+ack p95"),
    ("network", "highest RTT p95 / loss p95"),
    ("disconnects", "most unexpected disconnects"),
)


def _p95(point: dict[str, Any], stage: str) -> float | None:
    pct = point["latency_ms"].get(stage)
    return None if pct is None else pct["p95"]


def _latency_sum(point: dict[str, Any]) -> float | None:
    parts = [_p95(point, s) for s in ("server", "queue_wait", "client_ack")]
    known = [p for p in parts if p is not None]
    return sum(known) if known else None


def _badness(point: dict[str, Any], criterion: str) -> float | None:
    if criterion == "delivery":
        ds = point["delivery_success"]
        return None if ds is None else 1.0 - ds
    if criterion == "send":
        ss = point["send_success"]
        return None if ss is None else 1.0 - ss
    if criterion == "latency":
        return _latency_sum(point)
    if criterion == "network":
        rtt, loss = point["rtt_p95_ms"]["p95"], point["loss"]["p95"]
        if rtt is None and loss is None:
            return None
        return (rtt or 0.0) / 100.0 + (loss or 0.0) * 100.0
    return float(point["unexpected_disconnects"]) or None


def worst_minutes(series: Sequence[dict[str, Any]], n: int) -> dict[tuple[int, int], list[str]]:
    """(series index, point index) -> the criteria for which it is among the ``n`` worst."""
    marked: dict[tuple[int, int], list[str]] = {}
    for criterion, label in _CRITERIA:
        scored = []
        for si, s in enumerate(series):
            for pi, p in enumerate(s["points"]):
                b = _badness(p, criterion)
                if b is not None and b > 0:
                    scored.append((b, si, pi))
        scored.sort(key=lambda x: -x[0])
        for _, si, pi in scored[:n]:
            marked.setdefault((si, pi), []).append(label)
    return marked


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _minute(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _row(p: dict[str, Any]) -> list[str]:
    loss = p["loss"]["p95"]
    return [
        _minute(p["t"]),
        str(p["sent"]),
        _pct(p["send_success"]),
        str(p["deliveries"]),
        _pct(p["delivery_success"]),
        _ms(_p95(p, "server")),
        _ms(_p95(p, "queue_wait")),
        _ms(_p95(p, "client_ack")),
        f"{p['unexpected_disconnects']}/{p['connects']}",
        f"{_ms(p['rtt_ms']['p50'])}/{_ms(p['rtt_p95_ms']['p95'])}",
        "-" if loss is None else f"{100 * loss:.1f}%",
        str(p["active"]),
    ]


_HEAD = [
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
]


def render_tables(
    result: dict[str, Any], marked: dict[tuple[int, int], list[str]], console: Console
) -> None:
    for si, s in enumerate(result["series"]):
        table = Table(title=f"region {s['node_region']} · node {s['node']}", title_justify="left")
        for name in _HEAD:
            table.add_column(name, justify="left" if name.startswith("minute") else "right")
        for pi, p in enumerate(s["points"]):
            worst = (si, pi) in marked
            table.add_row(*_row(p), style="bold red" if worst else None)
        table.add_section()
        table.add_row("total", *_row(s["total"])[1:], style="bold")
        console.print(table)
    if marked:
        table = Table(title="worst minutes", title_justify="left")
        for name in ("minute (UTC)", "region", "node", "why"):
            table.add_column(name)
        for (si, pi), why in sorted(
            marked.items(), key=lambda kv: result["series"][kv[0][0]]["points"][kv[0][1]]["t"]
        ):
            s = result["series"][si]
            table.add_row(
                _minute(s["points"][pi]["t"]),
                s["node_region"],
                s["node"],
                "; ".join(why),
                style="red",
            )
        console.print(table)


# -- offline HTML with server-rendered SVG ------------------------------------------------

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def svg_chart(
    title: str,
    xs: Sequence[int],
    lines: Sequence[tuple[str, Sequence[float | None]]],
    unit: str,
    marks: Sequence[int] = (),
    width: int = 760,
    height: int = 220,
) -> str:
    """A line chart as inline SVG: time on x, ``lines`` on y, ``marks`` (x indexes) in red."""
    left, right, top, bottom = 60, 150, 28, 30
    pw, ph = width - left - right, height - top - bottom
    values = [v for _, ys in lines for v in ys if v is not None and math.isfinite(v)]
    lo, hi = 0.0, max(values, default=1.0)
    if hi <= lo:
        hi = lo + 1.0
    t0, t1 = (xs[0], xs[-1]) if xs else (0, 1)
    span = max(t1 - t0, 1)

    def px(t: int) -> float:
        return left + pw * (t - t0) / span if len(xs) > 1 else left + pw / 2

    def py(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
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
    for frac in (0.0, 0.5, 1.0):
        t = int(t0 + span * frac)
        out.append(
            f'<text x="{px(t):.1f}" y="{height - 10}" font-size="10" '
            f'text-anchor="middle">{_minute(t)[11:]}</text>'
        )
    for i in marks:
        if 0 <= i < len(xs):
            out.append(
                f'<line x1="{px(xs[i]):.1f}" x2="{px(xs[i]):.1f}" y1="{top}" '
                f'y2="{top + ph}" stroke="#d62728" stroke-opacity="0.35" '
                'stroke-width="6"/>'
            )
    for n, (name, ys) in enumerate(lines):
        color = _COLORS[n % len(_COLORS)]
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
    out.append("</svg>")
    return "".join(out)


def render_html(
    result: dict[str, Any], marked: dict[tuple[int, int], list[str]], generated: str
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
        f"<p>{esc(_minute(result['from_ms']))} to {esc(_minute(result['to_ms']))} UTC, "
        f"step {result['step_s']} s; generated {esc(generated)}. Worst minutes are shaded red. "
        "Client&#8594;server and server&#8594;client figures are estimates (probe RTT/2).</p>",
    ]
    if not result["series"]:
        parts.append("<p>No data in this range.</p>")
    for si, s in enumerate(result["series"]):
        pts = s["points"]
        xs = [p["t"] for p in pts]
        marks = [pi for pi in range(len(pts)) if (si, pi) in marked]
        parts.append(f"<section><h2>region {esc(s['node_region'])} · node {esc(s['node'])}</h2>")
        parts.append(
            svg_chart(
                "messages per bucket",
                xs,
                [
                    ("sent", [float(p["sent"]) for p in pts]),
                    ("delivered", [float(p["delivered"]) for p in pts]),
                    ("not delivered", [float(p["undelivered"] + p["late"]) for p in pts]),
                ],
                "",
                marks,
            )
        )
        parts.append(
            svg_chart(
                "success rate",
                xs,
                [
                    (
                        "send",
                        [
                            None if p["send_success"] is None else 100 * p["send_success"]
                            for p in pts
                        ],
                    ),
                    (
                        "delivery",
                        [
                            None if p["delivery_success"] is None else 100 * p["delivery_success"]
                            for p in pts
                        ],
                    ),
                ],
                "%",
                marks,
            )
        )
        parts.append(
            svg_chart(
                "stage latency p95",
                xs,
                [
                    (stage, [_p95(p, stage) for p in pts])
                    for stage in ("commit_wait", "commit", "fanout", "queue_wait", "client_ack")
                ],
                " ms",
                marks,
            )
        )
        parts.append(
            svg_chart(
                "network (client probes)",
                xs,
                [
                    ("rtt p50", [p["rtt_ms"]["p50"] for p in pts]),
                    ("rtt p95", [p["rtt_p95_ms"]["p95"] for p in pts]),
                    (
                        "loss p95 ×1000",
                        [
                            None if p["loss"]["p95"] is None else 1000 * p["loss"]["p95"]
                            for p in pts
                        ],
                    ),
                ],
                "",
                marks,
            )
        )
        parts.append(
            "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _HEAD) + "<th>why</th></tr>"
        )
        for pi, p in enumerate(pts):
            why = marked.get((si, pi))
            cls = " class='worst'" if why else ""
            parts.append(
                f"<tr{cls}>"
                + "".join(f"<td>{esc(c)}</td>" for c in _row(p))
                + f"<td>{esc('; '.join(why or []))}</td></tr>"
            )
        parts.append(
            "<tr><th>total</th>"
            + "".join(f"<th>{esc(c)}</th>" for c in _row(s["total"])[1:])
            + "<th></th></tr></table></section>"
        )
    parts.append("</body></html>")
    return "".join(parts)


@quality_app.command()
def report(
    app_id: Annotated[str, typer.Option("--app", help="App id.")],
    from_: Annotated[str, typer.Option("--from", help="Start: now, -1h, epoch, ISO 8601.")] = "-1h",
    to: Annotated[str, typer.Option(help="End (same forms as --from).")] = "now",
    region: Annotated[str | None, typer.Option(help="Only this node region.")] = None,
    node: Annotated[str | None, typer.Option(help="Only this node.")] = None,
    url: Annotated[str, typer.Option(help="Server HTTP base URL.")] = "http://127.0.0.1:8420",
    key: Annotated[
        str | None,
        typer.Option(
            help="App secret or operator key.",
            envvar=["RELAYDESK_QUALITY_KEY", "RELAYDESK_APP_SECRET"],
        ),
    ] = None,
    step: Annotated[int, typer.Option(help="Bucket size in seconds (multiple of 60).")] = 60,
    worst: Annotated[int, typer.Option(help="Worst minutes to highlight per criterion.")] = 3,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
) -> None:
    """Print a table per region and node, worst minutes highlighted; optionally HTML."""
    if not key:
        typer.echo("relaydesk: give --key (app secret or operator key)", err=True)
        raise typer.Exit(2)
    params: dict[str, str | int] = {"from": from_, "to": to, "step": step, "group": "node"}
    if region:
        params["region"] = region
    if node:
        params["node"] = node
    try:
        resp = httpx.get(
            f"{url.rstrip('/')}/api/quality/apps/{app_id}/series",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"relaydesk: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    if resp.status_code != 200:
        try:
            err = resp.json()["error"]
            message = f"{err['name']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            message = resp.text[:300]
        typer.echo(f"relaydesk: {resp.status_code} {message}", err=True)
        raise typer.Exit(1)
    result: dict[str, Any] = resp.json()
    marked = worst_minutes(result["series"], worst)
    console = Console(width=170)
    if not result["series"]:
        console.print(f"no quality data for app {app_id} in this range")
    else:
        render_tables(result, marked, console)
    if html_out is not None:
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        html_out.write_text(render_html(result, marked, generated), encoding="utf-8")
        console.print(f"HTML report written to {html_out}")

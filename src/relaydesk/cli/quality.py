"""``relaydesk quality report``: per-region, per-node quality tables and an offline HTML report.

The command reads ``/api/quality/apps/<app>/series`` (grouped by region and
node) with the app's secret or the operator key, prints one table per region
and node with the worst minutes highlighted, and with ``--html`` writes a
self-contained page: inline SVG charts (``telemetry/charts.py``, shared with the
console's Network quality page; no JavaScript, no network), so the file opens offline
and can be attached to a ticket.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from relaydesk.cli.api import call_api
from relaydesk.cli.endpoints import API_ENV, DEFAULT_API_URL
from relaydesk.telemetry.charts import TABLE_HEAD, render_html, svg_chart, table_row
from relaydesk.telemetry.charts import fmt_minute as _minute
from relaydesk.telemetry.charts import p95 as _p95

__all__ = ["quality_app", "render_html", "svg_chart", "worst_minutes"]

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
    return float(point["unexpected_disconnects"])


#: A minute is "worst" only when it stands out: at least ``_STANDOUT`` times the median
#: of the other minutes and past an absolute floor per criterion (1 point of success
#: rate, 5 ms of latency, 50 ms RTT or 0.5 % loss, 2 disconnects), so a uniformly poor
#: or a very short range shades nothing instead of every minute.
_STANDOUT = 2.0
_FLOOR = {"delivery": 0.01, "send": 0.01, "latency": 5.0, "network": 0.5, "disconnects": 2.0}


def _stands_out(value: float, others: list[float], criterion: str) -> bool:
    if not others or value < _FLOOR[criterion]:
        return False
    return value >= _STANDOUT * statistics.median(others)


def worst_minutes(series: Sequence[dict[str, Any]], n: int) -> dict[tuple[int, int], list[str]]:
    """(series index, point index) -> the criteria for which it is among the ``n`` worst
    and stands out from the other minutes (see ``_STANDOUT``)."""
    marked: dict[tuple[int, int], list[str]] = {}
    for criterion, label in _CRITERIA:
        scored = []
        for si, s in enumerate(series):
            for pi, p in enumerate(s["points"]):
                b = _badness(p, criterion)
                if b is not None:
                    scored.append((b, si, pi))
        scored.sort(key=lambda x: -x[0])
        for k, (b, si, pi) in enumerate(scored[:n]):
            others = [o[0] for j, o in enumerate(scored) if j != k]
            if _stands_out(b, others, criterion):
                marked.setdefault((si, pi), []).append(label)
    return marked


def render_tables(
    result: dict[str, Any], marked: dict[tuple[int, int], list[str]], console: Console
) -> None:
    for si, s in enumerate(result["series"]):
        table = Table(title=f"region {s['node_region']} · node {s['node']}", title_justify="left")
        for name in TABLE_HEAD:
            table.add_column(name, justify="left" if name.startswith("minute") else "right")
        for pi, p in enumerate(s["points"]):
            worst = (si, pi) in marked
            table.add_row(*table_row(p), style="bold red" if worst else None)
        table.add_section()
        table.add_row("total", *table_row(s["total"])[1:], style="bold")
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


@quality_app.command()
def report(
    app_id: Annotated[str, typer.Option("--app", help="App id.")],
    from_: Annotated[str, typer.Option("--from", help="Start: now, -1h, epoch, ISO 8601.")] = "-1h",
    to: Annotated[str, typer.Option(help="End (same forms as --from).")] = "now",
    region: Annotated[str | None, typer.Option(help="Only this node region.")] = None,
    node: Annotated[str | None, typer.Option(help="Only this node.")] = None,
    url: Annotated[
        str,
        typer.Option(
            help="Node HTTP base URL (RELAYDESK_API_URL, else RELAYDESK_URL).", envvar=API_ENV
        ),
    ] = DEFAULT_API_URL,
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
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the API's series (and the worst minutes) as JSON.")
    ] = False,
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
    path = f"/api/quality/apps/{app_id}/series"
    result: dict[str, Any] = call_api("GET", url, path, key, params=params).json()
    marked = worst_minutes(result["series"], worst)
    console = Console(width=170, stderr=json_out)  # stdout carries only the JSON then
    if json_out:
        worst_list = [
            {
                "t": result["series"][si]["points"][pi]["t"],
                "node": result["series"][si]["node"],
                "node_region": result["series"][si]["node_region"],
                "why": why,
            }
            for (si, pi), why in sorted(marked.items())
        ]
        typer.echo(json.dumps({**result, "worst": worst_list}, indent=2))
    elif not result["series"]:
        console.print(f"no quality data for app {app_id} in this range")
    else:
        render_tables(result, marked, console)
    if html_out is not None:
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        html_out.write_text(render_html(result, marked, generated), encoding="utf-8")
        console.print(f"HTML report written to {html_out}")

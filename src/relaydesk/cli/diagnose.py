"""``relaydesk diagnose``: ask a node where the problem is, and print the findings.

Calls ``POST /api/diagnosis`` with an agent's desk API key and prints the ranked findings
(layer, confidence, title, evidence, action, article) or, with ``--json``, the raw answer.
Exit status: 0 when no finding reaches the low-confidence threshold, 1 when one does, 2 on
a usage or connection error, so scripts can alert on it.
"""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from relaydesk.cli.api import call_api


def render(body: dict[str, Any], console: Console) -> None:
    """Print a diagnosis answer as tables."""
    scope = body["app"] + (f" / {body['region']}" if body.get("region") else "")
    console.print(
        f"[bold]diagnosis[/] {scope}  {body['window_start']} → {body['window_end']}  "
        f"({body['minutes']} aggregate rows, {body['connections']} connections, "
        f"{body['traces']} traces, {body['elapsed_ms']:.0f} ms)"
    )
    console.print(body["summary"])
    threshold = body["low_confidence_threshold"]
    for i, f in enumerate(body["findings"], 1):
        style = "bold" if f["confidence"] >= threshold else "dim"
        console.print(
            f"\n[{style}]{i}. [{f['layer']}] {f['title']}  (confidence {f['confidence']:.2f})[/]"
        )
        table = Table("metric", "value", "baseline", "window", "node", "region", "note")
        for e in f["evidence"]:
            table.add_row(
                str(e["metric"]),
                f"{e['value']}{e.get('unit') or ''}",
                "" if e["baseline"] is None else f"{e['baseline']}{e.get('unit') or ''}",
                f"{e['window_start'][11:16]}–{e['window_end'][11:16]}",
                e.get("node") or "",
                e.get("region") or "",
                e.get("note") or "",
            )
        console.print(table)
        console.print(f"action: {f['action']}")
        console.print(f"article: /api/kb/articles/{f['article_slug']}")
    if not body["findings"]:
        console.print("no findings")


def diagnose(
    app: Annotated[str, typer.Option("--app", help="App id.")],
    from_: Annotated[
        str, typer.Option("--from", help="Start: now, -15m, -2h, epoch s/ms, ISO 8601.")
    ] = "-15m",
    to: Annotated[str, typer.Option("--to", help="End (exclusive), same syntax.")] = "now",
    region: Annotated[str | None, typer.Option(help="Region label to focus on.")] = None,
    url: Annotated[
        str, typer.Option(help="Node base URL.", envvar="RELAYDESK_URL")
    ] = "http://127.0.0.1:8420",
    key: Annotated[str, typer.Option(help="Agent desk API key.", envvar="RELAYDESK_DESK_KEY")] = "",
    json: Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")] = False,
    symptom: Annotated[
        str, typer.Option(help="loss, delay, send_failures, disconnects or other.")
    ] = "other",
) -> None:
    """Locate a problem: network, client, server configuration or a server defect."""
    payload: dict[str, Any] = {"app": app, "from": from_, "to": to, "symptom": symptom}
    if region:
        payload["region"] = region
    # Exit 1 means "found a problem" here, so a failed call exits 2.
    body = call_api("POST", url, "/api/diagnosis", key, failure_exit=2, json=payload).json()
    if json:
        typer.echo(jsonlib.dumps(body, indent=2))
    else:
        render(body, Console())
    confident = [f for f in body["findings"] if f["confidence"] >= body["low_confidence_threshold"]]
    raise typer.Exit(1 if confident else 0)

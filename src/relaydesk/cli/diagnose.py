"""``relaydesk diagnose``: ask a node where the problem is, and print the findings.

Calls ``POST /api/diagnosis`` with an agent's desk API key and prints the ranked findings
(layer, confidence, title, evidence, action, article) and the rejected hypotheses or,
with ``--json``, the raw answer.  ``--doctor-report FILE`` (repeatable) adds a device's
``relaydesk doctor --json`` report as client evidence.
Exit status: 0 when no finding reaches the low-confidence threshold, 1 when one does, 2 on
a usage or connection error, 3 when the node has no data for the app and window ("no
data" is not "no problem"), so scripts can alert on it.
"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any, Final

import httpx
import msgspec
import typer
from rich.console import Console
from rich.table import Table

from relaydesk.cli.api import call_api, error_text, fail
from relaydesk.cli.endpoints import API_ENV, DEFAULT_API_URL
from relaydesk.desk.diagnosis.client_evidence import client_report

#: Exit status when the node recorded nothing for the app in the window.
NO_DATA_EXIT: Final = 3


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
    public = body.get("public_threshold", threshold)
    for i, f in enumerate(body["findings"], 1):
        style = "bold" if f["confidence"] >= threshold else "dim"
        shown = "shown to the customer" if f["confidence"] >= public else "internal"
        console.print(
            f"\n[{style}]{i}. [{f['layer']}] {f['title']}  "
            f"(confidence {f['confidence']:.2f}, {shown})[/]"
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
        console.print(f"article: /console/kb/{f['article_slug']}")
    if not any(f["confidence"] >= threshold for f in body["findings"]):
        console.print(f"no finding at or above the threshold {threshold:.2f}")
    rejected = body.get("rejected") or []
    if rejected:
        console.print("\n[dim]rejected hypotheses:[/]")
        for r in rejected:
            about = ", ".join(x for x in (r.get("node"), r.get("device")) if x)
            console.print(
                f"[dim]- {r['hypothesis']}{' [' + about + ']' if about else ''}: "
                f"{r['reason']} ({r['rule']})[/]"
            )


def _reports(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        try:
            doc = jsonlib.loads(path.read_text())
        except (OSError, ValueError) as exc:
            fail(2, f"cannot read the doctor report {path}: {exc}")
        report = client_report(doc) if isinstance(doc, dict) else None
        if report is None:
            fail(2, f"{path} is not a doctor report (relaydesk doctor --json)")
        fields: dict[str, Any] = msgspec.to_builtins(report)
        out.append({k: v for k, v in fields.items() if v not in (None, [], "")})
    return out


def _no_data(response: httpx.Response) -> bool:
    return response.status_code == 404 and "diagnosis.no_data" in response.text


def diagnose(
    app: Annotated[str, typer.Option("--app", help="App id.")],
    from_: Annotated[
        str, typer.Option("--from", help="Start: now, -15m, -2h, epoch s/ms, ISO 8601.")
    ] = "-15m",
    to: Annotated[str, typer.Option("--to", help="End (exclusive), same syntax.")] = "now",
    region: Annotated[str | None, typer.Option(help="Region label to focus on.")] = None,
    url: Annotated[
        str,
        typer.Option(
            help="Node HTTP base URL (RELAYDESK_API_URL, else RELAYDESK_URL).", envvar=API_ENV
        ),
    ] = DEFAULT_API_URL,
    key: Annotated[str, typer.Option(help="Agent desk API key.", envvar="RELAYDESK_DESK_KEY")] = "",
    json: Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")] = False,
    symptom: Annotated[
        str, typer.Option(help="loss, delay, send_failures, disconnects or other.")
    ] = "other",
    doctor_report: Annotated[
        list[Path] | None,
        typer.Option(help="A device's `relaydesk doctor --json` report (repeatable)."),
    ] = None,
) -> None:
    """Locate a problem: network, client, server configuration or a server defect."""
    if not key:
        fail(2, "give --key (an agent's desk API key) or set RELAYDESK_DESK_KEY")
    payload: dict[str, Any] = {"app": app, "from": from_, "to": to, "symptom": symptom}
    if region:
        payload["region"] = region
    if doctor_report:
        payload["client_reports"] = _reports(doctor_report)
    # exit 1 means "found a problem" here, so a failed call exits 2
    response = call_api(
        "POST", url, "/api/diagnosis", key, failure_exit=2, json=payload, passthrough=_no_data
    )
    if response.status_code == 404:
        fail(NO_DATA_EXIT, error_text(response))
    body = response.json()
    if json:
        typer.echo(jsonlib.dumps(body, indent=2))
    else:
        render(body, Console())
    confident = [f for f in body["findings"] if f["confidence"] >= body["low_confidence_threshold"]]
    raise typer.Exit(1 if confident else 0)

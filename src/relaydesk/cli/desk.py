"""``relaydesk desk``: work the support desk of a running server from the terminal.

Every command except ``sla explain`` talks to the server's ``/api/desk`` API over HTTP
(``--url``, ``--api-key`` or ``RELAYDESK_API_KEY``).  ``sla explain`` is local and pure:
it runs the SLA engine on a case file and prints the arithmetic.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from relaydesk.cli.api import call_api, fail
from relaydesk.cli.endpoints import API_ENV, DEFAULT_API_URL
from relaydesk.desk.sla import SlaConfigError, explain_case
from relaydesk.doctor.attach import AttachError, load_report, with_report
from relaydesk.telemetry.times import parse_time

desk_app = typer.Typer(
    help="Support desk: tickets, the agent queue, SLA reports.", no_args_is_help=True
)
sla_app = typer.Typer(help="SLA tools.", no_args_is_help=True)
desk_app.add_typer(sla_app, name="sla")

Url = Annotated[
    str,
    typer.Option(
        "--url", help="Node HTTP base URL (RELAYDESK_API_URL, else RELAYDESK_URL).", envvar=API_ENV
    ),
]
ApiKey = Annotated[
    str,
    typer.Option("--api-key", envvar="RELAYDESK_API_KEY", help="Desk API key (agent or customer)."),
]
DEFAULT_URL = DEFAULT_API_URL


def _call(method: str, url: str, api_key: str, path: str, **kwargs: Any) -> httpx.Response:
    """One desk API call; a 4xx/5xx prints the desk's error code and exits with status 1."""
    if not api_key:
        _fail("auth.missing_key", "pass --api-key or set RELAYDESK_API_KEY")
    return call_api(method, url, "/api/desk" + path, api_key, **kwargs)


def _fail(code: str, message: str) -> NoReturn:
    fail(1, f"error {code}: {message}")


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def format_duration(seconds: float | None) -> str:
    """Signed compact duration for the queue: ``1d 2h``, ``45m``, ``-5m`` (overdue)."""
    if seconds is None:
        return "paused"
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes}m"
    else:
        text = f"{minutes}m"
    return sign + text


def _ticket_table(
    title: str, tickets: list[dict[str, Any]], ttb: list[float | None] | None
) -> Table:
    table = Table(title=title)
    for col in ("id", "pri", "status", "sla", "subject", "org", "assignee", "due (UTC)"):
        table.add_column(col)
    if ttb is not None:
        table.add_column("time to breach", justify="right")
    for i, t in enumerate(tickets):
        row = [
            str(t["id"]),
            t["priority"],
            t["status"],
            t["sla_state"],
            t["subject"][:60],
            t["organisation_id"],
            t["assignee_id"] or "-",
            (t["due_at"] or "-")[:16].replace("T", " "),
        ]
        if ttb is not None:
            value = ttb[i]
            text = format_duration(value)
            row.append(f"[red]{text}[/red]" if value is not None and value < 0 else text)
        table.add_row(*row)
    return table


def _with_doctor_report(description: str, path: Path) -> str:
    try:
        return with_report(description, load_report(path))
    except AttachError as exc:
        fail(2, str(exc))


@desk_app.command()
def create(
    subject: Annotated[str, typer.Option(help="One-line summary (max 200 characters).")],
    api_key: ApiKey = "",
    url: Url = DEFAULT_URL,
    priority: Annotated[str, typer.Option(help="P0, P1, P2 or P3.")] = "P2",
    description: str = "",
    requester: Annotated[str | None, typer.Option(help="Contact id (agents only).")] = None,
    skill: Annotated[list[str] | None, typer.Option(help="Skill needed (repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    app_id: Annotated[str | None, typer.Option("--app", help="App the problem concerns.")] = None,
    region: str | None = None,
    window_start: Annotated[
        str | None, typer.Option(help="Problem window start, ISO 8601 with offset.")
    ] = None,
    window_end: Annotated[
        str | None, typer.Option(help="Problem window end, ISO 8601 with offset.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
    attach_doctor: Annotated[
        Path | None,
        typer.Option(help="A `relaydesk doctor --json` report to file with the ticket."),
    ] = None,
) -> None:
    """Open a ticket."""
    if attach_doctor is not None:  # the acknowledgement diagnoses with the device's evidence
        description = _with_doctor_report(description, attach_doctor)
    body: dict[str, Any] = {"subject": subject, "priority": priority, "description": description}
    for key, value in (
        ("requester_id", requester),
        ("app_id", app_id),
        ("region", region),
        ("window_start", window_start),
        ("window_end", window_end),
        ("skills", skill),
        ("tags", tag),
    ):
        if value:
            body[key] = value
    ticket = _call("POST", url, api_key, "/tickets", json=body).json()
    if json_out:
        _print_json(ticket)
    else:
        typer.echo(f"ticket {ticket['id']} {ticket['priority']} {ticket['status']}: {subject}")


@desk_app.command("list")
def list_tickets(
    api_key: ApiKey = "",
    url: Url = DEFAULT_URL,
    status: str | None = None,
    priority: str | None = None,
    assignee: str | None = None,
    limit: int = 50,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List tickets, newest first."""
    params = {
        k: v
        for k, v in (("status", status), ("priority", priority), ("assignee", assignee))
        if v is not None
    }
    params["limit"] = str(limit)
    data = _call("GET", url, api_key, "/tickets", params=params).json()
    if json_out:
        _print_json(data)
    else:
        Console().print(_ticket_table("tickets", data["tickets"], None))


@desk_app.command()
def queue(
    api_key: ApiKey = "",
    url: Url = DEFAULT_URL,
    mine: Annotated[bool, typer.Option(help="Only tickets assigned to me.")] = False,
    limit: int = 50,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The agent queue, most urgent first, with time to breach."""
    params = {"limit": str(limit), "mine": "true" if mine else "false"}
    data = _call("GET", url, api_key, "/queue", params=params).json()
    if json_out:
        _print_json(data)
        return
    entries = data["entries"]
    Console(width=160).print(
        _ticket_table(
            f"queue at {data['now'][:16].replace('T', ' ')} UTC",
            [e["ticket"] for e in entries],
            [e["time_to_breach_s"] for e in entries],
        )
    )


@desk_app.command()
def comment(
    ticket_id: int,
    body: str,
    api_key: ApiKey = "",
    url: Url = DEFAULT_URL,
    internal: Annotated[bool, typer.Option(help="Internal note (agents only).")] = False,
) -> None:
    """Comment on a ticket (public unless --internal)."""
    c = _call(
        "POST",
        url,
        api_key,
        f"/tickets/{ticket_id}/comments",
        json={"body": body, "public": not internal},
    ).json()
    typer.echo(
        f"comment {c['id']} on ticket {ticket_id} ({'public' if c['public'] else 'internal'})"
    )


@desk_app.command()
def status(ticket_id: int, new_status: str, api_key: ApiKey = "", url: Url = DEFAULT_URL) -> None:
    """Change a ticket's status (new, open, pending, on_hold, solved, closed)."""
    t = _call("PUT", url, api_key, f"/tickets/{ticket_id}/status", json={"status": new_status})
    typer.echo(f"ticket {ticket_id} is now {t.json()['status']}")


@desk_app.command()
def report(
    start: Annotated[
        str,
        typer.Option("--from", help="Start (inclusive): YYYY-MM-DD, ISO 8601, now, -30d, -12h."),
    ] = "-30d",
    end: Annotated[str, typer.Option("--to", help="End (exclusive), same forms.")] = "now",
    api_key: ApiKey = "",
    url: Url = DEFAULT_URL,
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    table: Annotated[str, typer.Option(help="CSV table: attainment, percentiles, breaches.")] = (
        "attainment"
    ),
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """SLA report: attainment per priority and month, percentiles, breaches (last 30 days)."""
    if json_out:
        fmt = "json"
    now_ms = int(time.time() * 1000)
    params = {
        "from": _instant("--from", start, now_ms),
        "to": _instant("--to", end, now_ms),
        "format": fmt,
        "table": table,
    }
    response = _call("GET", url, api_key, "/reports/sla", params=params)
    if fmt == "csv":
        sys.stdout.write(response.text)
    else:
        _print_json(response.json())


_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _instant(flag: str, value: str, now_ms: int) -> str:
    """A report bound as the API takes it: a day as it is, any other form (``-30d``,
    ``now``, epoch, ISO 8601) as an ISO 8601 instant in UTC."""
    if _DAY.match(value.strip()):
        return value.strip()
    try:
        ms = parse_time(value, now_ms)
    except ValueError as exc:
        fail(2, f"{flag}: {exc}")
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


@sla_app.command("explain")
def sla_explain(
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input", help='Case file (docs/sla.md), plain or wrapped as {"case", "expect"}.'
        ),
    ] = None,
    ticket: Annotated[
        int | None,
        typer.Option(help="Fetch ticket ID's case file from the server and explain it."),
    ] = None,
    save: Annotated[
        Path | None, typer.Option(help="With --ticket: also write the fetched case file here.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the explanation as JSON.")
    ] = False,
    api_key: ApiKey = "",
    url: Url = DEFAULT_URL,
) -> None:
    """Explain an SLA case locally: targets, states, breach times and the arithmetic.

    ``--input`` reads a case file (the test suite's ``{"case": ..., "expect": ...}`` files
    as they are); ``--ticket`` fetches a ticket's case file from the server (its
    organisation, plan and the policy version applied) and replays it here.
    """
    if (input_path is None) == (ticket is None):
        _fail("cli.usage", "give exactly one of --input or --ticket")
    if ticket is not None:
        raw = _call("GET", url, api_key, f"/tickets/{ticket}/sla/case").content
        if save is not None:
            try:
                save.write_bytes(raw)
            except OSError as exc:
                _fail("cli.unwritable", f"cannot write {save}: {exc}")
    else:
        assert input_path is not None
        try:
            raw = input_path.read_bytes()
        except OSError as exc:
            _fail("cli.unreadable", f"cannot read {input_path}: {exc}")
    try:
        explanation = explain_case(raw)
    except SlaConfigError as exc:
        _fail(exc.code, exc.message)
    if json_out:
        _print_json(explanation.to_dict())
    else:
        sys.stdout.write(explanation.to_text())

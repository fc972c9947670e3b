"""``relaydesk doctor``: run the client-side checklist and optionally attach it to a ticket.

Prints a pass/warn/fail table (or the JSON report with ``--json``) and exits 0 when
no check failed, 1 otherwise (also when ``--attach`` could not post), 2 on bad usage.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from relaydesk.cli.endpoints import DEFAULT_WS_URL, WS_ENV, EndpointError, ws_url
from relaydesk.doctor import (
    CHECKS,
    AttachError,
    CheckResult,
    DoctorOptions,
    DoctorReport,
    SdkConfig,
    attach_report,
    run_doctor,
)
from relaydesk.doctor.report import TITLES
from relaydesk.protocol.tokens import mint_token

DEFAULT_URL = DEFAULT_WS_URL
_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def _fail_usage(message: str) -> typer.Exit:
    typer.echo(f"relaydesk: {message}", err=True)
    return typer.Exit(2)


def _load_sdk_config(path: Path | None) -> SdkConfig:
    if path is None:
        return SdkConfig()
    try:
        raw = path.read_bytes()
        if path.suffix == ".toml":
            return msgspec.convert(tomllib.loads(raw.decode()), SdkConfig)
        return msgspec.json.decode(raw, type=SdkConfig)
    except (OSError, ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _fail_usage(f"cannot read SDK config {path}: {exc}") from None


def _desk_url(url: str) -> str:
    """The HTTP base of the node behind a gateway URL (ws -> http, path dropped)."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def report_table(report: DoctorReport) -> Table:
    """The human form of a report."""
    table = Table(title=f"relaydesk doctor: {report.url}", title_justify="left")
    table.add_column("check")
    table.add_column("status")
    table.add_column("reason", overflow="fold")
    for r in report.checks:
        table.add_row(
            TITLES.get(r.name, r.name), f"[{_STYLE[r.status]}]{r.status.upper()}[/]", r.reason
        )
    return table


def doctor(
    url: Annotated[
        str,
        typer.Option(
            help="Gateway WebSocket URL (RELAYDESK_WS_URL, else RELAYDESK_URL; http:// works too).",
            envvar=WS_ENV,
        ),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            help="Connection token (else minted from --app/--secret/--user).",
            envvar="RELAYDESK_TOKEN",
        ),
    ] = None,
    app_id: Annotated[str | None, typer.Option("--app", help="App id, to mint a dev token.")] = (
        None
    ),
    secret: Annotated[
        str | None,
        typer.Option(help="App secret, to mint a dev token.", envvar="RELAYDESK_APP_SECRET"),
    ] = None,
    user: Annotated[str | None, typer.Option(help="User id, to mint a dev token.")] = None,
    device: Annotated[str, typer.Option(help="Device id the doctor logs in as.")] = "doctor",
    probes: Annotated[int, typer.Option(min=1, max=1000, help="Ping round trips.")] = 20,
    probe_timeout: Annotated[
        float, typer.Option(min=0.05, max=60, help="Seconds a ping may take.")
    ] = 2.0,
    sdk_config: Annotated[
        Path | None,
        typer.Option(help="Your client settings (JSON or .toml) to lint; SDK defaults if absent."),
    ] = None,
    directory: Annotated[
        str | None,
        typer.Option(help="HTTP URL of any node: show its edge ranking and RTT to each node."),
    ] = None,
    region: Annotated[str, typer.Option(help="Client region for --directory.")] = "",
    json_output: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    attach: Annotated[
        str | None, typer.Option("--attach", metavar="TICKET_ID", help="Post to this ticket.")
    ] = None,
    desk_url: Annotated[
        str | None, typer.Option(help="Desk base URL (default: the gateway's node).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="RELAYDESK_API_KEY", help="Desk API key for --attach."),
    ] = None,
) -> None:
    """Check connectivity, TLS, login, clock skew, RTT/loss, a round trip and SDK settings."""
    try:
        url = ws_url(url)
    except EndpointError as exc:
        raise _fail_usage(str(exc)) from None
    if not token:
        if not (app_id and secret and user):
            raise _fail_usage("give --token, or --app, --secret and --user")
        try:
            token = mint_token(app_id, secret, user, now=time.time(), ttl_s=3600, device=device)
        except ValueError as exc:
            raise _fail_usage(str(exc)) from None
    ticket: int | None = None
    if attach is not None:
        if not attach.isdigit() or int(attach) == 0:
            raise _fail_usage(f"--attach takes a ticket number, got {attach!r}")
        if not api_key:
            raise _fail_usage("--attach needs --api-key (or RELAYDESK_API_KEY)")
        ticket = int(attach)
    options = DoctorOptions(
        probes=probes,
        probe_timeout_s=probe_timeout,
        device=device,
        sdk_config=_load_sdk_config(sdk_config),
        directory=directory,
        region=region,
    )

    err = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=len(CHECKS))

        def on_progress(name: str, result: CheckResult | None) -> None:
            if result is None:
                progress.update(task, description=f"checking {TITLES.get(name, name)}")
            else:
                progress.advance(task)

        try:
            report = asyncio.run(run_doctor(url, token, options=options, on_progress=on_progress))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    if json_output:
        typer.echo(msgspec.json.format(msgspec.json.encode(report)).decode())
    else:
        Console(width=120).print(report_table(report))
    exit_code = 0 if report.ok else 1
    if ticket is not None and api_key:
        base = desk_url or _desk_url(url)
        try:
            comment = attach_report(base, api_key, ticket, report)
            err.print(f"attached to ticket {ticket} as comment {comment.get('id', '?')}")
        except AttachError as exc:
            err.print(f"[bold red]not attached:[/] {exc}")
            exit_code = 1
    raise typer.Exit(exit_code)

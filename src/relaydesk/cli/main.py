"""The ``relaydesk`` command: serve, token, send, tail, desk."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from relaydesk.config import ConfigError, Settings, load_settings
from relaydesk.storage.engine import redact_url

app = typer.Typer(
    name="relaydesk",
    help="Self-hosted real-time messaging with an SLA-tiered support desk.",
    no_args_is_help=True,
    add_completion=False,
    # -h as well as --help, on every command and group (click passes it down).
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from relaydesk import __version__

        typer.echo(f"relaydesk {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Self-hosted real-time messaging with an SLA-tiered support desk.

    WebSocket commands (send, tail, doctor) find the node in RELAYDESK_WS_URL, HTTP
    commands (desk, diagnose, quality, node) in RELAYDESK_API_URL; RELAYDESK_URL, in
    either form, serves both when those are unset. --url overrides them.
    """


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port for WebSocket and HTTP.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where the SQLite database lives.")] = None,
    config: Annotated[str | None, typer.Option(help="TOML settings file.")] = None,
    node_id: Annotated[str | None, typer.Option(help="This node's id (telemetry label).")] = None,
    region: Annotated[str | None, typer.Option(help="This node's region label.")] = None,
    demo: Annotated[bool, typer.Option(help="Seed the demo app, channel and desk data.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run a relaydesk node: gateway, HTTP API and desk on one port."""
    import uvicorn

    from relaydesk.server.app import RelaydeskServer
    from relaydesk.server.listener import connection_budget, listener_config, raise_open_file_limit

    server_overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "node_id": node_id,
            "region": region,
        }.items()
        if v is not None
    }
    overrides: dict[str, Any] = {"server": server_overrides}
    if demo:
        overrides["demo"] = True
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Before the listener sizes its connection cap from it (server/listener.py).
    open_files, _ = raise_open_file_limit()
    node = RelaydeskServer(settings)
    uvicorn_config = listener_config(node, settings, log_level=log_level)
    _print_banner(settings)
    budget = connection_budget(settings.http, open_files)
    typer.echo(f"  connections   up to {budget or 'unlimited'} (open-file limit {open_files})")

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn closes WebSockets with 1012 before the lifespan shutdown runs;
            # tell our clients SERVER_SHUTDOWN (and answer in-flight publishes) first.
            await node.gateway.aclose()
            await super().shutdown(sockets)

    _Server(uvicorn_config).run()


def _print_banner(settings: Settings) -> None:
    base = settings.public_url
    ws = base.replace("http", "ws", 1) + "/v1/ws"
    lines = [
        f"relaydesk node {settings.server.node_id} ({settings.server.region})",
        f"  HTTP API      {base}/v1   (health {base}/healthz)",
        f"  WebSocket     {ws}",
        f"  Console       {base}/console   (agents and customers sign in here)",
        f"  Desk API      {base}/api/desk",
        f"  OpenAPI       {base}/api/docs",
        f"  database      {redact_url(settings.storage_url)}",
    ]
    cluster = settings.cluster
    if cluster.bus:
        role = {
            True: "leader: runs the desk's background jobs",
            False: "follower",
            None: "leader elected by lease",
        }[cluster.leader]
        bus = urlsplit(cluster.bus)  # no credentials: NATS takes a token as user info
        where = f"{bus.scheme}://{bus.hostname}:{bus.port or 4222}"
        lines.append(f"  cluster       {cluster.name} on {where} ({role})")
    if settings.demo:
        from relaydesk.server.storage_setup import DEMO_APP, DEMO_SECRET

        exe = sys.argv[0] if sys.argv[0].endswith("relaydesk") else "relaydesk"
        lines += [
            f"  demo app      {DEMO_APP} / secret {DEMO_SECRET}",
            f"  try:          {exe} tail --app demo --secret {DEMO_SECRET} --user bob --url {ws}",
            f"                {exe} send --app demo --secret {DEMO_SECRET} --user alice"
            f" --to user:bob hello --url {ws}",
        ]
    typer.echo("\n".join(lines), err=True)


@app.command()
def token(
    app_id: Annotated[str, typer.Option("--app", help="App id.")],
    secret: Annotated[str, typer.Option(help="App secret.", envvar="RELAYDESK_APP_SECRET")],
    user: Annotated[str, typer.Option(help="User id.")],
    device: Annotated[str | None, typer.Option(help="Pin the token to this device.")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
    channel: Annotated[
        list[str] | None, typer.Option(help="Channel grant NAME[:owner|member]; '*' for all.")
    ] = None,
) -> None:
    """Mint a development token signed with the app secret."""
    from relaydesk.protocol.tokens import mint_token

    grants: dict[str, str] = {}
    for item in channel or []:
        name, _, role = item.partition(":")
        grants[name] = role or "member"
    try:
        typer.echo(
            mint_token(
                app_id, secret, user, now=time.time(), ttl_s=ttl, device=device, channels=grants
            )
        )
    except ValueError as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def config_check(path: Annotated[Path, typer.Argument(help="TOML settings file.")]) -> None:
    """Validate a settings file and print the effective settings as JSON."""
    import msgspec

    try:
        settings = load_settings(str(path))
    except ConfigError as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(msgspec.to_builtins(settings), indent=2))


#: Commands in their own modules: name -> (module, attribute, group?).  ``main`` imports
#: only the one invoked (a desk command need not load the SDK, nor ``send`` the desk),
#: which keeps a failing command's answer quick; help and unknown names load them all.
_OPTIONAL: dict[str, tuple[str, str, bool]] = {
    "send": ("relaydesk.cli.chat", "send", False),
    "tail": ("relaydesk.cli.chat", "tail", False),
    "desk": ("relaydesk.cli.desk", "desk_app", True),
    "admin": ("relaydesk.cli.admin", "admin_app", True),
    "backup": ("relaydesk.cli.backup", "backup", False),
    "restore": ("relaydesk.cli.backup", "restore", False),
    "doctor": ("relaydesk.cli.doctor", "doctor", False),
    "diagnose": ("relaydesk.cli.diagnose", "diagnose", False),
    "netsim": ("relaydesk.cli.netsim", "netsim", False),
    "quality": ("relaydesk.cli.quality", "quality_app", True),
    "node": ("relaydesk.cli.node", "node_app", True),
    "e2ee": ("relaydesk.cli.e2ee", "e2ee_app", True),
}


def _register_optional(only: str | None = None) -> None:
    """Add the commands of ``_OPTIONAL`` (just ``only`` when it names one) to ``app``."""
    import importlib

    if only in ("serve", "token", "config-check"):
        return  # defined here
    names = [only] if only in _OPTIONAL else list(_OPTIONAL)
    for name in names:
        module, attr, group = _OPTIONAL[name]
        target = getattr(importlib.import_module(module), attr)
        if group:
            app.add_typer(target, name=name)
        else:
            app.command(name=name)(target)


def main() -> None:
    invoked = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    _register_optional(invoked)
    app()

"""``relaydesk node``: list the cluster's nodes, drain one, undrain it.

Calls ``/v1/nodes`` with the operator key (``[telemetry] operator_key``).  A drain takes
effect on the node within one registry heartbeat (``[cluster] node_heartbeat_ms``): it
refuses new logins and tells its clients to move (docs/operations.md "Draining a node").
"""

from __future__ import annotations

import json as jsonlib
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from relaydesk.cli.api import call_api
from relaydesk.cli.endpoints import API_ENV, DEFAULT_API_URL

node_app = typer.Typer(help="The cluster's nodes: list, drain, undrain.", no_args_is_help=True)

Url = Annotated[
    str,
    typer.Option(
        help="HTTP base URL of any node (RELAYDESK_API_URL, else RELAYDESK_URL).", envvar=API_ENV
    ),
]
Key = Annotated[str, typer.Option(help="Operator key.", envvar="RELAYDESK_OPERATOR_KEY")]
Json = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]
DEFAULT_URL = DEFAULT_API_URL


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def render_nodes(nodes: list[dict[str, Any]], console: Console) -> None:
    table = Table("node", "region", "url", "state", "connections", "cpu", "heartbeat (UTC)")
    for n in nodes:
        state = "draining" if n["draining"] else "up"
        if not n["alive"]:
            state += ", silent"
        if n["drain_reason"]:
            state += f" ({n['drain_reason']})"
        capacity = f" / {n['capacity']}" if n["capacity"] else ""
        table.add_row(
            n["node"],
            n["region"],
            n["url"],
            state,
            f"{n['connections']}{capacity}",
            f"{n['cpu']:.0%}",
            _when(n["heartbeat_ms"]),
        )
    console.print(table)


@node_app.command("list")
def list_nodes(url: Url = DEFAULT_URL, key: Key = "", json: Json = False) -> None:
    """Every registered node with its load and drain state."""
    nodes = call_api("GET", url, "/v1/nodes", key).json()
    if json:
        typer.echo(jsonlib.dumps(nodes, indent=2))
    else:
        render_nodes(nodes, Console())


@node_app.command()
def drain(
    node: Annotated[str, typer.Argument(help="Node id, as `relaydesk node list` shows it.")],
    reason: Annotated[str, typer.Option(help="Why; shown to operators and clients.")] = "",
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    """Stop new logins on NODE and move its clients to other nodes."""
    body = call_api("POST", url, f"/v1/nodes/{node}/drain", key, json={"reason": reason}).json()
    typer.echo(f"{body['node']} draining: {body['reason']}")


@node_app.command()
def undrain(
    node: Annotated[str, typer.Argument(help="Node id.")],
    url: Url = DEFAULT_URL,
    key: Key = "",
) -> None:
    """Let NODE take logins again."""
    body = call_api("POST", url, f"/v1/nodes/{node}/undrain", key).json()
    typer.echo(f"{body['node']} taking logins again")

"""CLI conventions (issue 17 item 5): --version, -h, one cause per connection error,
separate WebSocket and HTTP variables, --json on read commands, no silent ports."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from relaydesk import __version__
from relaydesk.cli.endpoints import EndpointError, api_url, ws_url
from relaydesk.cli.main import _register_optional, app
from relaydesk.server.storage_setup import DEMO_SECRET

_register_optional()
runner = CliRunner()
CLI: Any = get_command(app)


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def test_version_and_short_help() -> None:
    r = invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"relaydesk {__version__}"
    for args in (["-h"], ["desk", "-h"], ["desk", "queue", "-h"], ["admin", "key", "list", "-h"]):
        r = invoke(*args)
        assert r.exit_code == 0 and "Usage:" in r.output, args


@pytest.mark.parametrize(
    ("given", "ws", "http"),
    [
        ("http://h:8420", "ws://h:8420/v1/ws", "http://h:8420"),
        ("https://h", "wss://h/v1/ws", "https://h"),
        ("ws://h:8420/v1/ws", "ws://h:8420/v1/ws", "http://h:8420"),
        ("wss://h/edge/v1/ws", "wss://h/edge/v1/ws", "https://h/edge"),
        ("h:8420", "ws://h:8420/v1/ws", "http://h:8420"),
    ],
)
def test_one_address_gives_both_urls(given: str, ws: str, http: str) -> None:
    assert (ws_url(given), api_url(given)) == (ws, http)


@pytest.mark.parametrize("bad", ["ftp://h/x", "http://", "://nohost"])
def test_bad_address_is_named(bad: str) -> None:
    with pytest.raises(EndpointError, match="not a node address"):
        ws_url(bad)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: connecting is refused


def _send(url: str, secret: str = DEMO_SECRET, env: dict[str, str] | None = None) -> Any:
    args = ["send", "--app", "demo", "--secret", secret, "--user", "alice", "--to", "user:bob"]
    return invoke(*args, *(["--url", url] if url else []), "hi", env=env)


def test_refused_and_unknown_host_name_their_cause() -> None:
    r = _send(f"ws://127.0.0.1:{_closed_port()}/v1/ws")
    assert r.exit_code == 2
    assert "connection refused by 127.0.0.1" in r.output and "no login" not in r.output
    r = _send("ws://no-such-host.invalid:8420/v1/ws")
    assert r.exit_code == 2 and "cannot resolve host 'no-such-host.invalid'" in r.output
    r = invoke("desk", "queue", "--api-key", "k", "--url", f"http://127.0.0.1:{_closed_port()}")
    assert r.exit_code == 2 and "connection refused" in r.output


def test_causes_variables_and_json_against_one_node(running_server: Any) -> None:
    base = running_server.http_url
    r = _send(base + "/chat")
    assert r.exit_code == 2
    assert "no WebSocket gateway at path '/chat'" in r.output and "/v1/ws" in r.output
    r = _send(running_server.ws_url, secret="x" * 40)
    assert r.exit_code == 1 and "TOKEN_INVALID" in r.output and "--secret" in r.output
    # An HTTP command pointed at a path that is no node's base URL says so.
    r = invoke("desk", "queue", "--api-key", "k", "--url", base + "/nothing-here")
    assert r.exit_code == 2 and "HTTP 404" in r.output and "base URL" in r.output
    # The old variable in its HTTP form serves the WebSocket commands too ...
    r = _send("", env={"RELAYDESK_URL": base})
    assert r.exit_code == 0, r.output
    # ... and the specific variable wins over it for its kind of command.
    env = {"RELAYDESK_URL": f"http://127.0.0.1:{_closed_port()}", "RELAYDESK_WS_URL": base}
    assert _send("", env=env).exit_code == 0
    env = {"RELAYDESK_WS_URL": f"ws://127.0.0.1:{_closed_port()}/v1/ws", "RELAYDESK_URL": base}
    assert _send("", env=env).exit_code == 2
    # quality report --json: stdout carries the JSON alone (tables would go to stderr)
    r = runner.invoke(
        app,
        ["quality", "report", "--app", "demo", "--key", DEMO_SECRET, "--json"],
        env={"RELAYDESK_API_URL": base},
    )
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["app"] == "demo" and "series" in body and "worst" in body


def test_diagnose_without_key_is_a_usage_error() -> None:
    r = invoke("diagnose", "--app", "demo", env={"RELAYDESK_DESK_KEY": ""})
    assert r.exit_code == 2 and "give --key" in r.output


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group
            out.update(_commands(cmd, (*prefix, name)))
        else:
            out[" ".join((*prefix, name))] = cmd
    return out


#: Commands that read and print what they read; each offers --json (admin's and
#: config-check's output is JSON already).
READ_COMMANDS = [
    "tail",
    "doctor",
    "diagnose",
    "desk list",
    "desk queue",
    "desk report",
    "desk sla explain",
    "quality report",
    "node list",
]


def test_every_read_command_has_json() -> None:
    commands = _commands(CLI)
    for name in READ_COMMANDS:
        flags = {o for p in commands[name].params for o in getattr(p, "opts", [])}
        assert "--json" in flags, name


def test_netsim_takes_no_control_port_unless_asked() -> None:
    control = next(p for p in CLI.commands["netsim"].params if p.name == "control")
    assert control.default == "off"


def test_desk_report_takes_relative_times() -> None:
    from relaydesk.cli.desk import _instant

    now_ms = 1_796_300_000_000
    assert _instant("--from", "-30d", now_ms) == "2026-11-03T12:13:20+00:00"
    assert _instant("--from", "2026-11-01", now_ms) == "2026-11-01"
    with pytest.raises(typer.Exit):
        _instant("--from", "last tuesday", now_ms)

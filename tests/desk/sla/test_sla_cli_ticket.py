"""``relaydesk desk sla explain --ticket``: a ticket's case file fetched from a real HTTP
server (uvicorn on 127.0.0.1:0) replays locally to the SLA the desk computed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from desk_testkit import issue_keys
from litestar import Litestar
from typer.testing import CliRunner

from relaydesk.cli.desk import desk_app
from relaydesk.desk.component import DeskComponent
from relaydesk.storage.engine import Database

runner = CliRunner()


@pytest.fixture
def server(desk: DeskComponent, desk_db: Database) -> Iterator[tuple[str, dict[str, str]]]:
    keys = issue_keys(desk, desk_db)
    config = uvicorn.Config(
        Litestar(route_handlers=[desk.router]),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", keys
    srv.should_exit = True
    thread.join(10)


def test_explain_a_ticket_from_the_server(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, keys = server
    agent = {"Authorization": f"Bearer {keys['alice']}"}
    with httpx.Client(base_url=url + "/api/desk", timeout=10) as client:
        t = client.post(
            "/tickets",
            json={"subject": "down", "priority": "P1"},
            headers={"Authorization": f"Bearer {keys['dana']}"},
        ).json()
        client.post(f"/tickets/{t['id']}/comments", json={"body": "on it"}, headers=agent)
        live = client.get(f"/tickets/{t['id']}/sla", headers=agent).json()
    saved = tmp_path / "ticket.json"
    common = ["--url", url, "--api-key", keys["alice"]]
    r = runner.invoke(
        desk_app,
        ["sla", "explain", "--ticket", str(t["id"]), "--save", str(saved), "--json", *common],
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["sla"] == live
    assert got["organisation"] == "acme" and got["plan"]["id"] == "standard"
    r2 = runner.invoke(desk_app, ["sla", "explain", "--input", str(saved), "--json"])
    assert json.loads(r2.output) == got
    r3 = runner.invoke(desk_app, ["sla", "explain", "--ticket", "999", *common])
    assert r3.exit_code == 1 and "ticket.not_found" in r3.output


def test_explain_needs_exactly_one_source(tmp_path: Path) -> None:
    r = runner.invoke(desk_app, ["sla", "explain"])
    assert r.exit_code == 1 and "cli.usage" in r.output
    case = tmp_path / "c.json"
    case.write_text("{}")
    r = runner.invoke(desk_app, ["sla", "explain", "--input", str(case), "--ticket", "1"])
    assert r.exit_code == 1 and "cli.usage" in r.output

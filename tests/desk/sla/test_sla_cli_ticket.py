"""``relaydesk desk sla explain --ticket``: a ticket's case file fetched from a real HTTP
server (uvicorn on 127.0.0.1:0) replays locally to the SLA the desk computed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from desk_testkit import issue_keys, serve_desk
from typer.testing import CliRunner

from relaydesk.cli.desk import desk_app
from relaydesk.desk.component import DeskComponent
from relaydesk.storage.engine import Database

runner = CliRunner()


@pytest.fixture
def server(desk: DeskComponent, desk_db: Database) -> Iterator[tuple[str, dict[str, str]]]:
    keys = issue_keys(desk, desk_db)
    with serve_desk(desk) as url:
        yield url, keys


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

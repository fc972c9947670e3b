"""`relaydesk desk` against a real HTTP server (uvicorn on 127.0.0.1:0) and `sla explain`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from desk_testkit import issue_keys, serve_desk
from typer.testing import CliRunner

from relaydesk.cli.desk import desk_app, format_duration
from relaydesk.desk.component import DeskComponent
from relaydesk.storage.engine import Database

runner = CliRunner()


@pytest.fixture
def server(desk: DeskComponent, desk_db: Database) -> Iterator[tuple[str, dict[str, str]]]:
    keys = issue_keys(desk, desk_db)
    with serve_desk(desk) as url:
        yield url, keys


def test_create_list_queue_comment_status_report(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    common = ["--url", url]
    r = runner.invoke(
        desk_app,
        ["create", "--subject", "Android sends fail", "--priority", "P0", *common],
        env={"RELAYDESK_API_KEY": keys["dana"]},
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ticket 1 P0 new")
    r = runner.invoke(
        desk_app,
        ["create", "--subject", "Question", "--priority", "P3", "--api-key", keys["dana"], *common],
    )
    assert r.exit_code == 0, r.output
    alice = ["--api-key", keys["alice"], *common]
    r = runner.invoke(desk_app, ["queue", *alice])
    assert r.exit_code == 0, r.output
    assert "Android sends fail" in r.output and "15m" in r.output
    assert r.output.index("Android sends fail") < r.output.index("Question")
    r = runner.invoke(desk_app, ["queue", "--json", *alice])
    assert [e["ticket"]["id"] for e in json.loads(r.output)["entries"]] == [1, 2]
    r = runner.invoke(desk_app, ["comment", "1", "Investigating", *alice])
    assert r.exit_code == 0 and "public" in r.output
    r = runner.invoke(desk_app, ["status", "1", "solved", *alice])
    assert r.exit_code == 0 and "solved" in r.output
    r = runner.invoke(desk_app, ["status", "1", "pending", *alice])
    assert r.exit_code == 1 and "ticket.invalid_transition" in r.output
    r = runner.invoke(desk_app, ["list", "--status", "new", "--json", *alice])
    assert [t["id"] for t in json.loads(r.output)["tickets"]] == [2]
    r = runner.invoke(
        desk_app,
        ["report", "--from", "2024-03-01", "--to", "2024-04-01", "--format", "csv", *alice],
    )
    assert r.exit_code == 0 and r.output.startswith("month,priority,metric")


def test_errors_exit_nonzero_with_code(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    r = runner.invoke(desk_app, ["queue", "--url", url, "--api-key", keys["dana"]])
    assert r.exit_code == 1 and "auth.forbidden" in r.output
    r = runner.invoke(desk_app, ["queue", "--url", url, "--api-key", "rdk_bad"])
    assert r.exit_code == 1 and "auth.invalid_key" in r.output
    r = runner.invoke(
        desk_app,
        ["create", "--subject", "x", "--priority", "P7", "--url", url, "--api-key", keys["dana"]],
    )
    assert r.exit_code == 1 and "ticket.unknown_priority" in r.output


def test_sla_explain_local(tmp_path: Path) -> None:
    case = tmp_path / "case.json"
    case.write_text(
        json.dumps(
            {
                "now": "2024-03-04T12:00:00Z",
                "events": [{"at": "2024-03-04T10:00:00Z", "kind": "created", "priority": "P1"}],
            }
        )
    )
    r = runner.invoke(desk_app, ["sla", "explain", "--input", str(case)])
    assert r.exit_code == 0, r.output
    assert "first_response" in r.output and "2024-03-04T12:00:00" in r.output
    r = runner.invoke(desk_app, ["sla", "explain", "--input", str(case), "--json"])
    assert json.loads(r.output)["sla"]["priority"] == "P1"
    bad = {
        "now": "2024-03-04T12:00:00Z",
        "events": [],
        "calendars": {"b": {"hours": {"mon": ["09:00-09:00"]}}},
    }
    case.write_text(json.dumps(bad))
    r = runner.invoke(desk_app, ["sla", "explain", "--input", str(case)])
    assert r.exit_code == 1 and "calendar.empty_interval" in r.output


def test_format_duration() -> None:
    assert format_duration(None) == "paused"
    assert format_duration(-300) == "-5m"
    assert format_duration(2 * 3600 + 60) == "2h 1m"
    assert format_duration(90000) == "1d 1h"

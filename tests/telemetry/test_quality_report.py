"""``relaydesk quality report`` against a real server: the table and the offline HTML."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quality_kit import NODE, OPERATOR_KEY, REGION, flush, login, telemetry_config
from typer.testing import CliRunner

from relaydesk.cli.quality import quality_app, svg_chart, worst_minutes
from relaydesk.protocol.frames import Publish


async def test_report_table_and_html(make_server: Callable[..., Any], tmp_path: Path) -> None:
    server = make_server(telemetry_config(ack_deadline_ms=500))
    sender = await login(server.ws_url, server.token("ann"), "a1", region="eu")
    silent = await login(server.ws_url, server.token("ben"), "b1", region="us")
    for i in range(4):
        await sender.send(Publish(id=f"m{i}", to="user:ben", body=b"hello"))
    while len([e for e in silent.events if e.kind == "msg"]) < 4:
        await silent.recv()  # ben never acknowledges: 4 deliveries fail
    import asyncio

    await asyncio.sleep(2.0)
    flush(server)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        quality_app,
        [
            "report",
            "--app",
            server.app,
            "--from",
            "-15m",
            "--url",
            server.http_url,
            "--key",
            server.secret,
            "--html",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"region {REGION} · node {NODE}" in text
    assert "worst minutes" in text and "lowest delivery success" in text
    assert "total" in text
    page = out.read_text()
    assert page.count("<svg") == 4
    assert "class='worst'" in page
    assert not re.search(r"<script|src=|href=\"http", page)  # works offline
    await sender.aclose()
    await silent.aclose()


def test_report_errors_are_readable(make_server: Callable[..., Any]) -> None:
    server = make_server(telemetry_config())
    runner = CliRunner()
    r = runner.invoke(
        quality_app, ["report", "--app", server.app, "--url", server.http_url, "--key", "wrong"]
    )
    assert r.exit_code == 1 and "FORBIDDEN" in r.output
    r = runner.invoke(
        quality_app,
        [
            "report",
            "--app",
            server.app,
            "--url",
            server.http_url,
            "--key",
            OPERATOR_KEY,
            "--from",
            "someday",
        ],
    )
    assert r.exit_code == 1 and "INVALID_ARGUMENT" in r.output
    r = runner.invoke(
        quality_app, ["report", "--app", server.app, "--url", "http://127.0.0.1:9", "--key", "k"]
    )
    assert r.exit_code == 2 and "cannot reach" in r.output


def test_svg_chart_and_worst_selection_are_pure() -> None:
    svg = svg_chart("t", [0, 60_000, 120_000], [("a", [1.0, None, 3.0])], " ms", marks=[2])
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<circle" in svg
    point = {
        "delivery_success": 0.5,
        "send_success": 1.0,
        "latency_ms": {},
        "rtt_p95_ms": {"p95": None},
        "loss": {"p95": None},
        "unexpected_disconnects": 0,
    }
    good = {**point, "delivery_success": 1.0}
    marked = worst_minutes([{"points": [good, point]}], 1)
    assert marked == {(0, 1): ["lowest delivery success"]}

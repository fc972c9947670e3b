"""``relaydesk quality report`` against a real server: the table and the offline HTML."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from quality_kit import NODE, OPERATOR_KEY, REGION, flush, login, telemetry_config
from typer.testing import CliRunner

from relaydesk.cli.quality import quality_app, svg_chart, worst_minutes
from relaydesk.protocol.frames import Publish
from relaydesk.telemetry.charts import time_ticks


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
    assert "0.00%" in text and "total" in text  # ben's deliveries failed
    # One minute of data: nothing to stand out from, so nothing is shaded "worst"
    # (test_worst_is_shaded_only_when_it_stands_out has the minutes that do).
    assert "worst minutes" not in text
    page = out.read_text()
    assert page.count("<svg") == 5  # volume, success, latency, RTT (ms), loss (%)
    assert "class='worst'" not in page
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


def _pt(delivery: float) -> dict[str, object]:
    return {
        "delivery_success": delivery,
        "send_success": 1.0,
        "latency_ms": {},
        "rtt_p95_ms": {"p95": None},
        "loss": {"p95": None},
        "unexpected_disconnects": 0,
    }


def test_worst_is_shaded_only_when_it_stands_out() -> None:
    # every minute equally poor: none stands out, none is shaded
    assert worst_minutes([{"points": [_pt(0.9)] * 3}], 3) == {}
    # a lone minute has nothing to stand out from
    assert worst_minutes([{"points": [_pt(0.5)]}], 3) == {}
    # a dip of a tenth of a point is noise, not a worst minute
    assert worst_minutes([{"points": [_pt(1.0), _pt(0.999), _pt(1.0)]}], 3) == {}
    # one bad minute among good ones is the only one shaded, even with n = 3
    points = [_pt(1.0), _pt(0.995), _pt(0.8), _pt(1.0), _pt(0.996)]
    assert worst_minutes([{"points": points}], 3) == {(0, 2): ["lowest delivery success"]}


@pytest.mark.parametrize(
    "span_ms",
    [1, 60_000, 120_000, 180_000, 3_600_000, 5 * 3_600_000, 2 * 86_400_000, 90 * 86_400_000],
)
def test_time_ticks_never_repeat_a_label(span_ms: int) -> None:
    t0 = 1_796_300_000_000
    ticks = time_ticks(t0, t0 + span_ms)
    labels = [label for _, label in ticks]
    assert 1 <= len(ticks) <= 6 and len(set(labels)) == len(labels), ticks
    assert all(t0 <= t <= t0 + span_ms for t, _ in ticks) or len(ticks) == 1
    assert [t for t, _ in ticks] == sorted(t for t, _ in ticks)


def test_charts_say_their_units() -> None:
    xs = [0, 60_000, 120_000]
    svg = svg_chart("messages per bucket", xs, [("sent", [1.0, 2.0, 3.0])], "", y_label="messages")
    assert "(messages)" in svg and ">UTC<" in svg
    svg = svg_chart("latency", xs, [("a", [1.0, 2.0, 3.0])], " ms")
    assert "3 ms<" in svg or "3.0 ms<" in svg or " ms</text>" in svg
    # two minutes of data: the axis shows distinct minute labels, not five copies
    labels = re.findall(r'text-anchor="(?:start|middle|end)">([0-9:]+)</text>', svg)
    assert len(labels) == len(set(labels)) >= 2, labels

"""The console's Network quality page: pure parts (form, view, charts) and over real HTTP.

The browser scenario with real traffic is in ``js/console.test.mjs``; these tests pin
the server-side rules: agents only, inline errors, escaping, charts from the shared
``telemetry/charts.py``, worst minutes marked on the charts, and the page without
telemetry.
"""

from __future__ import annotations

import re
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from console_kit import ConsoleNode, sign_in
from litestar import Litestar
from litestar.testing import TestClient

from relaydesk.cli.quality import render_html
from relaydesk.cli.quality import svg_chart as cli_svg_chart
from relaydesk.storage.telemetry import COUNTERS, SeriesRow
from relaydesk.telemetry import build_series, worst_points
from relaydesk.telemetry.charts import (
    fill_buckets,
    latency_chart,
    nice_ceiling,
    svg_chart,
)
from relaydesk.telemetry.histogram import Histogram
from relaydesk.web.console._quality import (
    MAX_BUCKETS,
    parse_quality_form,
    quality_view,
    step_for,
)

NOW = int(datetime(2026, 1, 5, 10, 30, 20, tzinfo=UTC).timestamp() * 1000)
APPS = ["demo", "desk"]


# -- the form ------------------------------------------------------------------------------


def test_presets_pick_a_window_ending_now_and_a_step_on_clock_boundaries() -> None:
    form, errors = parse_quality_form({}, APPS, NOW)
    assert errors == {}
    assert (form.app, form.range, form.group, form.by, form.pct) == (
        "demo",
        "1h",
        "node",
        "delivery_success",
        "p95",
    )
    assert form.to_ms == NOW and form.step_s == 60
    assert form.from_ms == NOW - 3_600_000 - (NOW - 3_600_000) % 60_000
    day, _ = parse_quality_form({"range": "24h", "app": "desk"}, APPS, NOW)
    assert day.step_s == 300 and day.from_ms % 300_000 == 0 and day.worst_step_s == 60
    assert day.worst_query.step_s == 60 and day.query.step_s == 300
    for range_ms in (15 * 60_000, 3_600_000, 86_400_000, 7 * 86_400_000, 31 * 86_400_000):
        assert range_ms / (step_for(range_ms) * 1000) <= MAX_BUCKETS


def test_custom_range_is_utc_and_checked() -> None:
    form, errors = parse_quality_form(
        {"range": "custom", "from": "2026-01-05T09:00", "to": "2026-01-05T09:30"}, APPS, NOW
    )
    assert errors == {}
    assert datetime.fromtimestamp(form.from_ms / 1000, UTC).hour == 9
    assert form.to_ms - form.from_ms == 30 * 60_000
    assert "from=2026-01-05T09%3A00" in form.params()
    assert "from=" not in form.params(range="6h")  # a preset link drops the custom window
    cases: list[tuple[dict[str, str], str, str]] = [
        ({"range": "custom", "from": "2026-01-05T10:00", "to": "2026-01-05T09:00"}, "to", "ends"),
        ({"range": "custom", "from": "yesterday", "to": "2026-01-05T09:00"}, "from", "YYYY"),
        ({"range": "custom", "from": "2025-01-01T00:00", "to": "2026-01-01T00:00"}, "to", "31"),
        ({"range": "3y"}, "range", "Unknown range"),
        ({"app": "nope"}, "app", "no app 'nope'"),
        ({"group": "planet"}, "group", "grouping"),
        ({"by": "vibes"}, "by", "criterion"),
        ({"pct": "p42"}, "pct", "p99"),
        ({"node": "n" * 257}, "node", "256"),
    ]
    for params, field, message in cases:
        _, errors = parse_quality_form(params, APPS, NOW)
        assert field in errors and message in errors[field], (params, errors)
    _, errors = parse_quality_form({}, [], NOW)
    assert "No apps" in errors["app"]


# -- the view and the charts ---------------------------------------------------------------


def _row(start_ms: int, node: str, sent: int, errors: int, ack_ms: float) -> SeriesRow:
    counts = [0] * len(COUNTERS)
    for name, value in (
        ("sent", sent),
        ("send_errors", errors),
        ("delivered", sent),
        ("active_max", 3),
        ("connects", 1),
    ):
        counts[COUNTERS.index(name)] = value
    ack = Histogram.latency()
    ack.observe(ack_ms, sent)
    return SeriesRow(
        "desk", "eu-west", node, "eu", 60, start_ms, counts, {"client_ack": ack.to_data()}
    )


def test_view_has_totals_six_charts_per_series_and_marks_the_worst_minute() -> None:
    form, errors = parse_quality_form(
        {"app": "desk", "range": "15m", "by": "send_success"}, APPS, NOW
    )
    assert errors == {}
    t0 = form.from_ms
    rows = [
        _row(t0 + 60_000, "edge-1", 10, 0, 20.0),
        _row(t0 + 120_000, "edge-1", 5, 5, 900.0),  # the bad minute
        _row(t0 + 60_000, "edge-2", 7, 0, 15.0),
    ]
    result = build_series(rows, form.query)
    worst = worst_points(result, form.by, 10)
    assert [(p.node, p.t) for p in worst] == [("edge-1", t0 + 120_000)]
    view = quality_view(form, result, worst)
    assert [s.title for s in view.series] == [
        "region eu-west · node edge-1",
        "region eu-west · node edge-2",
    ]
    assert view.regions == ["eu-west"] and view.nodes == ["edge-1", "edge-2"]
    first = view.series[0]
    assert first.total[:4] == ["15", "75.00%", "15", "100.00%"]
    assert len(first.charts) == 6 and all(c.startswith("<svg") for c in first.charts)
    assert all('stroke="#d62728" stroke-opacity="0.35"' in c for c in first.charts)  # marked
    assert not any("stroke-opacity" in c for c in view.series[1].charts)
    (row,) = view.worst
    assert row.value == "50.00%" and row.title == "region eu-west · node edge-1"
    assert "range=custom" in row.zoom and "by=send_success" in row.zoom
    # The latency chart follows the chosen percentile.
    p99, _ = parse_quality_form({"app": "desk", "range": "15m", "pct": "p99"}, APPS, NOW)
    assert "stage latency p99" in quality_view(p99, result, []).series[0].charts[1]


def test_charts_are_escaped_fixed_to_the_range_and_shared_with_the_cli() -> None:
    assert cli_svg_chart is svg_chart  # one implementation: the CLI imports it
    evil = '<script>alert("x")</script>'
    svg = svg_chart(evil, [0, 60_000], [(evil, [1.0, 2.0])], evil)
    assert "<script" not in svg and "&lt;script&gt;" in svg
    xs, points = fill_buckets([{"t": 120_000}], 0, 300_000, 60_000)
    assert xs == [0, 60_000, 120_000, 180_000, 240_000]
    assert points == [None, None, {"t": 120_000}, None, None]
    empty = latency_chart(xs, [None] * 5, x_range=(0, 300_000))
    assert "no data" in empty and "<polyline" not in empty
    assert [nice_ceiling(v) for v in (0.0, 2.14, 59, 100, 105, 0.3)] == [
        1.0,
        2.4,
        60,
        100,
        120,
        0.3,
    ]
    page = render_html(
        {"app": "a<b", "from_ms": 0, "to_ms": 60_000, "step_s": 60, "series": []}, {}, "now"
    )
    assert "a&lt;b" in page and "No data in this range" in page


# -- over HTTP -----------------------------------------------------------------------------


def test_agents_see_the_page_customers_do_not(console_node: ConsoleNode) -> None:
    with httpx.Client(base_url=console_node.url) as anonymous:
        r = anonymous.get("/console/quality?range=6h")
        assert r.status_code == 303
        assert r.headers["location"].startswith("/console/sign-in?next=/console/quality")
    customer, _ = sign_in(console_node, "dana@acme.example")
    with closing(customer):
        assert customer.get("/console/quality").status_code == 403
        assert "Network quality" not in customer.get("/console/portal").text
    agent, _ = sign_in(console_node, "alice@desk.example")
    with closing(agent):
        assert 'href="/console/quality"' in agent.get("/console/queue").text
        page = agent.get("/console/quality?app=desk&range=15m")
        assert page.status_code == 200
        assert 'id="quality-totals"' in page.text and 'id="quality-worst"' in page.text
        assert "<option selected>desk</option>" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)  # no inline script


@pytest.mark.parametrize(
    ("query", "status", "field", "message"),
    [
        ("app=nope", 404, "app", "no app"),
        ("range=custom&from=2026-01-05T10:00&to=2026-01-05T09:00", 422, "to", "ends before"),
        ("range=forever", 422, "range", "Unknown range"),
        ("by=vibes", 422, "by", "Unknown criterion"),
    ],
)
def test_bad_choices_get_inline_errors(
    console_node: ConsoleNode, query: str, status: int, field: str, message: str
) -> None:
    agent, _ = sign_in(console_node, "bob@desk.example")
    with closing(agent):
        r = agent.get(f"/console/quality?{query}")
        assert r.status_code == status
        found = re.search(rf'id="error-{field}">([^<]*)<', r.text)
        assert found is not None and message in found.group(1), r.text[-2000:]
        assert 'id="quality-form"' in r.text  # the form stays, with what was chosen


def test_filters_and_unknown_apps_are_escaped(console_node: ConsoleNode) -> None:
    agent, _ = sign_in(console_node, "alice@desk.example")
    with closing(agent):
        evil = '"><script>alert(1)</script>'
        for query in ({"app": "desk", "region": evil}, {"app": evil}):
            r = agent.get("/console/quality", params=query)
            assert r.status_code in (200, 404)
            assert "<script>alert(1)" not in r.text
            assert "&lt;script&gt;alert(1)" in r.text or "&#34;&gt;&lt;script" in r.text


def test_without_telemetry_the_page_says_so(tmp_path: Any) -> None:
    from relaydesk.config import load_settings
    from relaydesk.server.app import RelaydeskServer
    from relaydesk.web.console import console_router

    settings = load_settings(
        None, {"server": {"data_dir": str(tmp_path)}, "demo": True}, environ={}
    )
    node = RelaydeskServer(settings)
    app = Litestar(
        route_handlers=[console_router(node.desk, node.hub, settings, node.clock)],
        lifespan=[node._lifespan],
    )
    with TestClient(app) as client:
        form = client.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        r = client.post(
            "/console/sign-in",
            data={
                "csrf": token.group(1),
                "email": "alice@desk.example",
                "password": "demo-password",
                "next": "/console/quality",
            },
        )
        assert r.status_code == 200 and r.url.path == "/console/quality"
        assert 'id="telemetry-disabled"' in r.text and "Telemetry disabled" in r.text

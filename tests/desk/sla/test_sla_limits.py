"""Input bounds of the SLA engine and the explain API (issue 10): instants outside
1970..2200, a horizon on ``now``, capped case and calendar sizes, each a typed 4xx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sla_api_kit import Client, error_code, open_client

from relaydesk.desk.component import DeskComponent
from relaydesk.desk.sla import SlaConfigError, explain_case
from relaydesk.storage.engine import Database

WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _case(
    created: str = "2024-01-08T09:00:00Z", now: str = "2024-01-09T09:00:00Z", **kw: Any
) -> Any:
    return {
        "events": [{"at": created, "kind": "created", "priority": "P2"}],
        "now": now,
        **kw,
    }


def _cal(**kw: Any) -> dict[str, Any]:
    return {"hours": {"mon": ["09:00-17:00"]}, **kw}


BAD_CASES: list[tuple[str, Any, str]] = [
    ("now_year_9999", _case(now="9999-12-31T23:00:00Z"), "time.out_of_range"),
    ("created_year_0001", _case(created="0001-01-01T00:00:00Z"), "time.out_of_range"),
    (
        "year_0001_both",
        _case(created="0001-01-01T00:00:00Z", now="0001-01-02T00:00:00Z"),
        "time.out_of_range",
    ),
    ("offset_past_9999", _case(now="9999-12-31T23:59:59-14:00"), "time.out_of_range"),
    ("offset_before_0001", _case(created="0001-01-01T00:00:00+14:00"), "time.out_of_range"),
    ("before_1970", _case(created="1969-12-31T23:59:59Z"), "time.out_of_range"),
    ("horizon", _case(now="2034-02-01T09:00:00Z"), "case.horizon"),
    (
        "too_many_events",
        {
            "events": [{"at": "2024-01-08T09:00:00Z", "kind": "created", "priority": "P2"}]
            + [{"at": "2024-01-08T10:00:00Z", "kind": "comment", "author_role": "customer"}] * 5000,
            "now": "2024-01-09T09:00:00Z",
        },
        "case.too_large",
    ),
    (
        "too_many_calendars",
        _case(calendars={f"c{i}": _cal() for i in range(33)}),
        "case.too_large",
    ),
    (
        "too_many_spans",
        _case(
            calendars={
                "business": {"hours": {"mon": [f"{h:02d}:00-{h:02d}:30" for h in range(24)] * 3}}
            }
        ),
        "calendar.too_large",
    ),
    (
        "too_many_holidays",
        _case(
            calendars={
                "business": _cal(
                    holidays=[f"20{y:02d}-01-{d:02d}" for y in range(40) for d in range(1, 29)]
                )
            }
        ),
        "calendar.too_large",
    ),
    ("hours_not_a_map", _case(calendars={"business": {"hours": ["09:00-17:00"]}}), "case.schema"),
    ("span_not_a_string", _case(calendars={"business": {"hours": {"mon": [9]}}}), "case.schema"),
    (
        "non_ascii_digits",
        _case(calendars={"business": _cal(hours={"mon": ["٠٩:00-17:00"]})}),
        "calendar.bad_time",
    ),
    (
        "bad_weekday",
        _case(calendars={"business": _cal(hours={"monday": ["09:00-17:00"]})}),
        "calendar.bad_day",
    ),
    (
        "holidays_not_dates",
        _case(calendars={"business": _cal(holidays=["christmas"])}),
        "case.schema",
    ),
    (
        "country_attribute",
        _case(calendars={"business": _cal(holiday_country="HolidayBase")}),
        "calendar.unknown_holiday_country",
    ),
    (
        "empty_subdivision",
        _case(calendars={"business": _cal(holiday_country="GB", holiday_subdivision="")}),
        "calendar.unknown_holiday_subdivision",
    ),
    (
        "timezone_nul",
        _case(calendars={"business": _cal(timezone="Europe/Lon\u0000don")}),
        "calendar.unknown_timezone",
    ),
    (
        "business_day_nan",
        _case(calendars={"business": _cal(business_day_hours=float("nan"))}),
        "case.bad_json",
    ),
]


@pytest.mark.parametrize(
    ("case", "code"), [(c, k) for _n, c, k in BAD_CASES], ids=[n for n, _c, _k in BAD_CASES]
)
def test_bounds_are_typed_errors(case: Any, code: str) -> None:
    raw = json.dumps(case)  # NaN is not JSON: the business_day_nan case is a bad_json one
    started = time.perf_counter()
    with pytest.raises(SlaConfigError) as err:
        explain_case(raw)
    assert err.value.code == code, err.value
    # the 9999 case took 24.5 s before the bounds; a refusal is immediate
    assert time.perf_counter() - started < 5.0


def test_oversized_case_file_is_refused_before_parsing() -> None:
    raw = b'{"title": "' + b"x" * (1 << 20) + b'"}'
    with pytest.raises(SlaConfigError) as err:
        explain_case(raw)
    assert err.value.code == "case.too_large"


def test_the_horizon_itself_is_allowed() -> None:
    ok = explain_case(json.dumps(_case(now="2034-01-01T09:00:00Z")))
    res = ok.sla.metric("resolution")
    assert res is not None and res.state == "breached"


def test_explained_lines_are_capped_but_totals_are_not() -> None:
    # 48 quarter-hour spans a day (12 h), a 120-day budget: 5,760 counted intervals.
    spans = [f"{h:02d}:{m:02d}-{h:02d}:{m + 15:02d}" for h in range(24) for m in (0, 30)]
    cal = {"hours": {d: spans for d in WEEK}, "timezone": "Europe/London"}
    budget = 120 * 12 * 3600
    policy = {
        "id": "long",
        "version": 1,
        "name": "long",
        "targets": {
            p: {"resolution": {"calendar": "business", "seconds": budget}}
            for p in ("P0", "P1", "P2", "P3")
        },
    }
    exp = explain_case(
        json.dumps(
            {
                "calendars": {"business": cal},
                "policy": policy,
                "events": [{"at": "2024-01-08T09:00:00Z", "kind": "created", "priority": "P3"}],
                "now": "2025-01-01T00:00:00Z",
            }
        )
    )
    res = exp.metrics[-1]
    assert len(res.counted) == 5000 and res.counted_omitted == 760
    assert res.counted_seconds == budget
    assert "... 760 more intervals" in exp.to_text()


@pytest.fixture
def api(desk: DeskComponent, desk_db: Database) -> Iterator[tuple[Client, dict[str, Any]]]:
    with open_client(desk, desk_db) as pair:
        yield pair


@pytest.mark.parametrize(
    "name",
    [
        "now_year_9999",
        "created_year_0001",
        "horizon",
        "too_many_spans",
        "hours_not_a_map",
        "non_ascii_digits",
    ],
)
def test_explain_api_answers_4xx_not_500(api: tuple[Client, dict[str, Any]], name: str) -> None:
    client, who = api
    _n, case, code = next(c for c in BAD_CASES if c[0] == name)
    r = client.post("/api/desk/sla/explain", content=json.dumps(case), headers=who["dana"])
    assert error_code(r, 422) == code


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"hours": {"mon": ["09:00-17:00"]', b"\xff\xfe", b"[]", b'{"hours": 5}', b""],
)
def test_malformed_calendar_json_is_422(api: tuple[Client, dict[str, Any]], body: bytes) -> None:
    client, who = api
    r = client.put("/api/desk/sla/calendars/business", content=body, headers=who["alice"])
    assert error_code(r, 422) == "request.invalid"
    r = client.post(
        "/api/desk/sla/explain",
        content=b'{"events": [], "now": "2024-01-01T00:00:00Z", "calendars": {"b": ' + body + b"}}",
        headers=who["alice"],
    )
    assert error_code(r, 422) in ("case.bad_json", "case.schema")


@pytest.mark.parametrize("name", ["x" * 65, "%20padded", "tab%09name"])
def test_calendar_names_are_bounded(api: tuple[Client, dict[str, Any]], name: str) -> None:
    client, who = api
    body = json.dumps({"hours": {"mon": ["09:00-17:00"]}})
    r = client.put(f"/api/desk/sla/calendars/{name}", content=body, headers=who["alice"])
    assert error_code(r, 422) == "request.invalid"

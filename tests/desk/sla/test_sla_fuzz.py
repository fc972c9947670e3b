"""Whatever a case file holds, the explainer answers or raises SlaConfigError (a 4xx in the
API), never another exception (a 500), and never works for long."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relaydesk.desk.sla import SlaConfigError, explain_case

_YEARS = st.sampled_from([1, 1969, 1970, 2024, 2199, 2200, 9999])
_OFFSETS = st.sampled_from(["Z", "+14:00", "-14:00", "+05:30", ""])


@st.composite
def instants(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 4)):
        return f"2024-01-{draw(st.integers(8, 14)):02d}T{draw(st.integers(0, 23)):02d}:00:00Z"
    year = draw(_YEARS)
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    hh, mm = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    return f"{year:04d}-{month:02d}-{day:02d}T{hh:02d}:{mm:02d}:00{draw(_OFFSETS)}"


_TEXT = st.text(max_size=12)
_TIMES = st.sampled_from(["09:00", "17:00", "24:00", "00:00", "22:00", "9:00", "٠٩:00", "25:00"])
_SPANS = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", _TIMES, _TIMES), _TEXT, st.integers(), st.none()
)
_DAYS = st.sampled_from(["mon", "tue", "sat", "sun", "monday", ""])


@st.composite
def calendars(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 2)):
        week = {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
        if draw(st.booleans()):
            week["sat"] = ["22:00-06:00"]
        return {"hours": week, "timezone": draw(st.sampled_from(["Europe/London", "UTC"]))}
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(_TEXT, st.integers(), st.lists(_TEXT, max_size=2)))
    cal: dict[str, Any] = {
        "hours": draw(st.dictionaries(_DAYS, st.lists(_SPANS, max_size=3), max_size=3))
    }
    if draw(st.booleans()):
        cal["timezone"] = draw(
            st.sampled_from(["UTC", "Europe/London", "America/New_York", "Mars/Base", "", "/x"])
        )
    if draw(st.booleans()):
        cal["holiday_country"] = draw(st.sampled_from(["GB", "US", "XX", "", "HolidayBase"]))
        if draw(st.booleans()):
            cal["holiday_subdivision"] = draw(st.sampled_from(["ENG", "CA", "", "ZZ"]))
    if draw(st.booleans()):
        cal["holidays"] = draw(st.lists(st.sampled_from(["2024-12-25", "0001-01-01", "x"])))
    if draw(st.booleans()):
        cal["business_day_hours"] = draw(st.sampled_from([0, 8, 24, 25, -1, 1e308, 1e-9]))
    return cal


_NUMBERS = st.sampled_from([0, 1, 60, 3600, 34_560_000, 34_560_001, -5, 1e300, 2.5])


@st.composite
def targets(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 2)):
        cal = draw(st.sampled_from(["24x7", "business"]))
        good = [
            {"calendar": cal, "seconds": draw(st.integers(60, 10 * 86400))},
            {"calendar": cal, "business_days": draw(st.integers(1, 10))},
            {
                "calendar": cal,
                "kind": "end_of_business_day",
                "cutoff": draw(_TIMES.filter(lambda t: t < "24")),
            },
            {"calendar": cal, "kind": "end_of_nth_business_day", "n": draw(st.integers(0, 20))},
            {
                "calendar": cal,
                "kind": "end_of_business_day",
                "min_seconds": draw(st.integers(0, 36000)),
            },
        ]
        return draw(st.sampled_from(good))
    t: dict[str, Any] = {
        "calendar": draw(st.sampled_from(["24x7", "business", "nowhere"])),
        "kind": draw(
            st.sampled_from(
                ["duration", "end_of_business_day", "end_of_nth_business_day", "weekly"]
            )
        ),
    }
    for key in ("seconds", "business_days", "n", "min_seconds"):
        if draw(st.booleans()):
            t[key] = draw(_NUMBERS)
    if draw(st.booleans()):
        t["cutoff"] = draw(_TIMES)
    return t


@st.composite
def policies(draw: st.DrawFn) -> Any:
    prios = draw(st.lists(st.sampled_from(["P0", "P1", "P2", "P3", "P9"]), max_size=5))
    if draw(st.integers(0, 2)):
        prios = ["P0", "P1", "P2", "P3"]
    targets_by_prio = {
        p: {m: draw(targets()) for m in ("first_response", "next_response", "resolution")}
        for p in (prios or ["P0", "P1", "P2", "P3"])
    }
    pol: dict[str, Any] = {
        "id": draw(st.sampled_from(["gold", "gold", "", "a/b"])),
        "version": draw(st.sampled_from([1, 1, 0, 3])),
        "name": "p",
        "targets": targets_by_prio,
    }
    if draw(st.booleans()):
        pol["metric_pause_statuses"] = draw(
            st.dictionaries(
                st.sampled_from(["first_response", "resolution", "mood"]),
                st.lists(st.sampled_from(["pending", "on_hold", "solved"]), max_size=2),
                max_size=2,
            )
        )
    return pol


@st.composite
def cases(draw: st.DrawFn) -> Any:
    events: list[dict[str, Any]] = []
    if draw(st.integers(0, 5)):
        events.append({"at": "2024-01-08T08:00:00Z", "kind": "created", "priority": "P2"})
        events[0]["priority"] = draw(st.sampled_from(["P0", "P1", "P2", "P3"]))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["comment", "status_changed", "priority_changed"] * 8 + ["x"]))
        event: dict[str, Any] = {"at": draw(instants()), "kind": kind}
        if kind == "comment":
            event["author_role"] = draw(st.sampled_from(["agent", "customer", "automation"]))
            event["public"] = draw(st.booleans())
        elif kind == "status_changed":
            event["status"] = draw(st.sampled_from(["open", "pending", "solved", "on_hold", "x"]))
        else:
            event["priority"] = draw(st.sampled_from(["P0", "P1", "P2", "P3"]))
        events.append(event)
    case: dict[str, Any] = {"events": events, "now": draw(instants())}
    if draw(st.booleans()):
        case["calendars"] = {"business": draw(calendars())}
    if draw(st.booleans()):
        case["policy"] = draw(policies())
    if draw(st.integers(0, 3)) == 0:
        case["plan"] = {"id": "p", "policy_id": "gold", "policy_version": 1}
    if draw(st.booleans()):
        case = {"case": case, "expect": {}}
    return case


@settings(max_examples=300, deadline=None)
@given(cases())
def test_explain_answers_or_raises_a_typed_error(case: Any) -> None:
    raw = json.dumps(case, allow_nan=False) if _finite(case) else json.dumps(case)
    started = time.perf_counter()
    try:
        explain_case(raw).to_text()
    except SlaConfigError as exc:
        assert exc.code and "." in exc.code
    assert time.perf_counter() - started < 10


def _finite(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True

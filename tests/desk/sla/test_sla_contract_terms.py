"""Unit tests of the contract terms: nth business day, cut-off, minimum budget, per-metric
pauses, plans in case files, the wrapped case form and per-cycle breach counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from relaydesk.desk.sla import (
    Calendar,
    PriorityTargets,
    SlaConfigError,
    SlaEvent,
    SlaPolicy,
    Target,
    compute_sla,
    default_calendars,
    default_policy,
    explain_case,
    parse_case,
)

BUSINESS = default_calendars()["business"]  # Mon-Fri 09:00-17:00 Europe/London


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("at", "n", "cutoff", "due"),
    [
        (_utc(2024, 1, 8, 11), 0, None, _utc(2024, 1, 8, 17)),  # Monday, same day
        (_utc(2024, 1, 8, 11), 4, None, _utc(2024, 1, 12, 17)),  # Friday
        (_utc(2024, 1, 8, 11), 5, None, _utc(2024, 1, 15, 17)),  # over the weekend
        (_utc(2024, 1, 12, 17), 0, None, _utc(2024, 1, 15, 17)),  # Friday at the close
        (_utc(2024, 1, 13, 12), 1, None, _utc(2024, 1, 16, 17)),  # Saturday: day 0 is Monday
        (_utc(2024, 1, 8, 7), 0, "15:00", _utc(2024, 1, 8, 17)),  # before opening
        (_utc(2024, 1, 8, 14, 59), 0, "15:00", _utc(2024, 1, 8, 17)),
        (_utc(2024, 1, 8, 15, 0), 0, "15:00", _utc(2024, 1, 9, 17)),  # exactly at the cut-off
        (_utc(2024, 1, 12, 15, 0), 1, "15:00", _utc(2024, 1, 16, 17)),  # Friday late, n=1
    ],
)
def test_end_of_nth_business_day(at: datetime, n: int, cutoff: str | None, due: datetime) -> None:
    assert BUSINESS.end_of_nth_business_day(at, n, cutoff) == due
    if n == 0 and cutoff is None:
        assert BUSINESS.end_of_business_day(at) == due


def test_night_shift_cutoff_falls_after_midnight() -> None:
    nights = Calendar(hours={d: ["22:00-06:00"] for d in ("mon", "tue", "wed", "thu", "fri")})
    # Tuesday's night runs Tue 22:00 - Wed 06:00; its 04:00 cut-off is Wednesday 04:00.
    assert nights.end_of_nth_business_day(_utc(2024, 1, 10, 3, 59), 0, "04:00") == _utc(
        2024, 1, 10, 6
    )
    assert nights.end_of_nth_business_day(_utc(2024, 1, 10, 4), 0, "04:00") == _utc(2024, 1, 11, 6)


def test_holiday_package_days_are_skipped() -> None:
    us = Calendar(
        hours={d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        timezone="America/Los_Angeles",
        holiday_country="US",
        holiday_subdivision="CA",
    )
    # Wed 3 Jul 2024 10:00 PDT, n=1: 4 July is Independence Day -> Friday 5 July 17:00 PDT.
    assert us.end_of_nth_business_day(_utc(2024, 7, 3, 17), 1) == _utc(2024, 7, 6, 0)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"kind": "end_of_nth_business_day"}, "needs n"),
        ({"kind": "end_of_nth_business_day", "n": -1}, "needs n"),
        ({"kind": "end_of_nth_business_day", "n": 401}, "needs n"),
        ({"kind": "end_of_business_day", "n": 2}, "takes no n"),
        ({"kind": "duration", "seconds": 60, "cutoff": "15:00"}, "belong to"),
        ({"kind": "duration", "seconds": 60, "min_seconds": 60}, "belong to"),
        ({"kind": "end_of_business_day", "cutoff": "25:00"}, "bad time"),
        ({"kind": "end_of_business_day", "cutoff": "١٥:00"}, "bad time"),  # non-ASCII digits
        ({"kind": "end_of_business_day", "min_seconds": -1}, "non-negative"),
        ({"kind": "duration", "seconds": float("inf")}, "finite"),
        ({"kind": "duration", "seconds": 10**9}, "at most"),
        ({"kind": "duration", "business_days": 1000}, "at most"),
    ],
)
def test_bad_targets(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SlaConfigError) as err:
        Target(calendar="business", **fields)
    assert err.value.code in ("policy.bad_target", "calendar.bad_time")
    assert fragment in err.value.message


def test_metric_pause_statuses_are_validated() -> None:
    base = default_policy()
    with pytest.raises(SlaConfigError) as err:
        SlaPolicy(
            id="x", version=1, name="x", targets=base.targets, metric_pause_statuses={"mood": ()}
        )
    assert err.value.code == "policy.unknown_metric"
    with pytest.raises(SlaConfigError) as err:
        SlaPolicy(
            id="x",
            version=1,
            name="x",
            targets=base.targets,
            metric_pause_statuses={"resolution": ("solved",)},
        )
    assert err.value.code == "policy.bad_pause_status"
    for bad_id in ("", " a", "a/b", "x" * 65, "a\nb"):
        with pytest.raises(SlaConfigError) as err:
            SlaPolicy(id=bad_id, version=1, name="x", targets=base.targets)
        assert err.value.code == "policy.bad_id"
    with pytest.raises(SlaConfigError) as err:
        SlaPolicy(id="x", version=0, name="x", targets=base.targets)
    assert err.value.code == "policy.bad_version"


def test_pause_applies_per_metric_while_the_other_clock_runs() -> None:
    base = default_policy()
    created = SlaEvent(at=_utc(2024, 1, 8, 9), kind="created", priority="P2")
    pending = SlaEvent(at=_utc(2024, 1, 8, 10), kind="status_changed", status="pending")
    now = _utc(2024, 1, 8, 12)
    shared = compute_sla(base, default_calendars(), [created, pending], now)
    split = compute_sla(
        SlaPolicy(
            id="split",
            version=1,
            name="split",
            targets=base.targets,
            metric_pause_statuses={"first_response": ()},
        ),
        default_calendars(),
        [created, pending],
        now,
    )
    for sla, fr_elapsed in ((shared, 3600), (split, 3 * 3600)):
        fr, res = sla.metric("first_response"), sla.metric("resolution")
        assert fr is not None and res is not None
        assert fr.elapsed_seconds == fr_elapsed
        assert res.elapsed_seconds == 3600 and res.state == "paused"
    fr = split.metric("first_response")
    assert fr is not None and fr.state == "active" and fr.target_at == _utc(2024, 1, 8, 17)


def test_minimum_budget_only_lengthens() -> None:
    targets = dict(default_policy().targets)
    targets["P1"] = PriorityTargets(
        resolution=Target(calendar="business", kind="end_of_business_day", min_seconds=7200)
    )
    pol = SlaPolicy(id="m", version=1, name="m", targets=targets)
    early = SlaEvent(at=_utc(2024, 1, 8, 10), kind="created", priority="P1")
    res = compute_sla(pol, default_calendars(), [early], _utc(2024, 1, 8, 11)).metric("resolution")
    assert res is not None and res.target_at == _utc(2024, 1, 8, 17)
    assert res.budget_seconds == 7 * 3600


def _case(**extra: Any) -> dict[str, Any]:
    return {
        "events": [{"at": "2024-01-08T10:00:00Z", "kind": "created", "priority": "P1"}],
        "now": "2024-01-08T12:00:00Z",
        **extra,
    }


def test_wrapped_and_plain_cases_explain_alike() -> None:
    plain = _case(title="t")
    wrapped = {"case": plain, "expect": {"anything": [1, 2]}}
    a = explain_case(json.dumps(plain)).to_dict()
    b = explain_case(json.dumps(wrapped)).to_dict()
    assert a == b
    assert parse_case(json.dumps(wrapped)).title == "t"
    with pytest.raises(SlaConfigError) as err:
        parse_case(json.dumps({"case": plain, "expected": {}}))
    assert err.value.code == "case.schema"


def test_plan_must_match_the_policy_carried() -> None:
    plan = {"id": "gold", "policy_id": "default", "policy_version": 1}
    exp = explain_case(json.dumps(_case(organisation="acme", plan=plan)))
    assert exp.plan is not None and exp.plan.id == "gold" and exp.organisation == "acme"
    assert "organisation acme; plan gold" in exp.to_text()
    with pytest.raises(SlaConfigError) as err:
        explain_case(json.dumps(_case(plan={**plan, "policy_version": 2})))
    assert err.value.code == "case.plan_policy_missing"
    policy = msgspec.to_builtins(default_policy())
    with pytest.raises(SlaConfigError) as err:
        explain_case(json.dumps(_case(plan={**plan, "policy_id": "gold"}, policy=policy)))
    assert err.value.code == "case.plan_mismatch"


def test_each_cycle_counts_its_own_breach() -> None:
    # Two next-response cycles, the first answered late (P1: 2 h), the second in time.
    events = [
        {"at": "2024-01-08T08:00:00Z", "kind": "created", "priority": "P1"},
        {"at": "2024-01-08T08:10:00Z", "kind": "comment", "author_role": "agent"},
        {"at": "2024-01-08T09:00:00Z", "kind": "comment", "author_role": "customer"},
        {"at": "2024-01-08T12:00:00Z", "kind": "comment", "author_role": "agent"},
        {"at": "2024-01-08T13:00:00Z", "kind": "comment", "author_role": "customer"},
        {"at": "2024-01-08T13:30:00Z", "kind": "comment", "author_role": "agent"},
    ]
    exp = explain_case(json.dumps({"events": events, "now": "2024-01-08T14:00:00Z"}))
    nr = [m for m in exp.metrics if m.metric == "next_response"]
    assert [(m.cycle, m.status.state, m.status.breach_count) for m in nr] == [
        (1, "breached", 1),
        (2, "achieved", 1),
    ]
    ticket_level = exp.sla.metric("next_response")
    assert ticket_level is not None and ticket_level.breach_count == 1
    assert "breach_count" in json.dumps(exp.to_dict()["metrics"][1]["status"])

"""Public names, error codes and the explainer's output shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest

import relaydesk.desk.sla as sla
from relaydesk.desk.sla import (
    PriorityTargets,
    SlaConfigError,
    SlaEvent,
    SlaPolicy,
    Target,
    compute_sla,
    default_calendars,
    default_policy,
    explain_case,
)

NOW = datetime(2024, 1, 8, 12, tzinfo=UTC)


def test_public_names_are_pinned() -> None:
    assert sorted(sla.__all__) == [
        "Calendar",
        "Explanation",
        "HolidayLine",
        "MetricExplanation",
        "MetricStatus",
        "PauseLine",
        "PlanRef",
        "PriorityTargets",
        "SegmentLine",
        "SlaCase",
        "SlaConfigError",
        "SlaEvent",
        "SlaHistoryEntry",
        "SlaPolicy",
        "SpanLine",
        "Target",
        "TicketSla",
        "calendar_24x7",
        "compute_sla",
        "default_calendars",
        "default_policy",
        "explain_case",
        "parse_case",
    ]
    for name in sla.__all__:
        assert getattr(sla, name).__doc__


def test_default_policy_round_trips_as_json() -> None:
    pol = default_policy()
    again = msgspec.json.decode(msgspec.json.encode(pol), type=SlaPolicy)
    assert again == pol
    assert pol.warn_fraction == 0.75
    assert pol.targets["P0"].first_response == Target(seconds=900)


def _created(prio: str = "P2") -> SlaEvent:
    return SlaEvent(at=datetime(2024, 1, 8, 9, tzinfo=UTC), kind="created", priority=prio)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "case.bad_json"),
        (b'{"events": [], "now": 5}', "case.schema"),
        (b'{"events": [], "now": "2024-01-08T12:00:00Z", "extra": 1}', "case.schema"),
        (b'{"events": [], "now": "2024-01-08T12:00:00Z"}', "case.bad_event"),
        (
            b'{"events": [{"at": "2024-01-08T09:00:00", "kind": "created", "priority": "P1"}],'
            b' "now": "2024-01-08T12:00:00Z"}',
            "case.bad_event",
        ),
        (
            b'{"events": [{"at": "2024-01-08T09:00:00Z", "kind": "created", "priority": "P9"}],'
            b' "now": "2024-01-08T12:00:00Z"}',
            "policy.unknown_priority",
        ),
        (
            b'{"events": [{"at": "2024-01-08T09:00:00Z", "kind": "comment"}],'
            b' "now": "2024-01-08T12:00:00Z"}',
            "case.bad_event",
        ),
        (
            b'{"calendars": {"business": {"hours": {"mon": ["09:00-17:00", "12:00-13:00"]}}},'
            b' "events": [], "now": "2024-01-08T12:00:00Z"}',
            "calendar.overlap",
        ),
        (
            b'{"calendars": {}, "events": [{"at": "2024-01-08T09:00:00Z", "kind": "created",'
            b' "priority": "P1"}], "now": "2024-01-08T12:00:00Z"}',
            "policy.unknown_calendar",
        ),
    ],
)
def test_case_errors(raw: bytes, code: str) -> None:
    with pytest.raises(SlaConfigError) as err:
        explain_case(raw)
    assert err.value.code == code


def test_event_order_errors() -> None:
    comment = SlaEvent(at=datetime(2024, 1, 8, 8, tzinfo=UTC), kind="comment", author_role="agent")
    with pytest.raises(SlaConfigError) as err:
        compute_sla(default_policy(), default_calendars(), [comment, _created()], NOW)
    assert err.value.code == "case.bad_event"
    with pytest.raises(SlaConfigError) as err:
        compute_sla(default_policy(), default_calendars(), [_created(), _created()], NOW)
    assert err.value.code == "case.bad_event"
    with pytest.raises(SlaConfigError) as err:
        compute_sla(default_policy(), default_calendars(), [_created()], datetime(2024, 1, 8))
    assert err.value.code == "time.naive"


def test_policy_errors() -> None:
    base = default_policy()
    with pytest.raises(SlaConfigError) as err:
        SlaPolicy(id="x", version=1, name="x", targets={**base.targets, "P7": PriorityTargets()})
    assert err.value.code == "policy.unknown_priority"
    missing = {k: v for k, v in base.targets.items() if k != "P3"}
    with pytest.raises(SlaConfigError) as err:
        SlaPolicy(id="x", version=1, name="x", targets=missing)
    assert err.value.code == "policy.missing_priority"
    with pytest.raises(SlaConfigError) as err:
        SlaPolicy(id="x", version=1, name="x", targets=base.targets, pause_statuses=("solved",))
    assert err.value.code == "policy.bad_pause_status"
    with pytest.raises(SlaConfigError) as err:
        SlaPolicy(id="x", version=1, name="x", targets=base.targets, warn_fraction=1.5)
    assert err.value.code == "policy.bad_warn_fraction"
    with pytest.raises(SlaConfigError) as err:
        Target()
    assert err.value.code == "policy.bad_target"
    with pytest.raises(SlaConfigError) as err:
        Target(kind="end_of_business_day", seconds=5)
    assert err.value.code == "policy.bad_target"


def test_metric_without_target_is_not_reported() -> None:
    base = default_policy()
    targets = dict(base.targets)
    targets["P2"] = PriorityTargets(first_response=Target(calendar="business", business_days=1))
    pol = SlaPolicy(id="x", version=2, name="x", targets=targets)
    out = compute_sla(pol, default_calendars(), [_created()], NOW)
    assert [m.metric for m in out.metrics] == ["first_response"]
    assert (out.policy_id, out.policy_version, out.priority) == ("x", 2, "P2")


def test_explainer_shows_arithmetic() -> None:
    raw = json.dumps(
        {
            "calendars": {
                "business": {
                    "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
                    "timezone": "Europe/London",
                    "holiday_country": "GB",
                    "holiday_subdivision": "ENG",
                }
            },
            "events": [
                {"at": "2024-12-24T15:00:00Z", "kind": "created", "priority": "P2"},
                {"at": "2024-12-24T16:00:00Z", "kind": "status_changed", "status": "pending"},
                {"at": "2024-12-27T10:00:00Z", "kind": "status_changed", "status": "open"},
            ],
            "now": "2024-12-30T12:00:00Z",
        }
    )
    exp = explain_case(raw)
    fr = exp.metrics[0]
    assert fr.metric == "first_response"
    assert [h.name for h in fr.holidays] == ["Christmas Day", "Boxing Day"]
    # counted: Tue 15-16 (1h), Fri 10-17 (7h) -> 8h; paused removed Tue 16-17 + Fri 09-10
    assert [s.seconds for s in fr.counted] == [3600, 25200]
    assert fr.counted[-1].total_seconds == 28800
    assert fr.pauses[0].removed_seconds == 7200
    assert fr.status.target_at == datetime(2024, 12, 27, 17, tzinfo=UTC)
    assert fr.status.state == "breached"
    text = exp.to_text()
    assert "holiday skipped: 2024-12-25 Christmas Day" in text
    assert "removed 2h00m (7200 s)" in text
    assert "BREACHED at 2024-12-27T17:00:00+00:00" in text
    d = exp.to_dict()
    assert d["metrics"][0]["status"]["target_at"] == "2024-12-27T17:00:00Z"
    json.dumps(d)


def test_retroactive_breach_is_explained() -> None:
    raw = json.dumps(
        {
            "events": [
                {"at": "2024-01-08T09:00:00Z", "kind": "created", "priority": "P3"},
                {"at": "2024-01-08T12:00:00Z", "kind": "priority_changed", "priority": "P1"},
            ],
            "now": "2024-01-08T12:30:00Z",
        }
    )
    exp = explain_case(raw)
    assert "had already passed" in exp.metrics[0].conclusion
    assert exp.metrics[0].segments[0].priority == "P3"
    assert exp.metrics[0].segments[1].target_at == datetime(2024, 1, 8, 11, tzinfo=UTC)

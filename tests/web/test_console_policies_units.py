"""Pure parts of the console's SLA policy pages: targets in words, the editor's text, its
refusal codes (the API's), the re-apply choice, and the ticket log line for a re-apply."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from relaydesk.desk.sla import SlaPolicy, Target, default_calendars, default_policy
from relaydesk.desk.tickets.model import TicketEvent
from relaydesk.web.console._policies import (
    MAX_POLICY_TEXT,
    VersionEntry,
    calendar_text,
    draft_text,
    group_versions,
    parse_policy_text,
    parse_version_value,
    policy_view,
    span_text,
    target_value,
    version_value,
)
from relaydesk.web.console._views import event_lines


def _contract() -> SlaPolicy:
    base = msgspec.to_builtins(default_policy())
    base["targets"]["P3"]["resolution"] = {
        "calendar": "business",
        "kind": "end_of_nth_business_day",
        "n": 3,
        "cutoff": "15:00",
        "min_seconds": 5400,
    }
    base["metric_pause_statuses"] = {"resolution": ["pending", "on_hold"]}
    base["reopen_mode"] = "new_cycle"
    return msgspec.convert(base, SlaPolicy)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45, "45 s"), (900, "15 min"), (7200, "2 h"), (16200, "4 h 30 min"),
     (93600, "1 d 2 h"), (3661, "1 h 1 min 1 s")],
)  # fmt: skip
def test_span_text(seconds: float, text: str) -> None:
    assert span_text(seconds) == text


def test_target_values_in_words() -> None:
    assert target_value(Target(seconds=900)) == "15 min"
    assert target_value(Target(calendar="business", business_days=1)) == (
        "1 business day of open time"
    )
    assert target_value(Target(calendar="business", business_days=0.5, seconds=3600)) == (
        "0.5 business days + 1 h of open time"
    )
    eod = "end_of_nth_business_day"
    assert target_value(Target(kind="end_of_business_day")) == "end of the business day it starts"
    assert target_value(Target(kind=eod, n=0)) == "end of the business day it starts"
    assert target_value(Target(kind=eod, n=1)) == "end of the next business day"
    assert (
        target_value(Target(kind=eod, n=2)) == "end of the 2nd business day after the starting one"
    )
    assert (
        target_value(Target(kind=eod, n=11))
        == "end of the 11th business day after the starting one"
    )
    assert (
        target_value(Target(kind=eod, n=23))
        == "end of the 23rd business day after the starting one"
    )


def test_policy_view_shows_cutoff_minimum_pauses_and_calendar() -> None:
    view = policy_view(_contract(), default_calendars())
    assert [p.priority for p in view.priorities] == ["P0", "P1", "P2", "P3"]
    p3 = {r.metric: r for r in view.priorities[3].rows}
    res = p3["resolution"]
    assert (res.kind, res.value, res.cutoff, res.minimum) == (
        "end of the n-th business day",
        "end of the 3rd business day after the starting one",
        "15:00 local",
        "1 h 30 min",
    )
    assert (res.pauses, res.pauses_own, res.calendar) == (
        "pending, on_hold",
        True,
        "business (Europe/London)",
    )
    assert (p3["first_response"].pauses, p3["first_response"].pauses_own) == ("pending", False)
    p1 = {r.metric: r for r in view.priorities[1].rows}
    assert p1["resolution"].cutoff == "none"  # an end-of-day target without a cut-off
    assert p1["first_response"].cutoff == "—"  # not applicable to durations
    assert view.reopen_mode.startswith("new cycle")
    assert view.warn_percent == "75%"


def test_unmeasured_metric_and_unknown_calendar() -> None:
    base = msgspec.to_builtins(default_policy())
    base["targets"]["P3"]["next_response"] = None
    view = policy_view(msgspec.convert(base, SlaPolicy), {})
    row = view.priorities[3].rows[1]
    assert (row.metric, row.measured, row.kind, row.value) == (
        "next_response",
        False,
        "not measured",
        "",
    )
    assert calendar_text("business", {}) == "business"
    assert calendar_text("24x7", {}) == "24x7 (always open)"


@pytest.mark.parametrize("policy", [default_policy(), _contract()])
def test_draft_text_round_trips_without_id_version_or_defaults(policy: SlaPolicy) -> None:
    text = draft_text(policy)
    body = msgspec.json.decode(text)
    assert "id" not in body and "version" not in body
    assert body["targets"]["P0"]["first_response"] == {"kind": "duration", "seconds": 900.0}
    parsed, problem = parse_policy_text(policy.id, text)
    assert problem is None and parsed == policy


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "request.invalid"),
        ("   \n", "request.invalid"),
        ("{", "request.invalid"),
        ("[]", "request.invalid"),
        ('{"name": "x"}', "request.invalid"),
        ('{"name": "x", "targets": {}, "colour": "red"}', "request.invalid"),
        ('{"name": "' + "n" * 201 + '", "targets": {}}', "request.too_long"),
        ('{"name": "x", "targets": {}}', "policy.missing_priority"),
        ('{"name": "x", "targets": {"P9": {}}}', "policy.unknown_priority"),
        ('{"name": "x", "targets": {"P0": {"resolution": {"seconds": -1}}}}', "policy.bad_target"),
        (" " * (MAX_POLICY_TEXT + 1), "request.invalid"),
        ("{" + " " * MAX_POLICY_TEXT + "}", "request.too_long"),
    ],
)
def test_refused_texts_carry_the_apis_codes(text: str, code: str) -> None:
    policy, problem = parse_policy_text("default", text)
    assert policy is None and problem is not None
    assert problem.code == code, problem
    assert problem.message


def test_a_refused_target_is_named_in_the_message() -> None:
    body = msgspec.to_builtins(default_policy())
    body["targets"]["P2"]["resolution"] = {"kind": "end_of_business_day", "cutoff": "25:00"}
    del body["id"], body["version"]
    _, problem = parse_policy_text("default", msgspec.json.encode(body).decode())
    assert problem is not None and problem.message.startswith("targets.P2.resolution: ")
    body["targets"]["P2"]["resolution"] = {"kind": "end_of_nth_business_day"}
    _, problem = parse_policy_text("default", msgspec.json.encode(body).decode())
    assert problem is not None and problem.code == "policy.bad_target"
    assert problem.message == (
        "targets.P2.resolution: end_of_nth_business_day needs n between 0 and 400"
    )


def test_the_policy_id_is_checked_too() -> None:
    _, problem = parse_policy_text(" bad", draft_text(default_policy()))
    assert problem is not None and problem.code == "policy.bad_id"


def test_version_choice_values() -> None:
    for pid in ("default", "gold:eu", "a b"):
        assert parse_version_value(version_value(pid, 12)) == (pid, 12)
    for bad in (
        "",
        "default",
        "x:default",
        ":default",
        "3:",
        "12345678:default",
        "-1:d",
        "²:default",
    ):
        assert parse_version_value(bad) is None


def test_group_versions_keeps_the_latest_name() -> None:
    rows = [
        VersionEntry(id="default", version=1, name="Old", stored_at=""),
        VersionEntry(id="default", version=2, name="New", stored_at=""),
        VersionEntry(id="gold", version=4, name="Gold", stored_at=""),
    ]
    grouped = group_versions(rows)
    assert [(g.id, g.name, g.latest, len(g.versions)) for g in grouped] == [
        ("default", "New", 2, 2),
        ("gold", "Gold", 4, 1),
    ]


def test_policy_applied_event_reads_as_words_not_a_dict() -> None:
    at = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
    events = [
        TicketEvent(
            ticket_id=1,
            seq=7,
            at=at,
            kind="sla_policy_applied",
            actor_kind="agent",
            actor_id="alice",
            data={
                "from": {"policy_id": "default", "version": 1},
                "to": {"policy_id": "gold", "version": 3},
            },
        ),
        TicketEvent(
            ticket_id=1,
            seq=8,
            at=at,
            kind="priority_changed",
            actor_kind="agent",
            actor_id="alice",
            data={"from": "P2", "to": "P1"},
        ),
    ]
    lines = event_lines(events)
    assert (lines[0].kind, lines[0].detail) == ("SLA policy applied", "from default v1 to gold v3")
    assert (lines[1].kind, lines[1].detail) == ("priority changed", "from P2 to P1")
    assert all("{" not in line.detail for line in lines)

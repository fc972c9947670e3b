"""What the customer sees and what the agents keep: the public acknowledgement states only
findings above the public threshold (plain words, evidence, next step), asks for the data
that would decide when nothing is confident, and says "no data" when there is none; the
internal note keeps every finding and the rejected hypotheses with their reasons."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import msgspec
from diag_kit import MIN, T0, conn, healthy_minute, spread

from relaydesk.desk.autoack import internal_note, public_comment
from relaydesk.desk.diagnosis import PUBLIC_CONFIDENCE, Snapshot, diagnose
from relaydesk.desk.tickets.model import Ticket

END = T0 + 10 * MIN


def _ticket() -> Ticket:
    now = datetime(2024, 3, 4, 10, 30, tzinfo=UTC)
    return Ticket(
        id=1, organisation_id="acme", requester_id="dana", assignee_id=None, subject="slow",
        description="", priority="P2", status="new", skills=(), tags=(), app_id="acme",
        region=None, window_start=None, window_end=None, policy_id="default",
        policy_version=1, created_at=now, updated_at=now, solved_at=None, closed_at=None,
        acknowledged_at=None, first_response_at=None, sla_state="active",
        next_breach_at=None, due_at=None,
    )  # fmt: skip


def snap(**kw: Any) -> Snapshot:
    fields: dict[str, Any] = {"app": "acme", "from_ms": T0, "to_ms": END}
    fields.update(kw)
    return msgspec.convert(fields, Snapshot, from_attributes=True)


def _slow_storage_with_one_shot_sessions() -> Snapshot:
    rng = random.Random(1)
    minutes = [
        healthy_minute(
            rng,
            T0 + i * MIN,
            "edge-1",
            sent=300,
            stages={"commit": spread(rng, 600.0, 300), "server": spread(rng, 900.0, 300)},
        )
        for i in range(10)
    ]
    one_shot = [conn("cli-send", T0 + i * 4000, T0 + i * 4000 + 200) for i in range(20)]
    return snap(symptom="delay", minutes=minutes, connections=one_shot)


def test_public_states_confident_findings_with_evidence_and_next_step() -> None:
    d = diagnose(_slow_storage_with_one_shot_sessions())
    assert d.public and all(f.confidence >= PUBLIC_CONFIDENCE for f in d.public)
    text = public_comment(d)
    top = d.public[0]
    assert top.title in text and "Evidence: commit p50" in text and "Next step:" in text
    assert "cli-send" not in text  # a healthy client is never named in public
    note = internal_note(d, _ticket(), None, None)
    assert "Rejected hypotheses:" in note and "cli-send" in note and "ended normally" in note


def test_weak_findings_stay_internal_and_the_customer_is_asked_for_doctor() -> None:
    rng = random.Random(2)
    minutes = [  # commits at 120 ms: slower than healthy, not enough to claim in public
        healthy_minute(rng, T0 + i * MIN, "edge-1", stages={"commit": spread(rng, 120.0, 600)})
        for i in range(10)
    ]
    d = diagnose(snap(minutes=minutes))
    assert d.findings and not d.public
    text = public_comment(d)
    assert d.findings[0].title not in text
    assert "no cause we are confident about" in text and "relaydesk doctor --attach" in text
    note = internal_note(d, _ticket(), None, None)
    assert d.findings[0].title in note and "not shown to customer" in note


def test_no_data_is_said_as_such() -> None:
    d = diagnose(snap())
    text = public_comment(d)
    assert "no telemetry for acme" in text and "found no" not in text
    assert "No data" in internal_note(d, _ticket(), None, None)

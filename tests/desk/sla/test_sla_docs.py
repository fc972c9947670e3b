"""docs/sla.md §3.1: the contract table, entered as written, computes what the contract says."""

from __future__ import annotations

import pathlib
import re
from datetime import UTC, datetime

import msgspec

from relaydesk.desk.sla import SlaEvent, SlaPolicy, compute_sla, default_calendars

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "sla.md"


def _contract() -> SlaPolicy:
    section = DOC.read_text().split("### 3.1", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    return msgspec.json.decode(block.group(1), type=SlaPolicy)


def _due(prio: str, created: datetime, metric: str, *extra: SlaEvent) -> datetime | None:
    events = [SlaEvent(at=created, kind="created", priority=prio), *extra]
    sla = compute_sla(_contract(), default_calendars(), events, created)
    m = sla.metric(metric)  # type: ignore[arg-type]
    assert m is not None
    return m.target_at


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_contract_table_from_the_docs() -> None:
    mon_11 = _utc(2024, 1, 8, 11)
    assert _due("P1", _utc(2024, 1, 8, 14, 59), "resolution") == _utc(2024, 1, 8, 17)
    assert _due("P1", _utc(2024, 1, 8, 15, 0), "resolution") == _utc(2024, 1, 9, 17)
    assert _due("P1", mon_11, "first_response") == _utc(2024, 1, 8, 12)
    assert _due("P2", mon_11, "first_response") == _utc(2024, 1, 9, 17)
    assert _due("P2", mon_11, "resolution") == _utc(2024, 1, 15, 17)
    # "within 3 business days" vs "by the end of the 10th business day"
    assert _due("P3", mon_11, "first_response") == _utc(2024, 1, 11, 11)
    assert _due("P3", mon_11, "resolution") == _utc(2024, 1, 22, 17)


def test_contract_pending_pauses_resolution_not_first_response() -> None:
    created = _utc(2024, 1, 8, 9)
    events = [
        SlaEvent(at=created, kind="created", priority="P2"),
        SlaEvent(at=_utc(2024, 1, 8, 10), kind="status_changed", status="pending"),
    ]
    sla = compute_sla(_contract(), default_calendars(), events, _utc(2024, 1, 8, 12))
    fr, res = sla.metric("first_response"), sla.metric("resolution")
    assert fr is not None and fr.state == "active" and fr.elapsed_seconds == 3 * 3600
    assert res is not None and res.state == "paused" and res.elapsed_seconds == 3600

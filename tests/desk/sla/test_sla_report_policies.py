"""The SLA report per policy version: tickets measured under v1, v2 and a re-applied v2."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import msgspec
from desk_testkit import ALICE, DANA, MONDAY_10

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.reports import SlaReport, report_csv, report_tx
from relaydesk.desk.sla import PriorityTargets, Target, default_policy
from relaydesk.desk.tickets import NewTicket
from relaydesk.storage.engine import Database, Tx


async def test_report_splits_attainment_by_policy_version(
    desk: DeskComponent, desk_db: Database, desk_clock: FakeClock
) -> None:
    svc = desk.tickets
    # v1: P1 resolution by the end of the business day.  Created Monday 10:00 (London = UTC
    # in March), no solve: breached at Monday 17:00.
    v1 = await svc.create_ticket(DANA, NewTicket(subject="v1", priority="P1"))
    targets = dict(default_policy().targets)
    targets["P1"] = msgspec.structs.replace(
        targets["P1"],
        resolution=Target(calendar="business", kind="end_of_nth_business_day", n=2),
    )
    assert isinstance(targets["P1"], PriorityTargets)
    stored = await svc.add_policy_version(
        ALICE, msgspec.structs.replace(default_policy(), targets=targets)
    )
    assert stored.version == 2
    v2 = await svc.create_ticket(DANA, NewTicket(subject="v2", priority="P1"))
    moved = await svc.create_ticket(DANA, NewTicket(subject="moved", priority="P1"))
    await svc.apply_policy(ALICE, moved.id, None, 1)  # an agent pins it back to v1
    desk_clock.advance(timedelta(days=1, hours=9).total_seconds())  # Tuesday 19:00
    await desk.scheduler.tick()

    def run(tx: Tx) -> SlaReport:
        start = datetime(2024, 3, 1, tzinfo=UTC)
        return report_tx(desk.store, tx, start, start + timedelta(days=31))

    report = await desk_db.read(run)
    assert MONDAY_10.month == 3
    res = {
        (p.policy_id, p.policy_version): (p.achieved, p.breached, p.open)
        for p in report.policies
        if p.metric == "resolution"
    }
    # v1 tickets (the original and the pinned one) missed Monday 17:00; v2 runs to Wednesday.
    assert res == {("default", 1): (0, 2, 0), ("default", 2): (0, 0, 1)}
    late = {(b.ticket_id, b.policy_version) for b in report.breaches if b.metric == "resolution"}
    assert late == {(v1.id, 1), (moved.id, 1)}
    assert v2.policy_version == 2
    rows = list(csv.DictReader(io.StringIO(report_csv(report, "policies"))))
    assert {"policy_id", "policy_version", "priority", "metric", "attainment"} <= set(rows[0])
    assert {r["policy_version"] for r in rows} == {"1", "2"}

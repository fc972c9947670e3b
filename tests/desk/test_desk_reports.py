"""SLA reports with known numbers: attainment, percentiles, breach list, CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from desk_testkit import ALICE, DANA, MONDAY_10

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.reports import SlaReport, percentile, report_csv, report_tx
from relaydesk.desk.tickets import NewTicket
from relaydesk.storage.engine import Database, Tx


def test_nearest_rank_percentile() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 90) == 9.0
    assert percentile(values, 95) == 10.0
    assert percentile(values, 99) == 10.0
    assert percentile([4.0], 1) == 4.0
    assert percentile([], 50) is None


async def _report(desk: DeskComponent, db: Database, start: datetime, end: datetime) -> SlaReport:
    def run(tx: Tx) -> SlaReport:
        return report_tx(desk.store, tx, start, end)

    return await db.read(run)


async def test_report_with_known_numbers(
    desk: DeskComponent, desk_db: Database, desk_clock: FakeClock
) -> None:
    svc = desk.tickets

    # Four P1 tickets created at Monday 10:00, 11:00, 12:00, 13:00 answered after
    # 30, 60, 90 and 150 minutes (the last misses the 2 h target).
    def move_to(at: datetime) -> None:
        desk_clock.advance((at - svc.now()).total_seconds())

    ids = []
    for i, minutes in enumerate((30, 60, 90, 150)):
        move_to(MONDAY_10 + timedelta(hours=i))
        t = await svc.create_ticket(DANA, NewTicket(subject=f"t{i}", priority="P1"))
        move_to(MONDAY_10 + timedelta(hours=i, minutes=minutes))
        await svc.add_comment(ALICE, t.id, "reply")
        ids.append(t.id)
    # One P1 solved later: resolution fulfilled within the business day.
    desk_clock.advance(60)
    await svc.change_status(ALICE, ids[0], "solved")
    # A ticket in April is outside March and lands in its own month.
    move_to(datetime(2024, 4, 2, 9, 0, tzinfo=UTC))
    await svc.create_ticket(DANA, NewTicket(subject="april", priority="P3"))
    # The scheduler passes the missed resolution targets and refreshes the cached rows.
    await desk.scheduler.tick()

    march = await _report(
        desk, desk_db, datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
    )
    assert march.tickets == 4
    fr = next(a for a in march.attainment if a.priority == "P1" and a.metric == "first_response")
    assert (fr.month, fr.achieved, fr.breached, fr.open, fr.attainment) == (
        "2024-03",
        3,
        1,
        0,
        0.75,
    )
    res = next(a for a in march.attainment if a.metric == "resolution")
    # Ticket 1 was solved at 15:31, before the end of the business day (17:00); the other
    # three were still open at 17:00 on Monday, and it is April now: breached.
    assert (res.achieved, res.breached, res.open) == (1, 3, 0)
    p = next(x for x in march.percentiles if x.metric == "first_response" and x.priority == "P1")
    assert p.count == 4
    assert (p.business_p50, p.business_p90, p.business_p99) == (3600.0, 9000.0, 9000.0)
    assert (p.wall_p50, p.wall_p90) == (3600.0, 9000.0)
    assert [(b.ticket_id, b.metric) for b in march.breaches if b.metric == "first_response"] == [
        (ids[3], "first_response")
    ]
    late = next(b for b in march.breaches if b.metric == "first_response")
    assert late.breached_at == MONDAY_10 + timedelta(hours=5)  # created 13:00, target 15:00
    assert late.fulfilled_at == MONDAY_10 + timedelta(hours=5, minutes=30)

    both = await _report(
        desk, desk_db, datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC)
    )
    assert {a.month for a in both.attainment} == {"2024-03", "2024-04"}
    assert both.tickets == 5

    rows = list(csv.reader(io.StringIO(report_csv(march, "attainment"))))
    assert rows[0] == ["month", "priority", "metric", "achieved", "breached", "open", "attainment"]
    assert ["2024-03", "P1", "first_response", "3", "1", "0", "0.75"] in rows
    breaches = list(csv.DictReader(io.StringIO(report_csv(march, "breaches"))))
    assert [b["metric"] for b in breaches].count("resolution") == 3
    assert {b["ticket_id"] for b in breaches if b["metric"] == "first_response"} == {str(ids[3])}
    pct = list(csv.DictReader(io.StringIO(report_csv(march, "percentiles"))))
    assert {"metric", "priority", "business_p50", "wall_p99"} <= set(pct[0])


async def test_empty_window(desk: DeskComponent, desk_db: Database) -> None:
    report = await _report(
        desk, desk_db, datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC)
    )
    assert (report.tickets, report.attainment, report.breaches) == (0, [], [])
    assert report_csv(report).splitlines() == [
        "month,priority,metric,achieved,breached,open,attainment"
    ]

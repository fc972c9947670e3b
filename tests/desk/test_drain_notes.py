"""An automatic drain is written to the tickets whose diagnosis recommended it (both
storage engines, real desk, fake clock)."""

from __future__ import annotations

from datetime import timedelta

import msgspec
from desk_testkit import ALICE, DANA

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.drain_notes import DrainNotes
from relaydesk.desk.tickets.model import NewTicket
from relaydesk.edges.autodrain import Decision
from relaydesk.storage.engine import Database


async def _ticket(desk: DeskComponent, note: str) -> int:
    new = msgspec.convert({"subject": "Sends fail in eu-west", "app_id": "acme-chat"}, NewTicket)
    t = await desk.tickets.create_ticket(DANA, new)
    await desk.tickets.add_automation_comment(t.id, note, public=False)
    return t.id


async def test_the_drain_lands_on_the_tickets_that_asked_for_it(
    desk: DeskComponent, desk_db: Database, desk_clock: FakeClock
) -> None:
    asked = await _ticket(desk, 'Drain edge-b (`relaydesk node drain edge-b --reason "x"`).')
    other = await _ticket(desk, 'Drain edge-bb (`relaydesk node drain edge-bb --reason "x"`).')
    desk_clock.advance(timedelta(minutes=5).total_seconds())
    notes = DrainNotes(desk_db, desk.tickets, desk_clock)
    drained = await notes.record(Decision("edge-b", "drain", "worse than its siblings"))
    assert drained == [asked]
    body = (await desk.tickets.detail(ALICE, asked)).comments[-1]
    assert not body.public and body.author_kind == "automation"
    assert body.body.startswith("Automatic drain: node edge-b was drained")
    assert "worse than its siblings" in body.body and "relaydesk node undrain edge-b" in body.body
    assert all(
        "Automatic" not in c.body for c in (await desk.tickets.detail(ALICE, other)).comments
    )
    assert await notes.record(Decision("edge-b", "undrain", "on probation")) == [asked]
    # A day later the ticket is too old to have triggered a new drain.
    desk_clock.advance(timedelta(days=1, minutes=1).total_seconds())
    assert await notes.record(Decision("edge-b", "drain", "again")) == []

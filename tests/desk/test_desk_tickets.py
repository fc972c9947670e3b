"""Ticket service: creation, transitions, comments, SLA upkeep, isolation (FakeClock + SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from desk_testkit import ALICE, BOB, DANA, FRANK, MONDAY_10

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.escalation.routing import choose_assignee
from relaydesk.desk.sla import PriorityTargets, SlaPolicy, Target
from relaydesk.desk.tickets import (
    STATUSES,
    TRANSITIONS,
    DeskError,
    NewTicket,
    TicketFilter,
    can_transition,
)
from relaydesk.desk.tickets.service import TicketService
from relaydesk.storage.engine import Database, Tx


def _count(db: Database, table: str) -> int:
    return int(db.read_sync(lambda tx: tx.scalar(f"SELECT COUNT(*) FROM {table}")))


async def test_customer_creates_ticket_with_policy_snapshot_and_targets(
    desk: DeskComponent,
) -> None:
    t = await desk.tickets.create_ticket(DANA, NewTicket(subject="Reconnects", priority="P1"))
    assert (t.organisation_id, t.requester_id, t.status) == ("acme", "dana", "new")
    assert (t.policy_id, t.policy_version) == ("default", 1)
    # P1: first response 2 h on 24x7 -> 12:00; resolution by end of the business day 17:00.
    assert t.next_breach_at == MONDAY_10 + timedelta(hours=2)
    assert t.due_at == MONDAY_10 + timedelta(hours=2)
    assert t.sla_state == "active"
    detail = await desk.tickets.detail(ALICE, t.id)
    assert [e.kind for e in detail.events] == ["created"]
    assert detail.events[0].actor_kind == "customer"
    sla = await desk.tickets.sla_status(ALICE, t.id)
    res = sla.metric("resolution")
    assert res is not None and res.target_at == datetime(2024, 3, 4, 17, 0, tzinfo=UTC)


async def test_agent_must_name_an_existing_requester(
    desk: DeskComponent, desk_db: Database
) -> None:
    with pytest.raises(DeskError) as err:
        await desk.tickets.create_ticket(ALICE, NewTicket(subject="x"))
    assert err.value.code == "ticket.unknown_requester"
    with pytest.raises(DeskError) as err:
        await desk.tickets.create_ticket(ALICE, NewTicket(subject="x", requester_id="nobody"))
    assert err.value.code == "ticket.unknown_requester"
    # A customer cannot file for another organisation's contact.
    with pytest.raises(DeskError) as err:
        await desk.tickets.create_ticket(DANA, NewTicket(subject="x", requester_id="frank"))
    assert err.value.code == "ticket.unknown_requester"
    assert _count(desk_db, "desk_tickets") == 0


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (MONDAY_10, MONDAY_10 - timedelta(minutes=1)),
        (MONDAY_10, MONDAY_10),
        (MONDAY_10, None),
    ],
)
async def test_bad_time_window_writes_nothing(
    desk: DeskComponent, desk_db: Database, start: datetime, end: datetime | None
) -> None:
    with pytest.raises(DeskError) as err:
        await desk.tickets.create_ticket(
            DANA, NewTicket(subject="x", window_start=start, window_end=end)
        )
    assert err.value.code == "ticket.invalid_window"
    assert _count(desk_db, "desk_tickets") == 0
    assert _count(desk_db, "desk_ticket_events") == 0


def test_transition_table_closed_is_final() -> None:
    assert TRANSITIONS["closed"] == frozenset()
    assert not can_transition("closed", "pending")
    assert can_transition("solved", "open")
    assert not can_transition("new", "closed")
    assert set(TRANSITIONS) == set(STATUSES)


async def test_every_table_transition_is_accepted_and_others_refused(
    desk: DeskComponent, desk_db: Database
) -> None:
    for current in STATUSES:
        for target in STATUSES:
            if target == current:
                continue
            t = await desk.tickets.create_ticket(DANA, NewTicket(subject=f"{current}->{target}"))
            # Walk to ``current`` along allowed edges.
            path = {
                "new": [],
                "open": ["open"],
                "pending": ["pending"],
                "on_hold": ["on_hold"],
                "solved": ["solved"],
                "closed": ["solved", "closed"],
            }[current]
            for step in path:
                await desk.tickets.change_status(ALICE, t.id, step)
            before = _count(desk_db, "desk_ticket_events")
            if target in TRANSITIONS[current]:
                after = await desk.tickets.change_status(ALICE, t.id, target)
                assert after.status == target
            else:
                with pytest.raises(DeskError) as err:
                    await desk.tickets.change_status(ALICE, t.id, target)
                assert err.value.code == "ticket.invalid_transition"
                assert err.value.status == 409
                assert _count(desk_db, "desk_ticket_events") == before


async def test_unknown_status_and_priority(desk: DeskComponent) -> None:
    t = await desk.tickets.create_ticket(DANA, NewTicket(subject="x"))
    with pytest.raises(DeskError) as err:
        await desk.tickets.change_status(ALICE, t.id, "waiting")
    assert err.value.code == "ticket.unknown_status"
    with pytest.raises(DeskError) as err:
        await desk.tickets.change_priority(ALICE, t.id, "P5")
    assert err.value.code == "ticket.unknown_priority"


async def test_comments_drive_status_and_sla(desk: DeskComponent, desk_clock: FakeClock) -> None:
    svc = desk.tickets
    t = await svc.create_ticket(DANA, NewTicket(subject="Presence flaps", priority="P1"))
    desk_clock.advance(60)
    await svc.add_automation_comment(t.id, "We got it.", public=True)
    t1 = (await svc.detail(ALICE, t.id)).ticket
    assert t1.acknowledged_at == MONDAY_10 + timedelta(seconds=60)
    assert t1.first_response_at is None and t1.status == "new"
    desk_clock.advance(60)
    await svc.add_comment(ALICE, t.id, "internal: check node 3", public=False)
    assert (await svc.detail(ALICE, t.id)).ticket.first_response_at is None
    desk_clock.advance(600)
    await svc.add_comment(ALICE, t.id, "Looking into it", public=True)
    t2 = (await svc.detail(ALICE, t.id)).ticket
    assert t2.status == "open"
    assert t2.first_response_at == MONDAY_10 + timedelta(seconds=720)
    await svc.change_status(ALICE, t.id, "pending")
    desk_clock.advance(3600)
    await svc.add_comment(DANA, t.id, "Here are the logs", public=True)
    t3 = (await svc.detail(ALICE, t.id)).ticket
    assert t3.status == "open"  # the customer's reply re-opens a pending ticket
    kinds = [e.kind for e in (await svc.detail(ALICE, t.id)).events]
    assert kinds == [
        "created",
        "comment",
        "comment",
        "comment",
        "status_changed",
        "status_changed",
        "comment",
        "status_changed",
    ]


async def test_pending_pauses_and_queue_puts_it_last(desk: DeskComponent) -> None:
    svc = desk.tickets
    a = await svc.create_ticket(DANA, NewTicket(subject="a", priority="P2"))
    b = await svc.create_ticket(DANA, NewTicket(subject="b", priority="P3"))
    c = await svc.create_ticket(DANA, NewTicket(subject="c", priority="P1"))
    await svc.change_status(ALICE, a.id, "pending")
    paused = (await svc.detail(ALICE, a.id)).ticket
    assert paused.sla_state == "paused" and paused.due_at is None
    queue = await svc.queue(ALICE)
    assert [e.ticket.id for e in queue] == [c.id, b.id, a.id]
    assert queue[0].time_to_breach_s == 7200.0
    assert queue[2].time_to_breach_s is None


async def test_priority_upgrade_recomputes_from_creation_and_breaches_at_once(
    desk: DeskComponent, desk_clock: FakeClock
) -> None:
    svc = desk.tickets
    t = await svc.create_ticket(DANA, NewTicket(subject="slow", priority="P3"))
    desk_clock.advance(3 * 3600)
    up = await svc.change_priority(ALICE, t.id, "P1")
    # P1 first response is creation + 2 h, already past: breached, and first in the queue.
    assert up.sla_state == "breached"
    assert up.due_at == MONDAY_10 + timedelta(hours=2)
    queue = await svc.queue(ALICE)
    assert queue[0].ticket.id == t.id and queue[0].time_to_breach_s == -3600.0
    same = await svc.change_priority(ALICE, t.id, "P1")
    assert same.updated_at == up.updated_at  # no-op, nothing appended


async def test_customer_isolation_and_internal_notes(desk: DeskComponent) -> None:
    svc = desk.tickets
    t = await svc.create_ticket(DANA, NewTicket(subject="mine"))
    await svc.add_comment(ALICE, t.id, "internal note", public=False)
    await svc.add_comment(ALICE, t.id, "public reply", public=True)
    for call in (
        svc.detail(FRANK, t.id),
        svc.add_comment(FRANK, t.id, "hi"),
        svc.sla_status(FRANK, t.id),
    ):
        with pytest.raises(DeskError) as err:
            await call
        assert err.value.code == "ticket.not_found" and err.value.status == 404
    seen = await svc.detail(DANA, t.id)
    assert [c.body for c in seen.comments] == ["public reply"]
    assert all(e.data.get("public", True) for e in seen.events)
    assert {e.kind for e in seen.events} <= {"created", "comment", "status_changed"}
    assert [x.id for x in await svc.list_tickets(FRANK, TicketFilter())] == []
    assert await svc.list_tickets(FRANK, TicketFilter(organisation_id="acme")) == []
    with pytest.raises(DeskError) as err:
        await svc.add_comment(DANA, t.id, "psst", public=False)
    assert err.value.code == "auth.forbidden"
    with pytest.raises(DeskError) as err:
        await svc.change_status(DANA, t.id, "solved")
    assert err.value.code == "auth.forbidden"
    with pytest.raises(DeskError) as err:
        await svc.queue(DANA)
    assert err.value.code == "auth.forbidden"


async def test_closed_ticket_refuses_comments_and_changes(desk: DeskComponent) -> None:
    svc = desk.tickets
    t = await svc.create_ticket(DANA, NewTicket(subject="done"))
    await svc.change_status(ALICE, t.id, "solved")
    closed = await svc.change_status(ALICE, t.id, "closed")
    assert closed.closed_at is not None and closed.solved_at is not None
    for call in (
        svc.add_comment(DANA, t.id, "again"),
        svc.change_priority(ALICE, t.id, "P0"),
        svc.assign(ALICE, t.id, "bob"),
    ):
        with pytest.raises(DeskError) as err:
            await call
        assert err.value.code == "ticket.closed"


async def test_oversized_and_empty_text(desk: DeskComponent) -> None:
    svc = desk.tickets
    t = await svc.create_ticket(DANA, NewTicket(subject="x"))
    with pytest.raises(DeskError) as err:
        await svc.add_comment(DANA, t.id, "y" * 20_001)
    assert err.value.code == "request.too_long"
    with pytest.raises(DeskError) as err:
        await svc.add_comment(DANA, t.id, "   ")
    assert err.value.code == "request.invalid"


async def test_assignment_and_filters(desk: DeskComponent) -> None:
    svc = desk.tickets
    t = await svc.create_ticket(DANA, NewTicket(subject="x", tags=("sdk", "android")))
    await svc.create_ticket(FRANK, NewTicket(subject="y", priority="P0"))
    assigned = await svc.assign(ALICE, t.id, "bob")
    assert assigned.assignee_id == "bob"
    with pytest.raises(DeskError) as err:
        await svc.assign(ALICE, t.id, "mallory")
    assert err.value.code == "ticket.unknown_agent"
    assert [x.id for x in await svc.list_tickets(ALICE, TicketFilter(assignee_id="bob"))] == [t.id]
    assert [x.id for x in await svc.list_tickets(ALICE, TicketFilter(tag="android"))] == [t.id]
    assert len(await svc.list_tickets(ALICE, TicketFilter(priority="P0"))) == 1
    assert [x.organisation_id for x in await svc.list_tickets(DANA, TicketFilter())] == ["acme"]
    mine = await svc.queue(BOB, assignee_id="bob")
    assert [e.ticket.id for e in mine] == [t.id]
    events = (await svc.detail(ALICE, t.id)).events
    assert events[-1].kind == "assignee_changed" and events[-1].data == {"from": None, "to": "bob"}


async def test_auto_assignment_by_skill_and_load(
    desk_db: Database, desk_clock: FakeClock, desk: DeskComponent
) -> None:
    svc = TicketService(desk_db, desk.store, desk_clock, assignment=choose_assignee)
    t1 = await svc.create_ticket(DANA, NewTicket(subject="ws drops", skills=("transport",)))
    assert t1.assignee_id == "alice"
    t2 = await svc.create_ticket(DANA, NewTicket(subject="sdk crash", skills=("client_sdk",)))
    assert t2.assignee_id == "bob"
    # No skill asked: the least loaded agent wins; tie broken by on-call now (alice, 10:00).
    t3 = await svc.create_ticket(DANA, NewTicket(subject="question"))
    assert t3.assignee_id == "alice"
    t4 = await svc.create_ticket(DANA, NewTicket(subject="question 2"))
    assert t4.assignee_id == "bob"
    events = (await svc.detail(ALICE, t1.id)).events
    assert events[1].kind == "assignee_changed" and events[1].actor_kind == "automation"


async def test_policy_version_is_snapshotted(desk: DeskComponent, desk_db: Database) -> None:
    svc = desk.tickets
    old = await svc.create_ticket(DANA, NewTicket(subject="old", priority="P1"))
    fast = Target(seconds=600)
    v2 = SlaPolicy(
        id="default",
        version=2,
        name="Faster",
        targets={
            p: PriorityTargets(first_response=fast, resolution=fast)
            for p in ("P0", "P1", "P2", "P3")
        },
    )
    now = svc.now()

    def put(tx: Tx) -> Any:
        svc.put_policy_tx(tx, v2, now)

    desk_db.write_sync(put)
    new = await svc.create_ticket(DANA, NewTicket(subject="new", priority="P1"))
    assert (old.policy_version, new.policy_version) == (1, 2)
    assert new.due_at == MONDAY_10 + timedelta(minutes=10)
    assert (await svc.detail(ALICE, old.id)).ticket.due_at == MONDAY_10 + timedelta(hours=2)
    changed = SlaPolicy(id="default", version=2, name="Other", targets=v2.targets)

    def clash(tx: Tx) -> Any:
        svc.put_policy_tx(tx, changed, now)

    with pytest.raises(DeskError):
        desk_db.write_sync(clash)

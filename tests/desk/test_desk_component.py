"""The desk component: demo seeding, public names, wiring from settings."""

from __future__ import annotations

from desk_testkit import ALICE, desk_settings

import relaydesk.desk.escalation as escalation
import relaydesk.desk.tickets as tickets
from relaydesk.clock import FakeClock
from relaydesk.desk.component import open_desk
from relaydesk.storage.engine import Database


async def test_seed_demo_is_idempotent_and_keys_work(
    desk_db: Database, desk_clock: FakeClock
) -> None:
    desk = open_desk(desk_db, desk_settings(), desk_clock, None)
    first = desk.seed_demo()
    assert first.seeded and set(first.keys) == {
        "admin:alice",
        "agent:alice",
        "agent:bob",
        "customer:dana",
        "customer:frank",
    }
    count = desk_db.read_sync(lambda tx: tx.scalar("SELECT COUNT(*) FROM desk_tickets"))
    second = desk.seed_demo()
    assert not second.seeded
    assert desk_db.read_sync(lambda tx: tx.scalar("SELECT COUNT(*) FROM desk_tickets")) == count
    # The demo keys stay the same (a restart keeps them working).
    assert second.keys == first.keys
    assert await desk.tickets.authenticate(second.keys["agent:alice"]) == ALICE
    dana = await desk.tickets.authenticate(second.keys["customer:dana"])
    assert dana is not None and dana.organisation_id == "acme"
    queue = await desk.tickets.queue(ALICE)
    states = {e.ticket.sla_state for e in queue}
    assert {"breached", "active", "paused"} <= states
    assert queue[0].time_to_breach_s is not None and queue[0].time_to_breach_s < 0
    # Reopening on the same database keeps the schema and data.
    again = open_desk(desk_db, desk_settings(), desk_clock, None)
    assert len(await again.tickets.queue(ALICE)) == len(queue)
    assert again.seed_demo().keys == first.keys
    assert await again.tickets.authenticate(first.keys["customer:dana"]) is not None


def test_public_names_are_pinned() -> None:
    assert set(tickets.__all__) == {
        "PRIORITIES",
        "STATUSES",
        "TRANSITIONS",
        "Agent",
        "Comment",
        "Contact",
        "DeskError",
        "DeskErrorCode",
        "NewTicket",
        "OnCallShift",
        "Organisation",
        "Plan",
        "Principal",
        "Priority",
        "Status",
        "Ticket",
        "TicketEvent",
        "TicketFilter",
        "can_transition",
    }
    assert set(escalation.__all__) == {
        "ChannelNotifier",
        "EscalationScheduler",
        "Notice",
        "Notifier",
        "NotifierError",
        "SchedulerStats",
        "WebhookNotifier",
        "choose_assignee",
        "choose_on_call",
        "due_notices",
        "on_call",
    }
    for module in (tickets, escalation):
        for name in module.__all__:
            assert hasattr(module, name)


def test_error_codes_are_stable() -> None:
    from relaydesk.desk.tickets import DeskErrorCode

    assert DeskErrorCode.INVALID_TRANSITION == "ticket.invalid_transition"
    assert DeskErrorCode.INVALID_TRANSITION.http_status == 409
    assert DeskErrorCode.TICKET_NOT_FOUND.http_status == 404
    assert DeskErrorCode.AUTH_MISSING.http_status == 401
    assert DeskErrorCode.FORBIDDEN.http_status == 403
    assert DeskErrorCode.TOO_LONG.http_status == 422
    assert len({c.value for c in DeskErrorCode}) == len(list(DeskErrorCode))

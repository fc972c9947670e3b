"""Escalation: warnings, breaches and pages exactly once across restarts; on-call routing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from desk_testkit import ALICE, DANA, FakeMessaging, WebhookReceiver, desk_settings, seed_people

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent, open_desk
from relaydesk.desk.escalation import choose_assignee, choose_on_call, on_call
from relaydesk.desk.escalation.routing import shift_covers
from relaydesk.desk.tickets import Agent, NewTicket, OnCallShift
from relaydesk.storage.engine import Database, Tx


def _open(db: Database, clock: FakeClock, hook: WebhookReceiver, messaging: Any) -> DeskComponent:
    return open_desk(db, desk_settings(webhook_url=hook.url, auto_assign=False), clock, messaging)


def _events(db: Database, ticket_id: int) -> list[str]:
    return [
        r[0]
        for r in db.read_sync(
            lambda tx: tx.query(
                "SELECT kind FROM desk_ticket_events WHERE ticket_id = ? ORDER BY seq", (ticket_id,)
            )
        )
    ]


async def test_p2_warning_and_breach_fire_once_across_restart(
    desk_db: Database, desk_clock: FakeClock, webhook: WebhookReceiver
) -> None:
    desk = _open(desk_db, desk_clock, webhook, FakeMessaging())
    seed_people(desk.tickets, desk_db)
    t = await desk.tickets.create_ticket(DANA, NewTicket(subject="slow history", priority="P2"))
    await desk.scheduler.tick()
    assert webhook.requests == []  # P2: no page at creation, nothing due yet
    # First response: 8 business hours -> Tuesday 10:00; warning at 75 % -> Monday 16:00.
    desk_clock.advance(6 * 3600 - 1)
    await desk.scheduler.tick()
    assert webhook.requests == []
    desk_clock.advance(1)
    await desk.scheduler.tick()
    assert [(r["kind"], r["metric"]) for r in webhook.requests] == [("warning", "first_response")]
    assert webhook.requests[0]["target_at"] == "2024-03-05T10:00:00Z"
    await desk.scheduler.tick()
    assert len(webhook.requests) == 1
    desk_clock.advance(18 * 3600 + 1)  # Tuesday 10:00:01
    await desk.scheduler.tick()
    assert [(r["kind"], r["metric"]) for r in webhook.requests][1:] == [
        ("breach", "first_response")
    ]
    assert (await desk.tickets.detail(ALICE, t.id)).ticket.sla_state == "breached"
    await desk.aclose()

    restarted = _open(desk_db, desk_clock, webhook, FakeMessaging())
    await restarted.scheduler.tick()
    desk_clock.advance(60)
    await restarted.scheduler.tick()
    assert len(webhook.requests) == 2
    assert len(set(webhook.keys)) == 2
    assert _events(desk_db, t.id).count("sla_warning") == 1
    assert _events(desk_db, t.id).count("sla_breach") == 1
    await restarted.aclose()


async def test_p0_pages_on_call_agent_and_retries_failed_webhook_after_restart(
    desk_db: Database, desk_clock: FakeClock, webhook: WebhookReceiver
) -> None:
    messaging = FakeMessaging()
    desk = _open(desk_db, desk_clock, webhook, messaging)
    seed_people(desk.tickets, desk_db)
    webhook.fail_next = 1
    t = await desk.tickets.create_ticket(
        DANA, NewTicket(subject="all sends fail", priority="P0", skills=("transport",))
    )
    stats = await desk.scheduler.tick()
    assert (stats.recorded, stats.delivered, stats.failed) == (1, 1, 1)
    # The channel page reached alice (on call Monday 10:00 London); the webhook failed.
    assert [(p[2], p[4]) for p in messaging.posts] == [("user:alice", f"urgent:{t.id}:P0")]
    assert webhook.requests == []
    await desk.aclose()

    messaging2 = FakeMessaging()
    again = _open(desk_db, desk_clock, webhook, messaging2)
    await again.scheduler.tick()
    assert webhook.requests == []  # retry is backed off (5 s)
    desk_clock.advance(5)
    await again.scheduler.tick()
    assert [(r["kind"], r["reason"], r["agent_id"]) for r in webhook.requests] == [
        ("page", "urgent", "alice")
    ]
    assert messaging2.posts == []  # already delivered before the restart: not repeated
    # P0 first response 15 min: warning page at 11:15, breach page after 15:00.
    desk_clock.advance(11 * 60 + 15 - 5)
    await again.scheduler.tick()
    desk_clock.advance(4 * 60)
    await again.scheduler.tick()
    assert [r["reason"] for r in webhook.requests] == ["urgent", "warning", "breach"]
    assert [p[4] for p in messaging2.posts] == [
        f"warning:{t.id}:first_response:1:P0",
        f"breach:{t.id}:first_response:1",
    ]
    await again.aclose()

    third = _open(desk_db, desk_clock, webhook, FakeMessaging())
    desk_clock.advance(3600)
    await third.scheduler.tick()
    assert [r["reason"] for r in webhook.requests][:3] == ["urgent", "warning", "breach"]
    assert len(webhook.keys) == len(set(webhook.keys))
    assert _events(desk_db, t.id).count("page") >= 3
    await third.aclose()


async def test_recorded_but_unsent_notice_is_delivered_by_next_instance(
    desk_db: Database, desk_clock: FakeClock, webhook: WebhookReceiver
) -> None:
    desk = _open(desk_db, desk_clock, webhook, None)
    seed_people(desk.tickets, desk_db)
    await desk.tickets.create_ticket(DANA, NewTicket(subject="down", priority="P1"))
    now = desk.tickets.now()

    def scan_only(tx: Tx) -> tuple[int, int]:
        return desk.scheduler.scan_tx(tx, now)

    # "Crash" after recording, before delivering.
    assert await desk_db.write(scan_only) == (1, 1)
    await desk.aclose()
    assert webhook.requests == []
    fresh = _open(desk_db, desk_clock, webhook, None)
    await fresh.scheduler.tick()
    await fresh.scheduler.tick()
    assert [r["reason"] for r in webhook.requests] == ["urgent"]
    await fresh.aclose()


async def test_nobody_on_call_pages_the_oncall_channel(
    desk_db: Database, webhook: WebhookReceiver
) -> None:
    saturday = FakeClock(datetime(2024, 3, 9, 10, 0, tzinfo=UTC).timestamp())
    messaging = FakeMessaging()
    desk = _open(desk_db, saturday, webhook, messaging)
    seed_people(desk.tickets, desk_db)
    await desk.tickets.create_ticket(DANA, NewTicket(subject="down", priority="P0"))
    await desk.scheduler.tick()
    assert [p[2] for p in messaging.posts] == ["channel:desk-oncall"]
    assert messaging.channels[("desk", "desk-oncall")] == ["desk-bot", "alice", "bob"]
    assert webhook.requests[0]["agent_id"] is None
    await desk.aclose()


async def test_scheduler_task_is_owned_and_cancelled(
    desk_db: Database, desk_clock: FakeClock, webhook: WebhookReceiver
) -> None:
    desk = _open(desk_db, desk_clock, webhook, None)
    seed_people(desk.tickets, desk_db)
    await desk.tickets.create_ticket(DANA, NewTicket(subject="down", priority="P0"))
    await desk.start()
    # The receiver sees the page before the tick that sent it has recorded the delivery
    # and counted itself, so wait for both.
    for _ in range(250):
        if webhook.requests and desk.scheduler.statistics().ticks >= 1:
            break
        await asyncio.sleep(0.02)
    assert [r["reason"] for r in webhook.requests] == ["urgent"]
    assert desk.scheduler.statistics().ticks >= 1
    await desk.aclose()
    assert desk.scheduler._task is None
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "desk-escalation"]


def _shift(days: tuple[str, ...], start: str, end: str) -> OnCallShift:
    return OnCallShift(days=days, start=start, end=end, timezone="Europe/London")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2024, 3, 8, 16, 59, tzinfo=UTC), False),  # Fri 16:59 GMT
        (datetime(2024, 3, 8, 17, 0, tzinfo=UTC), True),  # Fri 17:00 starts the shift
        (datetime(2024, 3, 9, 8, 59, tzinfo=UTC), True),  # Sat morning: Friday's shift
        (datetime(2024, 3, 9, 9, 0, tzinfo=UTC), False),  # end is exclusive
        (datetime(2024, 3, 9, 20, 0, tzinfo=UTC), False),  # Saturday evening: no shift
        (datetime(2024, 3, 11, 7, 0, tzinfo=UTC), False),  # Mon morning: Sunday not listed
    ],
)
def test_overnight_shift(at: datetime, expected: bool) -> None:
    assert shift_covers(_shift(("fri",), "17:00", "09:00"), at) is expected


def test_shift_follows_dst() -> None:
    weekday = _shift(("mon", "tue", "wed", "thu", "fri"), "09:00", "17:00")
    # Monday 1 April 2024 is BST (UTC+1): 08:30 UTC is 09:30 local, 16:30 UTC is 17:30 local.
    assert shift_covers(weekday, datetime(2024, 4, 1, 8, 30, tzinfo=UTC))
    assert not shift_covers(weekday, datetime(2024, 4, 1, 16, 30, tzinfo=UTC))
    # In GMT the same UTC instants are 08:30 and 16:30 local.
    assert not shift_covers(weekday, datetime(2024, 3, 4, 8, 30, tzinfo=UTC))
    assert shift_covers(weekday, datetime(2024, 3, 4, 16, 30, tzinfo=UTC))


def test_choose_on_call_and_assignee() -> None:
    now = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
    day = _shift(("mon",), "09:00", "17:00")
    a = Agent(id="a", name="A", skills=("storage",), oncall=(day,))
    b = Agent(id="b", name="B", skills=("transport",), oncall=(day,))
    c = Agent(id="c", name="C", skills=("transport",))
    off = Agent(id="d", name="D", skills=("transport",), oncall=(day,), active=False)
    assert on_call(a, now) and not on_call(c, now) and not on_call(off, now)
    assert choose_on_call([a, b, c, off], ("transport",), None, now) == "b"
    assert choose_on_call([a, b, c, off], ("transport",), "a", now) == "a"
    assert choose_on_call([c], (), None, now) is None
    assert choose_assignee([a, b, c, off], {}, ("transport",), now) == "b"  # on call wins tie
    assert choose_assignee([a, b, c, off], {"b": 3}, ("transport",), now) == "c"  # load
    assert choose_assignee([a, b, c], {"b": 3, "c": 3}, ("transport", "storage"), now) == "a"
    assert choose_assignee([off], {}, (), now) is None
    later = now + timedelta(days=1)
    assert choose_on_call([a, b], (), None, later) is None

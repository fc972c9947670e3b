"""Unit tests of the console's pure parts: sessions on a fake clock, forms, SLA timelines,
password hashing, and the desk's live listeners against an in-memory messaging fake."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relaydesk.clock import FakeClock
from relaydesk.config import Settings
from relaydesk.desk.accounts import hash_password, verify_password
from relaydesk.desk.component import open_desk
from relaydesk.desk.live import LiveNotices, WarRooms, messaging_user
from relaydesk.desk.sla import MetricStatus, TicketSla
from relaydesk.desk.tickets.model import Agent, OnCallShift, Principal, Ticket, TicketEvent
from relaydesk.desk.tickets.service import TicketChange
from relaydesk.storage import open_database
from relaydesk.web.console._forms import parse_comment, parse_new_ticket, parse_properties
from relaydesk.web.console._sessions import SessionStore, tokens_match
from relaydesk.web.console._views import event_lines, fmt_duration, sla_clocks
from relaydesk.web.console._workspace import linkify, render_markdown

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
DANA = Principal(kind="customer", id="dana", organisation_id="acme")


async def test_sessions_are_stored_slide_expire_and_stay_bounded(tmp_path: Path) -> None:
    clock = FakeClock(T0.timestamp())
    db = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    desk = open_desk(db, Settings(), clock, None)
    desk.seed_demo()
    table = SessionStore(desk.admin, clock, ttl_s=120, max_per_person=2)
    s = await table.create(DANA, "Dana")
    clock.advance(100)
    assert await table.get(s.id) is not None  # touching slides the expiry
    clock.advance(100)
    assert await table.get(s.id) is not None
    # A second process on the same database (a restart) knows the session.
    again = SessionStore(desk.admin, clock, ttl_s=120)
    assert (await again.get(s.id)) == (await table.get(s.id))
    clock.advance(121)
    assert await table.get(s.id) is None
    made = []
    for _ in range(3):  # the oldest beyond max_per_person is revoked
        made.append(await table.create(DANA, "Dana"))
        clock.advance(1)
    a, b, c = made
    assert await table.get(a.id) is None and await table.get(b.id) and await table.get(c.id)
    stored = db.read_sync(lambda tx: tx.query("SELECT id_hash FROM admin_sessions"))
    assert all(c.id not in str(row) for row in stored)  # only hashes are stored
    await table.end(c.id)
    assert await table.get(c.id) is None and (await table.statistics()).active == 1
    assert tokens_match(c.csrf, c.csrf) and not tokens_match(c.csrf, None)
    assert not tokens_match(c.csrf, "") and not tokens_match(c.csrf, c.csrf[:-1])
    assert await table.get("x" * 500) is None
    db.close_sync()


def test_new_ticket_form_parses_window_as_utc() -> None:
    new, errors = parse_new_ticket(
        {
            "subject": " Gap ",
            "priority": "P1",
            "window_start": "2024-03-04T09:00",
            "window_end": "2024-03-04T09:30",
        }
    )
    assert errors == {} and new is not None
    assert new.subject == "Gap" and new.window_start == T0 - timedelta(hours=1)
    _, errors = parse_new_ticket({"subject": "x", "window_start": "yesterday"})
    assert errors == {"window_start": "Not a date and time."}


def test_comment_and_properties_forms() -> None:
    assert parse_comment({"body": " hi ", "visibility": "internal"}) == (("hi", False), {})
    assert parse_comment({"body": "   "})[1] == {"body": "Write something first."}
    change, errors = parse_properties({"status": "open", "assignee": "-"}, {"alice"})
    assert errors == {} and change is not None and change.unassign
    _, errors = parse_properties({"status": "gone", "assignee": "zed"}, {"alice"})
    assert set(errors) == {"status", "assignee"}


def test_sla_timeline_places_pauses_and_marks() -> None:
    metric = MetricStatus(
        metric="first_response",
        state="achieved",
        target_at=T0 + timedelta(minutes=20),
        target_local=None,
        warn_at=T0 + timedelta(minutes=15),
        breached_at=None,
        fulfilled_at=T0 + timedelta(minutes=18),
        elapsed_seconds=600,
        remaining_seconds=None,
        budget_seconds=900,
        paused=[(T0 + timedelta(minutes=2), T0 + timedelta(minutes=7))],
        calendar="24x7",
        started_at=T0,
        priority="P0",
    )
    sla = TicketSla(
        policy_id="default",
        policy_version=1,
        priority="P0",
        status="open",
        metrics=[metric],
        next_breach_at=None,
        acknowledged_at=None,
        first_response_at=metric.fulfilled_at,
        history=[],
    )
    (clock,) = sla_clocks(sla, T0 + timedelta(minutes=20))
    assert clock.state == "achieved" and clock.budget == "15m 00s"
    # The axis runs 0..21 min (5 % margin past the last instant, the target at 20 min).
    (pause,) = clock.spans
    assert pause.left == pytest.approx(2 / 21 * 100, abs=0.01)
    assert pause.width == pytest.approx(5 / 21 * 100, abs=0.01)
    kinds = [m.kind for m in clock.marks]
    assert kinds[0] == "now" and {"target", "warn", "done"} <= set(kinds)
    assert fmt_duration(-3700) == "-1h 01m" and fmt_duration(90_000) == "1d 1h"


def test_passwords_are_salted_scrypt() -> None:
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a != b and a.startswith("scrypt$14$8$1$")
    assert verify_password("correct horse", a) and not verify_password("wrong horse", a)
    assert not verify_password("correct horse", "sha256$abc")
    with pytest.raises(ValueError):
        hash_password("short")


class _Messaging:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str, str, bytes, str]] = []
        self.channels: dict[str, list[str]] = {}

    async def post(self, app: str, sender: str, to: str, body: bytes, client_id: str) -> None:
        self.posts.append((app, sender, to, body, client_id))

    async def ensure_channel(self, app: str, channel: str, members: Sequence[str]) -> str:
        self.channels[channel] = list(members)
        return f"ch:{channel}"


def _ticket(priority: str = "P0", status: str = "new") -> Ticket:
    return Ticket(
        id=7,
        organisation_id="acme",
        requester_id="dana",
        assignee_id=None,
        subject="down",
        description="",
        priority=priority,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        skills=(),
        tags=(),
        app_id=None,
        region=None,
        window_start=None,
        window_end=None,
        policy_id="default",
        policy_version=1,
        created_at=T0,
        updated_at=T0,
        solved_at=None,
        closed_at=None,
        acknowledged_at=None,
        first_response_at=None,
        sla_state="active",
        next_breach_at=None,
        due_at=None,
    )


async def test_live_notices_say_only_which_ticket_changed() -> None:
    fake = _Messaging()
    await LiveNotices(fake, "desk").ticket_changed(TicketChange(ticket=_ticket(), kind="note"))
    assert [p[2] for p in fake.posts] == [
        "channel:desk-queue",
        "channel:desk-t-7",
        "channel:desk-org-acme",  # the organisation's portal list
    ]
    assert json.loads(fake.posts[0][3]) == {"type": "desk.ticket", "ticket": 7}
    assert len({p[4] for p in fake.posts}) == 3


async def test_war_room_opens_once_for_urgent_active_tickets() -> None:
    fake = _Messaging()
    alice = Agent(
        id="alice",
        name="Alice",
        oncall=(OnCallShift(days=("mon",), start="09:00", end="17:00"),),
    )

    async def agents() -> list[Agent]:
        return [alice]

    rooms = WarRooms(fake, "desk", agents, lambda: T0)
    await rooms.ticket_changed(TicketChange(ticket=_ticket("P2"), kind="created"))
    assert fake.channels == {}
    await rooms.ticket_changed(TicketChange(ticket=_ticket("P0"), kind="priority"))
    await rooms.ticket_changed(TicketChange(ticket=_ticket("P0"), kind="comment"))
    assert fake.channels == {"desk-war-7": ["desk-bot", "customer.dana", "agent.alice"]}
    assert len(fake.posts) == 1 and fake.posts[0][4] == "desk-war-7-opened"
    assert messaging_user("agent", "bad id") is None


async def test_password_change_and_disabling_end_sessions(tmp_path: Path) -> None:
    from relaydesk.desk.admin import Actor

    clock = FakeClock(T0.timestamp())
    db = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    desk = open_desk(db, Settings(), clock, None)
    desk.seed_demo()
    table = SessionStore(desk.admin, clock, ttl_s=3600)
    cli = Actor(who="cli:test")
    a, b = await table.create(DANA, "Dana"), await table.create(DANA, "Dana")
    link = desk.admin.write_sync(lambda tx: desk.admin.reset_link(tx, cli, "customer", "dana"))
    await desk.admin.accept_link(link.url.split("token=")[1], "a brand new passphrase", "::1")
    assert await table.get(a.id) is None and await table.get(b.id) is None
    c = await table.create(DANA, "Dana")
    desk.admin.write_sync(
        lambda tx: desk.admin.set_person_disabled(tx, cli, "customer", "dana", True)
    )
    assert await table.get(c.id) is None
    desk.admin.write_sync(
        lambda tx: desk.admin.set_person_disabled(tx, cli, "customer", "dana", False)
    )
    d = await table.create(DANA, "Dana")
    desk.admin.write_sync(lambda tx: desk.admin.set_organisation_disabled(tx, cli, "acme", True))
    assert await table.get(d.id) is None
    await desk.aclose()
    db.close_sync()


def test_event_lines_name_people_hide_empty_values_and_renumber() -> None:
    at = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)

    def ev(seq: int, kind: str, actor: tuple[str, str], data: dict[str, object]) -> TicketEvent:
        return TicketEvent(
            ticket_id=1,
            seq=seq,
            at=at,
            kind=kind,
            actor_kind=actor[0],
            actor_id=actor[1],
            data=data,  # type: ignore[arg-type]
        )

    events = [
        ev(1, "created", ("customer", "dana"), {"priority": "P2", "status": "new"}),
        ev(3, "assignee_changed", ("agent", "alice"), {"from": None, "to": "bob"}),
        ev(
            6,
            "sla_warning",
            ("automation", "escalation"),
            {
                "key": "w:1",
                "metric": "first_response",
                "reason": None,
                "agent_id": None,
                "notifiers": [],
            },
        ),
    ]
    names = {"customer:dana": "Dana Ruiz", "agent:alice": "Alice Ng", "agent:bob": "Bob Okafor"}
    lines = event_lines(events, names=names, renumber=True)
    assert [line.seq for line in lines] == [1, 2, 3]
    assert [line.actor for line in lines] == ["Dana Ruiz", "Alice Ng", "relaydesk"]
    assert lines[1].detail == "from nobody to Bob Okafor"
    assert lines[2].detail == "First response"
    assert all("None" not in line.detail and "key" not in line.detail for line in lines)
    assert [line.seq for line in event_lines(events)] == [1, 3, 6]


def test_article_markdown_is_rendered_and_sanitised() -> None:
    html = str(
        render_markdown(
            "# Title\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) [ok](https://a.example)"
            "\n\n| a | b |\n| --- | --- |\n| 1 | 2 |"
        )
    )
    assert "<h1>Title</h1>" in html and "<table>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # shown as text
    assert 'href="javascript' not in html
    assert 'href="https://a.example"' in html and 'rel="noopener noreferrer"' in html
    assert str(linkify("see /console/kb/message-delay <b>")) == (
        'see <a href="/console/kb/message-delay" class="kb-link">'
        "/console/kb/message-delay</a> &lt;b&gt;"
    )

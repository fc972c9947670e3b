"""E-mail notifications: the pure routing, digest and templates, and the whole path from a
ticket change to a message received by a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller
from desk_testkit import ALICE, DANA, MONDAY_10
from tests.conftest import free_port

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.escalation.notifiers import Notice
from relaydesk.desk.mail import (
    DigestBox,
    MailError,
    MailItem,
    MailPreferences,
    Recipient,
    SmtpConfig,
    SmtpSender,
    render,
    render_digest,
    route,
)
from relaydesk.desk.mail.model import DIGEST_MAX_ITEMS, DueDigest
from relaydesk.desk.mail.notifications import MailNotifications
from relaydesk.desk.tickets.model import Agent, Contact, NewTicket

DANA_R = Recipient("customer", "dana", "Dana", "dana@acme.example")


def _item(kind: Any = "reply", at: datetime = MONDAY_10, text: str = "hello") -> MailItem:
    return MailItem(
        kind=kind, ticket_id=7, ticket_subject="Messages late", priority="P1", at=at, text=text
    )


def test_route_follows_preferences_and_needs_an_address() -> None:
    prefs = MailPreferences(reply="digest", assignment="off")
    assert route(_item("reply"), DANA_R, prefs) == "digest"
    assert route(_item("assignment"), DANA_R, prefs) == "off"
    assert route(_item("escalation"), DANA_R, prefs) == "instant"
    assert route(_item("at_risk"), DANA_R, MailPreferences()) == "digest"  # the default
    assert route(_item("mention"), DANA_R, MailPreferences()) == "instant"  # the default
    assert route(_item("reply"), Recipient("agent", "x", "X", ""), prefs) == "off"


def test_digest_box_is_bounded_and_due_after_its_interval() -> None:
    box = DigestBox(timedelta(hours=1))
    for i in range(DIGEST_MAX_ITEMS + 5):
        box.add(DANA_R, _item(at=MONDAY_10 + timedelta(seconds=i), text=f"n{i}"))
    assert box.due(MONDAY_10 + timedelta(minutes=59)) == []
    (digest,) = box.due(MONDAY_10 + timedelta(hours=1))
    assert len(digest.items) == DIGEST_MAX_ITEMS and digest.dropped == 5
    assert digest.items[0].text == "n5" and len(box) == 0
    with pytest.raises(ValueError, match="positive"):
        DigestBox(timedelta(0))


def test_templates_keep_headers_on_one_line() -> None:
    item = MailItem(
        kind="reply",
        ticket_id=3,
        ticket_subject="Evil\r\nBcc: x@y.example",
        priority="P2",
        at=MONDAY_10,
        text="line one\nline two",
        author="Alice",
    )
    subject, body = render(item, "http://desk.example")
    assert "\n" not in subject and "\r" not in subject
    assert subject == "[#3] New reply: Evil Bcc: x@y.example"
    assert "Alice wrote" in body and "line one\nline two" in body
    assert "http://desk.example/console/tickets/3" in body
    subject, body = render_digest(
        DueDigest(DANA_R, [item, _item()], dropped=2), "http://desk.example"
    )
    assert subject == "relaydesk digest: 2 updates on 2 tickets"
    assert "(and 2 older updates not listed)" in body


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 OK"


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    return "" if part is None else str(part.get_content())


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _mail(desk: DeskComponent, port: int, clock: FakeClock) -> MailNotifications:
    def people(tx: Any) -> None:
        desk.tickets.put_agent_tx(tx, Agent(id="alice", name="Alice", email="alice@desk.example"))
        desk.tickets.put_contact_tx(
            tx, Contact(id="dana", organisation_id="acme", name="Dana", email="dana@acme.example")
        )

    desk._db.write_sync(people)
    mail = MailNotifications(
        desk._db,
        desk.store,
        SmtpSender(SmtpConfig(host="127.0.0.1", port=port, sender="Desk <desk@desk.example>")),
        base_url="http://desk.example",
        now=lambda: datetime.fromtimestamp(clock.time(), tz=UTC),
        digest_interval=timedelta(hours=1),
        background=False,  # the test sends with flush(now)
    )
    desk.tickets.add_listener(mail)
    return mail


async def test_ticket_changes_reach_a_real_smtp_server(
    desk: DeskComponent, desk_clock: FakeClock, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    mail = _mail(desk, port, desk_clock)
    svc = desk.tickets
    ticket = await svc.create_ticket(DANA, NewTicket(subject="Android users miss messages"))
    await svc.assign(ALICE, ticket.id, "alice")  # -> alice: assignment
    await svc.add_comment(ALICE, ticket.id, "Which SDK version?")  # -> dana: reply
    await svc.add_comment(ALICE, ticket.id, "internal only", public=False)  # nobody
    await svc.add_comment(DANA, ticket.id, "4.2.1")  # -> alice: reply
    assert await mail.flush(MONDAY_10) == 3
    got = [(m["To"], m["Subject"]) for m in inbox.messages]
    n = ticket.id
    assert got == [
        ("Alice <alice@desk.example>", f"[#{n}] Assigned to you: Android users miss messages"),
        ("Dana <dana@acme.example>", f"[#{n}] New reply: Android users miss messages"),
        ("Alice <alice@desk.example>", f"[#{n}] New reply: Android users miss messages"),
    ]
    body = inbox.messages[1].get_body(("plain",))
    assert body is not None and "Which SDK version?" in body.get_content()
    assert not any("internal only" in _text(m) for m in inbox.messages)

    # Escalations come from the scheduler as notices: mailed at once, keyed for retries.
    notice = Notice(
        key=f"breach:{n}:first_response:1",
        kind="page",
        reason="breach",
        ticket_id=n,
        priority="P1",
        subject="Android users miss messages",
        organisation_id="acme",
        metric="first_response",
        target_at=MONDAY_10,
        due_at=MONDAY_10,
        agent_id="alice",
        text="SLA first_response breached",
    )
    await mail.send(notice)
    assert inbox.messages[-1]["Subject"] == f"[#{n}] Escalation (P1): Android users miss messages"
    assert inbox.messages[-1]["X-Relaydesk-Key"] == notice.key

    # Dana wants replies in a digest: none now, one digest an hour later.
    await desk.preferences.put("customer", "dana", MailPreferences(reply="digest"))
    await svc.add_comment(ALICE, n, "Fixed in 4.2.2")
    await svc.add_comment(ALICE, n, "Please update")
    before = len(inbox.messages)
    assert await mail.flush(MONDAY_10 + timedelta(minutes=5)) == 0
    assert await mail.flush(MONDAY_10 + timedelta(hours=1)) == 1
    assert len(inbox.messages) == before + 1
    digest = inbox.messages[-1]
    assert digest["Subject"] == "relaydesk digest: 2 updates on 1 ticket"
    text = digest.get_body(("plain",))
    assert text is not None
    assert "Fixed in 4.2.2" in text.get_content() and "Please update" in text.get_content()
    assert (await desk.preferences.get("customer", "dana")).reply == "digest"
    assert mail.statistics().sent == len(inbox.messages) and mail.statistics().failed == 0


async def test_mentions_in_internal_notes_mail_the_agent_named(
    desk: DeskComponent, desk_clock: FakeClock, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    mail = _mail(desk, port, desk_clock)
    desk._db.write_sync(
        lambda tx: desk.tickets.put_agent_tx(
            tx, Agent(id="bob", name="Bob", email="bob@desk.example")
        )
    )
    desk.workspace.add_mention_hook(mail)
    svc = desk.tickets
    ticket = await svc.create_ticket(DANA, NewTicket(subject="Push stalls"))
    n = ticket.id

    # Instant (the default): one mail to bob with the note; the customer gets nothing.
    await svc.add_comment(ALICE, n, "@bob can you check the APNs logs?", public=False)
    assert await mail.flush(MONDAY_10) == 1
    (msg,) = inbox.messages
    assert msg["To"] == "Bob <bob@desk.example>"
    assert msg["Subject"] == f"[#{n}] Alice mentioned you: Push stalls"
    assert msg["X-Relaydesk-Key"].startswith("mention:")
    assert "Alice mentioned you in an internal note" in _text(msg)
    assert "@bob can you check the APNs logs?" in _text(msg)

    # Public replies and self-mentions are no mentions; e-mail addresses neither.
    await svc.add_comment(ALICE, n, "@alice note to self, mail bob@desk.example", public=False)
    assert await mail.flush(MONDAY_10) == 0

    # Digest: nothing now, one digest line an hour later.  Off: nothing at all.
    await desk.preferences.put("agent", "bob", MailPreferences(mention="digest"))
    await svc.add_comment(ALICE, n, "@bob any news?", public=False)
    assert await mail.flush(MONDAY_10 + timedelta(minutes=5)) == 0
    assert await mail.flush(MONDAY_10 + timedelta(hours=1)) == 1
    assert inbox.messages[-1]["Subject"] == "relaydesk digest: 1 update on 1 ticket"
    assert "mentioned you: Push stalls — @bob any news?" in _text(inbox.messages[-1])
    await desk.preferences.put("agent", "bob", MailPreferences(mention="off"))
    await svc.add_comment(ALICE, n, "@bob ping", public=False)
    assert await mail.flush(MONDAY_10 + timedelta(hours=3)) == 0
    assert len(inbox.messages) == 2 and len(mail.digests) == 0


async def test_smtp_failure_raises_for_the_scheduler_to_retry() -> None:
    sender = SmtpSender(SmtpConfig(host="127.0.0.1", port=free_port(), timeout_s=2))
    with pytest.raises(MailError, match=r"SMTP 127\.0\.0\.1"):
        await sender.send("Dana", "dana@acme.example", "s", "b")


async def test_settings_wire_mail_into_the_desk(
    desk_db: Any, desk_clock: FakeClock, smtp: tuple[Inbox, int]
) -> None:
    import asyncio

    from desk_testkit import seed_people

    from relaydesk.config import MailSettings, Settings
    from relaydesk.desk.component import open_desk

    inbox, port = smtp
    settings = Settings(mail=MailSettings(smtp_host="127.0.0.1", smtp_port=port))
    desk = open_desk(desk_db, settings, desk_clock, None)
    seed_people(desk.tickets, desk_db)
    assert desk.mail is not None and desk.scheduler._notifiers["email"] is desk.mail
    assert desk.mail in desk.workspace._hooks  # mentions are mailed too
    desk_db.write_sync(
        lambda tx: desk.tickets.put_contact_tx(
            tx, Contact(id="dana", organisation_id="acme", name="Dana", email="dana@acme.example")
        )
    )
    ticket = await desk.tickets.create_ticket(DANA, NewTicket(subject="Login fails"))
    await desk.tickets.add_comment(ALICE, ticket.id, "Looking into it")
    try:
        async with asyncio.timeout(10):  # the sender task mails it without being asked
            while not inbox.messages:
                await asyncio.sleep(0.02)
    finally:
        await desk.aclose()
    assert inbox.messages[0]["Subject"] == f"[#{ticket.id}] New reply: Login fails"


def test_people_set_their_own_preferences_over_the_desk_api(
    desk: DeskComponent, desk_db: Any, desk_clock: FakeClock, smtp: tuple[Inbox, int]
) -> None:
    from desk_testkit import issue_keys
    from litestar import Litestar
    from litestar.testing import TestClient

    _inbox, port = smtp
    mail = _mail(desk, port, desk_clock)
    keys = issue_keys(desk, desk_db)
    app = Litestar(route_handlers=[desk.notifications_router])
    url = "/api/desk/me/notifications"
    with TestClient(app) as client:
        bob = {"Authorization": f"Bearer {keys['bob']}"}
        dana = {"Authorization": f"Bearer {keys['dana']}"}
        assert client.get(url).status_code == 401
        got = client.get(url, headers=bob)
        assert got.status_code == 200 and got.json() == msgspec.to_builtins(MailPreferences())
        put = client.put(url, json={"mention": "off", "reply": "digest"}, headers=bob)
        assert put.status_code == 200, put.text
        assert put.json()["mention"] == "off" and put.json()["at_risk"] == "digest"  # default
        # Each person has their own: dana's are untouched, bob's are what the mail reads.
        assert client.get(url, headers=dana).json() == msgspec.to_builtins(MailPreferences())
        bad = client.put(url, json={"mention": "sometimes"}, headers=bob)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "request.invalid"
        unknown = client.put(url, json={"sms": "instant"}, headers=dana)
        assert unknown.status_code == 422, unknown.text
    stored = desk_db.read_sync(lambda tx: mail.preferences.get(tx, "agent", "bob"))
    assert stored == MailPreferences(mention="off", reply="digest")

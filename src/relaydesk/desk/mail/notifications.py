"""The desk's e-mail hooks: a ticket listener, an escalation notifier and the digest.

* :meth:`MailNotifications.ticket_changed` (a ``TicketListener``, called after commit)
  turns a public comment into a **reply** mail (an agent's reply to the requester, a
  customer's to the assignee) and an assignee change into an **assignment** mail.  It
  only puts them in a bounded queue (:data:`QUEUE_MAX`; when full, new mails are dropped
  and counted, never the caller blocked): the ticket API never waits for SMTP.
* :meth:`send` (a ``Notifier`` of the escalation scheduler) mails pages and breaches as
  **escalation** and warnings as **at risk**; it raises on SMTP failure, so the
  scheduler retries it (at-least-once, the notice key in ``X-Relaydesk-Key``).
* :meth:`mentioned` (a workspace ``MentionHook``, called after commit) queues a
  **mention** mail to the agent named in an internal note, like a reply.
* One task (:meth:`start`/:meth:`aclose`) sends the queue and, every
  ``digest_check_s``, the digests that are due.

Who gets what is :func:`model.route` with the person's stored preferences.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import msgspec

from relaydesk.desk.escalation.notifiers import Notice
from relaydesk.desk.tickets.service import TicketChange
from relaydesk.storage.desk import DeskStore
from relaydesk.storage.engine import Database, Tx
from relaydesk.storage.mail import MAIL_MIGRATIONS, MailPreferenceStore

from .model import DigestBox, MailItem, MailKind, MailPreferences, PersonKind, Recipient, route
from .sender import MailError, SmtpSender
from .templates import render, render_digest

if TYPE_CHECKING:  # the workspace is wired to the mail by the composition root
    from relaydesk.desk.workspace.service import Mention

log = logging.getLogger("relaydesk.desk.mail")

#: Mails waiting for the sender task: a burst of replies on a busy desk, with room to
#: spare; past it a mail is dropped (counted in ``dropped``) rather than the API slowed.
QUEUE_MAX: Final = 1000


class MailStats(msgspec.Struct, frozen=True):
    sent: int
    failed: int
    dropped: int
    queued: int
    digest_items: int


class MailNotifications:
    """E-mail for customers and agents (``docs/desk.md`` "E-mail notifications")."""

    name = "email"

    def __init__(
        self,
        db: Database,
        store: DeskStore,
        sender: SmtpSender,
        *,
        base_url: str,
        now: Callable[[], datetime],
        digest_interval: timedelta = timedelta(hours=1),
        digest_check_s: float = 30.0,
        background: bool = True,
    ) -> None:
        self._db = db
        self._store = store
        self.preferences = MailPreferenceStore()
        self._sender = sender
        self._base_url = base_url
        self._now = now
        self.digests = DigestBox(digest_interval)
        self._check_s = digest_check_s
        self._background = background  # False: only ``flush`` sends (tests drive it)
        self._queue: asyncio.Queue[tuple[Recipient, MailItem]] = asyncio.Queue(QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self._failed = 0
        self._dropped = 0
        db.migrate("desk_mail", MAIL_MIGRATIONS)

    def statistics(self) -> MailStats:
        return MailStats(
            sent=self._sender.sent,
            failed=self._failed,
            dropped=self._dropped,
            queued=self._queue.qsize(),
            digest_items=len(self.digests),
        )

    # -- who ---------------------------------------------------------------------------

    def _recipient(self, tx: Tx, kind: PersonKind, person_id: str) -> Recipient | None:
        if kind == "agent":
            agent = self._store.agent(tx, person_id)
            return None if agent is None else Recipient("agent", agent.id, agent.name, agent.email)
        contact = self._store.contact(tx, person_id)
        return (
            None
            if contact is None
            else Recipient("customer", contact.id, contact.name, contact.email)
        )

    def _resolve(
        self, tx: Tx, kind: PersonKind, person_id: str
    ) -> tuple[Recipient, MailPreferences] | None:
        who = self._recipient(tx, kind, person_id)
        if who is None:
            return None
        return who, self.preferences.get(tx, kind, person_id)

    # -- ticket listener ---------------------------------------------------------------

    async def ticket_changed(self, change: TicketChange) -> None:
        """Queue the reply or assignment mail a committed change calls for."""
        ticket = change.ticket
        if change.kind not in ("comment", "assignee"):
            return

        def plan(tx: Tx) -> list[tuple[Recipient, MailPreferences, MailItem]]:
            out: list[tuple[Recipient, MailPreferences, MailItem]] = []
            if change.kind == "assignee":
                if ticket.assignee_id is None:
                    return out
                target = self._resolve(tx, "agent", ticket.assignee_id)
                item = MailItem(
                    kind="assignment",
                    ticket_id=ticket.id,
                    ticket_subject=ticket.subject,
                    priority=ticket.priority,
                    at=self._now(),
                    text=f"Status {ticket.status}, organisation {ticket.organisation_id}.",
                    key=f"assign:{ticket.id}:{ticket.assignee_id}:{self._now().isoformat()}",
                )
                if target is not None:
                    out.append((*target, item))
                return out
            comments = self._store.comments(tx, ticket.id, public_only=True)
            if not comments:
                return out
            last = comments[-1]
            if last.author_kind == "agent":
                target = self._resolve(tx, "customer", ticket.requester_id)
                author = self._recipient(tx, "agent", last.author_id)
            elif last.author_kind == "customer" and ticket.assignee_id:
                target = self._resolve(tx, "agent", ticket.assignee_id)
                author = self._recipient(tx, "customer", last.author_id)
            else:
                return out  # automation: the acknowledgement is not a reply to mail
            if target is not None:
                item = MailItem(
                    kind="reply",
                    ticket_id=ticket.id,
                    ticket_subject=ticket.subject,
                    priority=ticket.priority,
                    at=last.created_at,
                    text=last.body,
                    author=author.name if author is not None else last.author_id,
                    key=f"comment:{last.id}",
                )
                out.append((*target, item))
            return out

        for who, prefs, item in await self._db.read(plan):
            self._dispatch(who, prefs, item)

    # -- mention hook ------------------------------------------------------------------

    async def mentioned(self, mention: Mention) -> None:
        """Queue the mail telling an agent they were named in an internal note."""

        def plan(tx: Tx) -> tuple[Recipient, MailPreferences, MailItem] | None:
            target = self._resolve(tx, "agent", mention.agent_id)
            ticket = self._store.ticket(tx, mention.ticket_id)
            if target is None or ticket is None:
                return None
            comments = self._store.comments(tx, ticket.id, public_only=False)
            note = next((c for c in comments if c.id == mention.comment_id), None)
            author = self._recipient(tx, "agent", mention.by_agent_id)
            item = MailItem(
                kind="mention",
                ticket_id=ticket.id,
                ticket_subject=ticket.subject,
                priority=ticket.priority,
                at=mention.at,
                text="" if note is None else note.body,
                author=author.name if author is not None else mention.by_agent_id,
                key=f"mention:{mention.comment_id}:{mention.agent_id}",
            )
            return (*target, item)

        planned = await self._db.read(plan)
        if planned is not None:
            self._dispatch(*planned)

    def _dispatch(self, who: Recipient, prefs: MailPreferences, item: MailItem) -> None:
        how = route(item, who, prefs)
        if how == "digest":
            self.digests.add(who, item)
        elif how == "instant":
            self._ensure_task()
            try:
                self._queue.put_nowait((who, item))
            except asyncio.QueueFull:
                self._dropped += 1
                log.warning("mail queue full; dropped %s for %s", item.key, who.id)

    # -- escalation notifier -----------------------------------------------------------

    def accepts(self, notice: Notice) -> bool:
        return True

    async def send(self, notice: Notice) -> None:
        """Mail a page/breach (escalation) or warning (at risk); raises to be retried."""
        kind: MailKind = (
            "at_risk" if notice.kind == "warning" or notice.reason == "warning" else "escalation"
        )

        def who(tx: Tx) -> tuple[Recipient, MailPreferences] | None:
            agent_id = notice.agent_id
            if agent_id is None:
                ticket = self._store.ticket(tx, notice.ticket_id)
                agent_id = None if ticket is None else ticket.assignee_id
            return None if agent_id is None else self._resolve(tx, "agent", agent_id)

        target = await self._db.read(who)
        if target is None:
            return  # nobody to mail: the channel and webhook notifiers still carry it
        item = MailItem(
            kind=kind,
            ticket_id=notice.ticket_id,
            ticket_subject=notice.subject,
            priority=notice.priority,
            at=self._now(),
            text=notice.text,
            key=notice.key,
        )
        recipient, prefs = target
        how = route(item, recipient, prefs)
        if how == "digest":
            self.digests.add(recipient, item)
        elif how == "instant":
            await self._mail(recipient, item, retry=True)

    # -- sending -----------------------------------------------------------------------

    async def _mail(self, who: Recipient, item: MailItem, *, retry: bool) -> None:
        subject, body = render(item, self._base_url)
        try:
            await self._sender.send(who.name, who.email, subject, body, item.key)
        except MailError:
            self._failed += 1
            if retry:
                raise
            log.warning("mail %s to %s failed", item.key, who.id, exc_info=True)

    async def flush(self, now: datetime) -> int:
        """Send everything queued and the digests due at ``now``; return mails sent."""
        sent = 0
        while not self._queue.empty():
            who, item = self._queue.get_nowait()
            await self._mail(who, item, retry=False)
            sent += 1
        for digest in self.digests.due(now):
            subject, body = render_digest(digest, self._base_url)
            key = f"digest:{digest.recipient.kind}:{digest.recipient.id}:{now.isoformat()}"
            try:
                await self._sender.send(
                    digest.recipient.name, digest.recipient.email, subject, body, key
                )
                sent += 1
            except MailError:
                self._failed += 1
                log.warning("digest to %s failed", digest.recipient.id, exc_info=True)
        return sent

    async def _run(self) -> None:
        while True:
            # Only the wait is timed: a send cut short by the check interval would lose
            # its mail, and a cancel that lands as the interval ends must not be taken
            # for the interval (the task would live on past ``aclose``).
            try:
                async with asyncio.timeout(self._check_s):
                    who, item = await self._queue.get()
            except TimeoutError:
                pass
            else:
                await self._mail(who, item, retry=False)
            await self.flush(self._now())

    def _ensure_task(self) -> None:
        # Replies and assignments are queued on whichever node made the change, so the
        # sender runs on every node that has queued one, not only on the leader.
        if self._task is None and self._background:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="desk-mail")

    async def start(self) -> None:
        """Start the sender and digest task (idempotent); :meth:`aclose` ends it."""
        self._ensure_task()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()  # again if a library swallowed the first one
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.warning("the mail task had failed", exc_info=task.exception())

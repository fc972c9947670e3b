"""The agent workspace: search, views, macros, bulk actions, merge and links, mentions,
attachments and satisfaction ratings (docs/desk.md, "Agent workspace").

Theory of operation
-------------------
This service adds reading paths and compound actions; every change to a ticket still
goes through :class:`~relaydesk.desk.tickets.service.TicketService`, which checks the
caller's rights, writes the log and recomputes the SLA.  A macro is a comment plus
optional status/priority/assignee changes; a bulk action is the same call per ticket,
each ticket its own transaction, with a result per ticket (one refused ticket does not
undo the others).  A merge adds an internal note to the target that carries the
source's text, a public comment on the source pointing to the target, closes the source
and records the link.

Visibility follows the ticket service: a customer's search and lists are confined to
their organisation and to public text; another organisation's ticket or attachment is
"not found".  Mentions of agents (``@id`` in an internal note) are recorded and handed to
every :class:`MentionHook` after commit (the e-mail notifier subscribes there).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import msgspec

from relaydesk.clock import Clock
from relaydesk.desk.knowledge.service import marked_to_html, match_expression, query_terms
from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import PRIORITIES, STATUSES, Principal, Ticket
from relaydesk.desk.tickets.service import TicketChange, TicketService
from relaydesk.desk.workspace.rules import (
    AttachmentRefused,
    check_upload,
    mentioned_agents,
    render_macro,
    sla_badge,
)
from relaydesk.storage.desk import DeskStore, from_ms, to_ms
from relaydesk.storage.engine import Database, Tx
from relaydesk.storage.workspace import VIEW_NAMES, AttachmentRow, ViewQuery, WorkspaceStore

log = logging.getLogger("relaydesk.desk.workspace")

#: Page sizes: the console shows 25; API callers may ask for up to 200.
MAX_PAGE: Final = 200
MAX_BULK: Final = 200
Rating = Literal["good", "bad"]


class Row(msgspec.Struct, frozen=True):
    """A ticket in a list, with its SLA badge and signed seconds to the next target."""

    ticket: Ticket
    badge: str
    time_to_breach_s: float | None
    snippet_html: str = ""
    #: When the earliest running metric turns "at risk" (the policy's warn fraction).
    warn_at: datetime | None = None


class Page(msgspec.Struct, frozen=True):
    """One page of a list: ``total`` rows in all, this page from ``offset``."""

    rows: list[Row]
    total: int
    offset: int
    limit: int


class Macro(msgspec.Struct, frozen=True):
    """A canned reply that may also set status, priority and assignee."""

    id: int
    name: str
    body: str
    public: bool = True
    status: str | None = None
    priority: str | None = None
    assignee_id: str | None = None


class SavedView(msgspec.Struct, frozen=True):
    """An agent's saved filter: a name and the list's query string."""

    id: int
    name: str
    query: str


class Link(msgspec.Struct, frozen=True):
    """A link between tickets: ``merged_into`` or ``related``, seen from one side."""

    ticket_id: int
    kind: str
    direction: Literal["in", "out"]


class BulkResult(msgspec.Struct, frozen=True):
    """What a bulk action did to one ticket (``error`` is a desk error code)."""

    ticket_id: int
    ok: bool
    error: str | None = None
    message: str | None = None


class Attachment(msgspec.Struct, frozen=True):
    """An attachment's metadata; its bytes at ``url``."""

    id: int
    ticket_id: int
    filename: str
    content_type: str
    size: int
    sha256: str
    public: bool
    uploader: str
    created_at: datetime
    url: str


class Mention(msgspec.Struct, frozen=True):
    """An agent named in an internal note."""

    ticket_id: int
    comment_id: int
    agent_id: str
    by_agent_id: str
    at: datetime


class MentionHook(Protocol):
    """Told about every new mention after it committed (e-mail, live notices)."""

    async def mentioned(self, mention: Mention) -> None:
        """React to ``mention``; exceptions are logged and ignored."""
        ...


def _attachment(a: AttachmentRow) -> Attachment:
    return Attachment(
        id=a.id,
        ticket_id=a.ticket_id,
        filename=a.filename,
        content_type=a.content_type,
        size=a.size,
        sha256=a.sha256,
        public=a.public,
        uploader=f"{a.uploader_kind}:{a.uploader_id}",
        created_at=from_ms(a.created_at),
        url=f"/api/desk/attachments/{a.id}",
    )


class WorkspaceService:
    """Search, views, macros, bulk, merge, links, mentions, attachments and CSAT."""

    def __init__(
        self,
        db: Database,
        desk_store: DeskStore,
        tickets: TicketService,
        clock: Clock,
        *,
        attachments_dir: Path,
        max_attachment_bytes: int,
    ) -> None:
        self._db = db
        self._desk = desk_store
        self.store = WorkspaceStore()
        self._tickets = tickets
        self._clock = clock
        self.attachments_dir = attachments_dir
        self.max_attachment_bytes = max_attachment_bytes
        self._hooks: list[MentionHook] = []

    @property
    def tickets(self) -> TicketService:
        """The ticket service every change goes through."""
        return self._tickets

    def add_mention_hook(self, hook: MentionHook) -> None:
        """Call ``hook`` for every later mention (composition root only)."""
        self._hooks.append(hook)

    def now(self) -> datetime:
        """The ticket service's clock (same millisecond precision)."""
        return self._tickets.now()

    @staticmethod
    def _agent_only(principal: Principal, what: str) -> None:
        if principal.kind != "agent":
            raise DeskError(DeskErrorCode.FORBIDDEN, f"only agents may {what}")

    def _rows(
        self, tx: Tx, tickets: Sequence[Ticket], now: datetime, snippets: Sequence[str] = ()
    ) -> list[Row]:
        warns = self.store.warn_times(tx, [t.id for t in tickets])
        rows = []
        for i, t in enumerate(tickets):
            warn = warns.get(t.id)
            rows.append(
                Row(
                    ticket=t,
                    badge=sla_badge(t, None if warn is None else from_ms(warn), now),
                    time_to_breach_s=None
                    if t.due_at is None or t.status in ("solved", "closed")
                    else round((t.due_at - now).total_seconds(), 3),
                    snippet_html=marked_to_html(snippets[i]) if i < len(snippets) else "",
                    warn_at=None if warn is None else from_ms(warn),
                )
            )
        return rows

    # -- search -------------------------------------------------------------------------------

    async def refresh_index(self) -> int:
        """Bring the search index up to date, one short write transaction per batch."""
        total, more = 0, True
        while more:
            done, more = await self._db.write(self.store.refresh_index)
            total += done
        return total

    async def search(
        self, principal: Principal, text: str, *, limit: int = 25, offset: int = 0
    ) -> Page:
        """Tickets whose subject, text, requester or organisation match every word of
        ``text`` (stemmed: "delayed" finds "delay"), best first.  ``#123`` finds ticket 123."""
        limit = max(1, min(limit, MAX_PAGE))
        now = self.now()
        stripped = text.strip().lstrip("#")
        if stripped.isascii() and stripped.isdigit() and len(stripped) <= 15:
            try:
                detail = await self._tickets.detail(principal, int(stripped))
            except DeskError:
                pass
            else:
                rows = await self._db.read(lambda tx: self._rows(tx, [detail.ticket], now))
                return Page(rows=rows, total=1, offset=0, limit=limit)
        terms = query_terms(text)
        if not terms:
            return Page(rows=[], total=0, offset=offset, limit=limit)
        await self.refresh_index()
        match = match_expression(terms, any_term=False, prefix_last=False)
        customer = principal.kind == "customer"

        def run(tx: Tx) -> Page:
            found, total = self.store.search(
                tx,
                terms,
                match,
                organisation_id=principal.organisation_id if customer else None,
                internal=not customer,
                limit=limit,
                offset=offset,
            )
            rows = self._rows(tx, [f.ticket for f in found], now, [f.snippet for f in found])
            return Page(rows=rows, total=total, offset=offset, limit=limit)

        return await self._db.read(run)

    # -- views --------------------------------------------------------------------------------

    def _scoped(self, principal: Principal, q: ViewQuery) -> ViewQuery:
        if q.view not in VIEW_NAMES:
            raise DeskError("view.unknown", f"unknown view {q.view!r}; one of {VIEW_NAMES}")
        if q.status is not None and q.status not in STATUSES:
            raise DeskError(DeskErrorCode.UNKNOWN_STATUS, f"unknown status {q.status!r}")
        if q.priority is not None and q.priority not in PRIORITIES:
            raise DeskError(DeskErrorCode.UNKNOWN_PRIORITY, f"unknown priority {q.priority!r}")
        q = msgspec.structs.replace(
            q, limit=max(1, min(q.limit, MAX_PAGE)), offset=max(0, q.offset)
        )
        if principal.kind == "customer":
            if q.view not in ("all", "closed"):
                raise DeskError(DeskErrorCode.FORBIDDEN, "customers list their own tickets only")
            return msgspec.structs.replace(q, organisation_id=principal.organisation_id)
        return msgspec.structs.replace(q, agent_id=principal.id)

    async def view(self, principal: Principal, q: ViewQuery) -> Page:
        """One page of a view (``all``, ``mine``, ``unassigned``, ``at_risk``,
        ``breached``, ``mentions``, ``closed``) with filters and sort."""
        q = self._scoped(principal, q)
        now = self.now()

        def run(tx: Tx) -> Page:
            tickets, total = self.store.view(tx, q, to_ms(now))
            return Page(
                rows=self._rows(tx, tickets, now), total=total, offset=q.offset, limit=q.limit
            )

        return await self._db.read(run)

    async def counts(self, principal: Principal) -> dict[str, int]:
        """How many tickets each agent view holds now (the console's sidebar)."""
        self._agent_only(principal, "count views")
        now = to_ms(self.now())

        def run(tx: Tx) -> dict[str, int]:
            return {
                name: self.store.count(tx, ViewQuery(view=name, agent_id=principal.id), now)
                for name in VIEW_NAMES
                if name != "closed"
            }

        return await self._db.read(run)

    async def saved_views(self, principal: Principal) -> list[SavedView]:
        """The agent's saved filters."""
        self._agent_only(principal, "save views")
        rows = await self._db.read(lambda tx: self.store.saved_views(tx, principal.id))
        return [SavedView(id=i, name=n, query=q) for i, n, q in rows]

    async def save_view(self, principal: Principal, name: str, query: str) -> SavedView:
        """Save (or replace by name) a filter as a query string of the list."""
        self._agent_only(principal, "save views")
        name = name.strip()
        if not name or len(name) > 60:
            raise DeskError(DeskErrorCode.REQUEST_INVALID, "a view name has 1-60 characters")
        if len(query) > 1000:
            raise DeskError(DeskErrorCode.TOO_LONG, "a view's query is at most 1000 characters")
        now = to_ms(self.now())
        vid = await self._db.write(
            lambda tx: self.store.save_view(tx, principal.id, name, query, now)
        )
        return SavedView(id=vid, name=name, query=query)

    async def delete_view(self, principal: Principal, view_id: int) -> None:
        """Delete one of the agent's saved filters (``view.not_found`` otherwise)."""
        self._agent_only(principal, "delete views")
        if not await self._db.write(lambda tx: self.store.delete_view(tx, principal.id, view_id)):
            raise DeskError("view.not_found", f"no saved view {view_id}", 404)

    # -- macros -------------------------------------------------------------------------------

    async def macros(self, principal: Principal) -> list[Macro]:
        """Every macro by name (agents only)."""
        self._agent_only(principal, "read macros")
        rows = await self._db.read(self.store.macros)
        return [_macro(r) for r in rows]

    async def put_macro(self, principal: Principal, m: Macro) -> Macro:
        """Create or replace a macro by name; its status/priority/assignee are validated."""
        self._agent_only(principal, "edit macros")
        if not m.name.strip() or len(m.name) > 80:
            raise DeskError(DeskErrorCode.REQUEST_INVALID, "a macro name has 1-80 characters")
        if m.status is not None and m.status not in STATUSES:
            raise DeskError(DeskErrorCode.UNKNOWN_STATUS, f"unknown status {m.status!r}")
        if m.priority is not None and m.priority not in PRIORITIES:
            raise DeskError(DeskErrorCode.UNKNOWN_PRIORITY, f"unknown priority {m.priority!r}")
        now = to_ms(self.now())

        def run(tx: Tx) -> int:
            if m.assignee_id is not None:
                agent = self._desk.agent(tx, m.assignee_id)
                if agent is None or not agent.active:
                    raise DeskError(
                        DeskErrorCode.UNKNOWN_AGENT, f"no active agent {m.assignee_id!r}"
                    )
            return self.store.put_macro(
                tx,
                m.name.strip(),
                m.body,
                m.public,
                m.status,
                m.priority,
                m.assignee_id,
                principal.id,
                now,
            )

        mid = await self._db.write(run)
        return msgspec.structs.replace(m, id=mid, name=m.name.strip())

    async def apply_macro(self, principal: Principal, ticket_id: int, macro_id: int) -> Ticket:
        """Post the macro's text (placeholders filled) and apply its changes, in order:
        comment, priority, assignee, status (so "reply and set pending" pauses after the
        reply)."""
        self._agent_only(principal, "apply macros")
        row = await self._db.read(lambda tx: self.store.macro(tx, macro_id))
        if row is None:
            raise DeskError("macro.not_found", f"no macro {macro_id}", 404)
        m = _macro(row)
        detail = await self._tickets.detail(principal, ticket_id)
        t = detail.ticket
        if m.body.strip():
            values = await self._db.read(lambda tx: self._macro_values(tx, t, principal))
            await self._tickets.add_comment(
                principal, ticket_id, render_macro(m.body, values), public=m.public
            )
        if m.priority is not None:
            await self._tickets.change_priority(principal, ticket_id, m.priority)
        if m.assignee_id is not None:
            await self._tickets.assign(principal, ticket_id, m.assignee_id)
        if m.status is not None:
            await self._tickets.change_status(principal, ticket_id, m.status)
        return (await self._tickets.detail(principal, ticket_id)).ticket

    def _macro_values(self, tx: Tx, t: Ticket, principal: Principal) -> dict[str, str]:
        contact = self._desk.contact(tx, t.requester_id)
        org = self._desk.organisation(tx, t.organisation_id)
        agent = self._desk.agent(tx, principal.id)
        return {
            "ticket": str(t.id),
            "subject": t.subject,
            "requester": contact.name if contact else t.requester_id,
            "organisation": org.name if org else t.organisation_id,
            "agent": agent.name if agent else principal.id,
        }

    # -- bulk ---------------------------------------------------------------------------------

    async def bulk(
        self,
        principal: Principal,
        ticket_ids: Sequence[int],
        *,
        status: str | None = None,
        priority: str | None = None,
        assignee_id: str | None = None,
        unassign: bool = False,
        macro_id: int | None = None,
    ) -> list[BulkResult]:
        """Apply one change to many tickets; each ticket succeeds or fails on its own."""
        self._agent_only(principal, "change tickets in bulk")
        ids = list(dict.fromkeys(ticket_ids))
        if not ids or len(ids) > MAX_BULK:
            raise DeskError(DeskErrorCode.REQUEST_INVALID, f"give 1-{MAX_BULK} ticket ids")
        if (
            status is None
            and priority is None
            and assignee_id is None
            and not unassign
            and macro_id is None
        ):
            raise DeskError(DeskErrorCode.REQUEST_INVALID, "nothing to change")
        out = []
        for tid in ids:
            try:
                if macro_id is not None:
                    await self.apply_macro(principal, tid, macro_id)
                if priority is not None:
                    await self._tickets.change_priority(principal, tid, priority)
                if unassign:
                    await self._tickets.assign(principal, tid, None)
                elif assignee_id is not None:
                    await self._tickets.assign(principal, tid, assignee_id)
                if status is not None:
                    await self._tickets.change_status(principal, tid, status)
            except DeskError as exc:
                out.append(BulkResult(ticket_id=tid, ok=False, error=exc.code, message=exc.message))
            else:
                out.append(BulkResult(ticket_id=tid, ok=True))
        return out

    # -- merge and links ----------------------------------------------------------------------

    async def merge(self, principal: Principal, source_id: int, target_id: int) -> Ticket:
        """Merge ``source`` into ``target`` (same organisation): the target gets an internal
        note with the source's subject, description and public comments; the source gets a
        public pointer to the target and is closed; both keep their logs."""
        self._agent_only(principal, "merge tickets")
        if source_id == target_id:
            raise DeskError("ticket.merge_invalid", "a ticket cannot be merged into itself")
        source = await self._tickets.detail(principal, source_id)
        target = await self._tickets.detail(principal, target_id)
        s, t = source.ticket, target.ticket
        if s.organisation_id != t.organisation_id:
            raise DeskError(
                "ticket.merge_invalid", "tickets of different organisations cannot be merged"
            )
        if s.status == "closed" or t.status == "closed":
            raise DeskError(DeskErrorCode.TICKET_CLOSED, "a closed ticket cannot be merged")
        lines = [f"Merged from #{s.id}: {s.subject}"]
        if s.description.strip():
            lines += ["", s.description]
        for c in source.comments:
            if c.public and c.channel == "ticket":
                lines += [
                    "",
                    f"— {c.author_kind} {c.author_id}, {c.created_at:%Y-%m-%d %H:%M} UTC:",
                    c.body,
                ]
        note = "\n".join(lines)
        if len(note) > 20_000:
            note = note[:19_990] + "\n[…]"
        await self._tickets.add_comment(principal, t.id, note, public=False)
        await self._tickets.add_comment(
            principal,
            s.id,
            f"This request was merged into #{t.id} ({t.subject}); follow it there.",
            public=True,
        )
        if s.status != "solved":
            await self._tickets.change_status(principal, s.id, "solved")
        await self._tickets.change_status(principal, s.id, "closed")
        now = to_ms(self.now())
        await self._db.write(
            lambda tx: self.store.link(tx, s.id, t.id, "merged_into", principal.id, now)
        )
        return (await self._tickets.detail(principal, t.id)).ticket

    async def link(self, principal: Principal, ticket_id: int, other_id: int) -> list[Link]:
        """Mark two tickets as related (agents; both must be visible)."""
        self._agent_only(principal, "link tickets")
        if ticket_id == other_id:
            raise DeskError(DeskErrorCode.REQUEST_INVALID, "a ticket cannot be linked to itself")
        await self._tickets.detail(principal, ticket_id)
        await self._tickets.detail(principal, other_id)
        now = to_ms(self.now())
        await self._db.write(
            lambda tx: self.store.link(
                tx, min(ticket_id, other_id), max(ticket_id, other_id), "related", principal.id, now
            )
        )
        return await self.links(principal, ticket_id)

    async def links(self, principal: Principal, ticket_id: int) -> list[Link]:
        """A ticket's links; a customer sees only links to tickets of their organisation."""
        await self._tickets.detail(principal, ticket_id)

        def run(tx: Tx) -> list[Link]:
            out = []
            for other, kind, direction in self.store.links(tx, ticket_id):
                if principal.kind == "customer":
                    o = self._desk.ticket(tx, other)
                    if o is None or o.organisation_id != principal.organisation_id:
                        continue
                out.append(
                    Link(ticket_id=other, kind=kind, direction="in" if direction == "in" else "out")
                )
            return out

        return await self._db.read(run)

    # -- mentions -----------------------------------------------------------------------------

    async def ticket_changed(self, change: TicketChange) -> None:
        """TicketListener: record @mentions of agents in a new internal note."""
        c = change.comment
        actor = change.actor
        if c is None or c.public or actor is None or actor.kind != "agent":
            return
        agents = await self._db.read(lambda tx: [a.id for a in self._desk.agents(tx)])
        named = [a for a in mentioned_agents(c.body, agents) if a != actor.id]
        if not named:
            return
        now = self.now()
        added = await self._db.write(
            lambda tx: self.store.add_mentions(tx, c.ticket_id, c.id, named, actor.id, to_ms(now))
        )
        for agent_id in added:
            mention = Mention(
                ticket_id=c.ticket_id,
                comment_id=c.id,
                agent_id=agent_id,
                by_agent_id=actor.id,
                at=now,
            )
            for hook in self._hooks:
                try:
                    await hook.mentioned(mention)
                except Exception:
                    log.exception("mention hook %r failed", hook)

    # -- attachments --------------------------------------------------------------------------

    def _path(self, sha256: str) -> Path:
        return self.attachments_dir / sha256[:2] / sha256

    async def attach(
        self,
        principal: Principal,
        ticket_id: int,
        filename: str,
        data: bytes,
        *,
        public: bool = True,
    ) -> Attachment:
        """Store an upload on a ticket.  Customers' uploads are public; agents may attach
        internally.  The bytes go under the data directory by content hash (written to a
        temporary name and renamed, so a crash leaves no half file under the final name)."""
        if principal.kind == "customer" and not public:
            raise DeskError(DeskErrorCode.FORBIDDEN, "customers cannot attach internally")
        try:
            name, content_type = check_upload(filename, data, self.max_attachment_bytes)
        except AttachmentRefused as exc:
            raise DeskError(exc.code, exc.message, exc.status) from None
        ticket = (await self._tickets.detail(principal, ticket_id)).ticket
        if ticket.status == "closed":
            raise DeskError(DeskErrorCode.TICKET_CLOSED, f"ticket {ticket_id} is closed")
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            await asyncio.to_thread(_write_file, path, data)
        now = to_ms(self.now())
        aid = await self._db.write(
            lambda tx: self.store.add_attachment(
                tx,
                ticket_id,
                ticket.organisation_id,
                public,
                name,
                content_type,
                len(data),
                digest,
                (principal.actor_kind, principal.id),
                now,
            )
        )
        row = await self._db.read(lambda tx: self.store.attachment(tx, aid))
        assert row is not None
        return _attachment(row)

    async def attachments(self, principal: Principal, ticket_id: int) -> list[Attachment]:
        """A ticket's attachments the caller may see."""
        await self._tickets.detail(principal, ticket_id)
        rows = await self._db.read(
            lambda tx: self.store.attachments(
                tx, ticket_id, public_only=principal.kind == "customer"
            )
        )
        return [_attachment(r) for r in rows]

    async def attachment(self, principal: Principal, attachment_id: int) -> tuple[Attachment, Path]:
        """An attachment and the file holding its bytes.  Another organisation's
        attachment, an internal one asked for by a customer and a missing one are all
        ``attachment.not_found``."""
        row = await self._db.read(lambda tx: self.store.attachment(tx, attachment_id))
        missing = DeskError("attachment.not_found", f"no attachment {attachment_id}", 404)
        if row is None:
            raise missing
        if principal.kind == "customer" and (
            row.organisation_id != principal.organisation_id or not row.public
        ):
            raise missing
        try:
            await self._tickets.detail(principal, row.ticket_id)
        except DeskError:
            raise missing from None
        return _attachment(row), self._path(row.sha256)

    # -- satisfaction -------------------------------------------------------------------------

    async def rate(
        self, principal: Principal, ticket_id: int, rating: str, comment: str = ""
    ) -> None:
        """The requester's organisation rates a solved or closed ticket (good/bad)."""
        if principal.kind != "customer":
            raise DeskError(DeskErrorCode.FORBIDDEN, "only the customer rates a ticket")
        if rating not in ("good", "bad"):
            raise DeskError(DeskErrorCode.REQUEST_INVALID, "rating is good or bad")
        if len(comment) > 2000:
            raise DeskError(DeskErrorCode.TOO_LONG, "a rating comment is at most 2000 characters")
        t = (await self._tickets.detail(principal, ticket_id)).ticket
        if t.status not in ("solved", "closed"):
            raise DeskError("csat.not_solved", "a ticket is rated once it is solved", 409)
        now = to_ms(self.now())
        await self._db.write(
            lambda tx: self.store.rate(
                tx, ticket_id, t.organisation_id, principal.id, rating, comment, now
            )
        )

    async def rating(self, principal: Principal, ticket_id: int) -> dict[str, Any] | None:
        """The ticket's rating, if any."""
        await self._tickets.detail(principal, ticket_id)
        got = await self._db.read(lambda tx: self.store.rating(tx, ticket_id))
        if got is None:
            return None
        return {"rating": got[0], "comment": got[1], "at": from_ms(got[2])}

    async def csat(self, start: datetime, end: datetime) -> dict[str, Any]:
        """Ratings in ``[start, end)``: counts and the share rated good (reports)."""
        counts = await self._db.read(
            lambda tx: self.store.csat_counts(tx, to_ms(start), to_ms(end))
        )
        good, bad = counts.get("good", 0), counts.get("bad", 0)
        return {
            "good": good,
            "bad": bad,
            "score_pct": None if good + bad == 0 else round(100 * good / (good + bad), 1),
        }

    # -- knowledge base -----------------------------------------------------------------------

    async def kb_feedback(self, slug: str, helpful: bool) -> tuple[int, int]:
        """Record a "was this helpful?" answer; return the article's totals."""
        now = to_ms(self.now())

        def run(tx: Tx) -> tuple[int, int]:
            self.store.kb_feedback(tx, slug, helpful, now)
            return self.store.kb_feedback_counts(tx, slug)

        return await self._db.write(run)


def _macro(r: Sequence[Any]) -> Macro:
    return Macro(
        id=int(r[0]),
        name=r[1],
        body=r[2],
        public=bool(r[3]),
        status=r[4],
        priority=r[5],
        assignee_id=r[6],
    )


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = [
    "Attachment",
    "BulkResult",
    "Link",
    "Macro",
    "Mention",
    "MentionHook",
    "Page",
    "Row",
    "SavedView",
    "WorkspaceService",
]

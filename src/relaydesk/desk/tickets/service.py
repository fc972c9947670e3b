"""Ticket rules: who may do what, the status table, the event log and SLA upkeep.

Theory of operation
-------------------
Every mutating operation is one write transaction (``Database.write``) that (1) checks
the caller may see and change the ticket, (2) validates the change, (3) applies it,
(4) appends one event per change to the ticket log with actor and time, and (5) recomputes
the ticket's SLA from its whole log with the pure engine and caches the summary on the
ticket row.  A :class:`DeskError` raised anywhere rolls the transaction back, so a bad
request writes nothing.  The ``*_tx`` methods take ``now`` explicitly; the async methods
read it from the injected clock.  Customers only ever see their own organisation's
tickets: another organisation's ticket is reported as not found, never as forbidden.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal, Protocol, TypeVar

import msgspec

from relaydesk.clock import Clock, utc_datetime
from relaydesk.desk.sla import (
    Calendar,
    PlanRef,
    SlaCase,
    SlaConfigError,
    SlaPolicy,
    TicketSla,
    compute_sla,
)
from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import (
    ACTIVE_STATUSES,
    MAX_TEXT,
    PRIORITIES,
    STATUSES,
    ActorKind,
    Agent,
    Channel,
    Comment,
    Contact,
    NewTicket,
    Organisation,
    Plan,
    Principal,
    Ticket,
    TicketEvent,
    TicketFilter,
)
from relaydesk.desk.tickets.sla_link import SlaDocuments, sla_events, summarise
from relaydesk.desk.tickets.transitions import can_transition, status_after_comment
from relaydesk.storage.desk import DeskStore, TicketInsert, from_ms, opt_ms, to_ms
from relaydesk.storage.engine import Database, Tx

T = TypeVar("T")

log = logging.getLogger("relaydesk.desk.tickets")

#: ``(agents, open tickets per agent, skills needed, now) -> agent id or None``.
AssignmentPolicy = Callable[
    [Sequence[Agent], Mapping[str, int], Sequence[str], datetime], str | None
]

#: Event kinds a customer may read in the ticket log.
_CUSTOMER_EVENT_KINDS: Final = frozenset(
    {"created", "comment", "status_changed", "priority_changed"}
)
_AUTOMATION_ID: Final = "desk"


def hash_api_key(key: str) -> str:
    """The stored form of an API key (sha256 hex); keys themselves are never stored."""
    return hashlib.sha256(key.encode()).hexdigest()


class TicketDetail(msgspec.Struct, frozen=True):
    """A ticket with the comments and log entries the caller may see."""

    ticket: Ticket
    comments: list[Comment]
    events: list[TicketEvent]


class QueueEntry(msgspec.Struct, frozen=True):
    """A queue row: the ticket and the signed seconds until its next target (<0: overdue)."""

    ticket: Ticket
    time_to_breach_s: float | None


#: What a committed change was (a ``note`` is an internal comment).
ChangeKind = Literal["created", "comment", "note", "status", "priority", "assignee", "sla_policy"]


class TicketChange(msgspec.Struct, frozen=True):
    """A committed change: the ticket as it is now and what kind of change it was."""

    ticket: Ticket
    kind: ChangeKind
    #: The comment or note a ``comment``/``note`` change added (mentions, notifications).
    comment: Comment | None = None
    #: Who made the change (``None``: the desk itself).
    actor: Principal | None = None


class TicketListener(Protocol):
    """Told about every committed ticket change made through the async methods.

    Called after the transaction committed, so a listener can neither undo nor block a
    change; its exceptions are logged and otherwise ignored (``desk/live.py``).
    """

    async def ticket_changed(self, change: TicketChange) -> None:
        """React to ``change``."""
        ...


class TicketService:
    """Tickets, comments, status/priority/assignee changes and their SLA upkeep."""

    def __init__(
        self,
        db: Database,
        store: DeskStore,
        clock: Clock,
        *,
        assignment: AssignmentPolicy | None = None,
        listeners: Sequence[TicketListener] = (),
    ) -> None:
        self._db = db
        self._store = store
        self._clock = clock
        self._assignment = assignment
        self._listeners = list(listeners)
        self.documents = SlaDocuments(store)
        #: Key check used instead of the desk's own table (``desk/admin``), if set.
        self.authenticator: Callable[[str], Awaitable[Principal | None]] | None = None
        #: The organisation an app belongs to (``desk/admin``); when set, a ticket may
        #: name only an app of its own organisation.
        self.app_owner: Callable[[Tx, str], str | None] | None = None
        #: The policy version a plan pins (``desk/admin``); ``None``: the latest.
        self.plan_version: Callable[[Tx, str], int | None] | None = None

    def add_listener(self, listener: TicketListener) -> None:
        """Tell ``listener`` about every later committed change (composition root only)."""
        self._listeners.append(listener)

    async def _changed(
        self,
        ticket_id: int,
        kind: ChangeKind,
        comment: Comment | None = None,
        actor: Principal | None = None,
    ) -> None:
        """Notify listeners after a commit; a failing listener never fails the caller."""
        if not self._listeners:
            return
        ticket = await self._db.read(lambda tx: self._store.ticket(tx, ticket_id))
        if ticket is None:  # pragma: no cover - tickets are never deleted
            return
        change = TicketChange(ticket=ticket, kind=kind, comment=comment, actor=actor)
        for listener in self._listeners:
            try:
                await listener.ticket_changed(change)
            except Exception:
                log.exception("ticket listener %r failed for ticket %s", listener, ticket_id)

    async def announce(
        self, ticket_id: int, kind: ChangeKind, comment: Comment | None = None
    ) -> None:
        """Tell the listeners about a change committed through the ``*_tx`` methods in a
        caller's own transaction (the async methods do this themselves)."""
        await self._changed(ticket_id, kind, comment)

    @property
    def store(self) -> DeskStore:
        """The store this service writes through."""
        return self._store

    def now(self) -> datetime:
        """The injected clock's current time (aware UTC), at the store's millisecond
        precision so that an event stored "now" is never after ``now``."""
        return from_ms(to_ms(utc_datetime(self._clock)))

    # -- configuration ------------------------------------------------------------------------

    def put_policy_tx(self, tx: Tx, policy: SlaPolicy, now: datetime) -> None:
        """Store a policy version; re-storing an existing version with other content fails."""
        body = msgspec.json.encode(policy)
        if not self._store.put_policy(tx, policy.id, policy.version, body, to_ms(now)):
            existing = self._store.policy(tx, policy.id, policy.version)
            if existing is not None and msgspec.json.decode(existing) != msgspec.json.decode(body):
                raise DeskError(
                    DeskErrorCode.SLA_CONFIG,
                    f"policy {policy.id!r} version {policy.version} exists; bump the version",
                )

    def put_calendar_tx(self, tx: Tx, name: str, calendar: Calendar, now: datetime) -> None:
        """Create or replace a named calendar (already validated by construction)."""
        self._store.put_calendar(tx, name, msgspec.json.encode(calendar), to_ms(now))

    async def put_calendar(self, name: str, raw: bytes) -> Calendar:
        """Validate a calendar document and store it; SLA errors keep their engine code."""
        try:
            calendar = msgspec.json.decode(raw, type=Calendar)
        except SlaConfigError as exc:
            raise DeskError(exc.code, exc.message, 422) from exc
        except msgspec.MsgspecError as exc:  # not JSON (DecodeError) or not a calendar
            raise DeskError(DeskErrorCode.REQUEST_INVALID, str(exc)) from exc
        now = self.now()
        await self._db.write(lambda tx: self.put_calendar_tx(tx, name, calendar, now))
        return calendar

    # -- SLA policy versions (docs/desk.md, "SLA policies") -----------------------------------

    async def policies(self) -> list[SlaPolicy]:
        """The latest version of every stored policy, by id."""
        rows = await self._db.read(lambda tx: self._store.policies(tx))
        return [msgspec.json.decode(body, type=SlaPolicy) for _id, _v, body in rows]

    async def policy_version(self, policy_id: str, version: int | None) -> SlaPolicy:
        """One stored policy version (``None``: the latest)."""

        def run(tx: Tx) -> SlaPolicy:
            v = version
            if v is None:
                v = self._store.latest_policy_version(tx, policy_id)
            if v is None:
                raise DeskError(DeskErrorCode.UNKNOWN_POLICY, f"no SLA policy {policy_id!r}")
            return self.documents.policy(tx, policy_id, v)

        return await self._db.read(run)

    def add_policy_version_tx(
        self, tx: Tx, draft: SlaPolicy, now: datetime, based_on: int | None = None
    ) -> SlaPolicy:
        """Store ``draft`` as the next version of its id (its own ``version`` is ignored).

        Versions are immutable: tickets keep the version they were created under until an
        agent re-applies another (:meth:`apply_policy_tx`); new tickets take the latest.
        ``based_on`` (the latest version the editor started from, if the caller knows it)
        refuses with ``sla.version_conflict`` when another version was stored meanwhile, so
        an edit never silently drops someone else's.
        """
        known = set(self.documents.calendars(tx)) | {"24x7"}
        missing = sorted(draft.calendar_names() - known)
        if missing:
            raise DeskError(
                "policy.unknown_calendar", f"policy refers to unknown calendar {missing[0]!r}"
            )
        latest = self._store.latest_policy_version(tx, draft.id)
        if based_on is not None and latest != based_on:
            raise DeskError(
                DeskErrorCode.SLA_VERSION_CONFLICT,
                f"policy {draft.id!r} is at version {latest} now, not {based_on}: another"
                " version was stored after this edit began; compare with it and store again",
            )
        policy = msgspec.structs.replace(draft, version=(latest or 0) + 1)
        body = msgspec.json.encode(policy)
        if not self._store.put_policy(tx, policy.id, policy.version, body, to_ms(now)):
            raise DeskError(  # pragma: no cover - the writer is serialised
                DeskErrorCode.SLA_VERSION_CONFLICT,
                f"policy {policy.id!r} version {policy.version} was stored meanwhile; retry",
            )
        return policy

    async def add_policy_version(
        self, principal: Principal, draft: SlaPolicy, *, based_on: int | None = None
    ) -> SlaPolicy:
        """See :meth:`add_policy_version_tx` (agents only)."""
        self._agent_only(principal, "edit SLA policies")
        now = self.now()
        return await self._db.write(lambda tx: self.add_policy_version_tx(tx, draft, now, based_on))

    def apply_policy_tx(
        self,
        tx: Tx,
        principal: Principal,
        ticket_id: int,
        policy_id: str | None,
        version: int | None,
        now: datetime,
    ) -> Ticket:
        """Re-apply a policy version to a ticket (default: the latest version of the
        organisation's plan policy), log ``sla_policy_applied`` and recompute its SLA from
        creation under that version."""
        ticket = self._visible(tx, principal, ticket_id, for_update=True)
        self._agent_only(principal, "re-apply SLA policies")
        if policy_id is None:
            org = self._store.organisation(tx, ticket.organisation_id)
            plan = None if org is None else self._store.plan(tx, org.plan_id)
            policy_id = ticket.policy_id if plan is None else plan.policy_id
        if version is None:
            version = self._store.latest_policy_version(tx, policy_id)
        if version is None or self._store.policy(tx, policy_id, version) is None:
            raise DeskError(
                DeskErrorCode.UNKNOWN_POLICY, f"no SLA policy {policy_id!r} version {version}"
            )
        if (policy_id, version) == (ticket.policy_id, ticket.policy_version):
            return ticket
        self._store.set_ticket_policy(tx, ticket_id, policy_id, version, to_ms(now))
        self._event(
            tx,
            ticket_id,
            now,
            "sla_policy_applied",
            (principal.actor_kind, principal.id),
            {
                "from": {"policy_id": ticket.policy_id, "version": ticket.policy_version},
                "to": {"policy_id": policy_id, "version": version},
            },
        )
        self.recompute_tx(tx, ticket_id, now)
        return self._reload(tx, ticket_id)

    async def apply_policy(
        self, principal: Principal, ticket_id: int, policy_id: str | None, version: int | None
    ) -> Ticket:
        """See :meth:`apply_policy_tx`."""
        now = self.now()
        ticket = await self._db.write(
            lambda tx: self.apply_policy_tx(tx, principal, ticket_id, policy_id, version, now)
        )
        await self._changed(ticket_id, "sla_policy")
        return ticket

    def sla_case_tx(self, tx: Tx, principal: Principal, ticket_id: int, now: datetime) -> SlaCase:
        """The ticket as a self-contained case file (docs/sla.md, "Case files"): its
        organisation, plan, the policy version applied, the calendars it uses, the SLA events
        and ``now``, so a dispute replays offline exactly as the desk computed it."""
        ticket = self._visible(tx, principal, ticket_id)
        policy = self.documents.policy(tx, ticket.policy_id, ticket.policy_version)
        calendars = self.documents.calendars(tx)
        org = self._store.organisation(tx, ticket.organisation_id)
        plan = None if org is None else self._store.plan(tx, org.plan_id)
        events = sla_events(self._store.events(tx, ticket.id))
        if principal.kind == "customer":
            # Internal notes and war-room posts never move a clock (docs/sla.md 4.1); a
            # customer's copy leaves them out, so it does not reveal when agents talked.
            events = [
                e for e in events if e.kind != "comment" or (e.public and e.channel == "ticket")
            ]
        return SlaCase(
            title=f"ticket {ticket.id}: {ticket.subject}",
            organisation=ticket.organisation_id,
            plan=PlanRef(
                id=plan.id if plan is not None else "-",
                name=plan.name if plan is not None else "",
                policy_id=policy.id,
                policy_version=policy.version,
            ),
            policy=policy,
            calendars={n: calendars[n] for n in sorted(policy.calendar_names()) if n in calendars},
            events=events,
            now=now,
        )

    async def sla_case(self, principal: Principal, ticket_id: int) -> SlaCase:
        """See :meth:`sla_case_tx`."""
        now = self.now()
        return await self._db.read(lambda tx: self.sla_case_tx(tx, principal, ticket_id, now))

    def put_plan_tx(self, tx: Tx, plan: Plan) -> None:
        """Create or replace a plan; its policy must exist."""
        if self._store.latest_policy_version(tx, plan.policy_id) is None:
            raise DeskError(DeskErrorCode.UNKNOWN_POLICY, f"no SLA policy {plan.policy_id!r}")
        self._store.put_plan(tx, plan)

    def put_organisation_tx(self, tx: Tx, org: Organisation) -> None:
        """Create or replace an organisation; its plan (and CSM) must exist."""
        if self._store.plan(tx, org.plan_id) is None:
            raise DeskError(DeskErrorCode.UNKNOWN_PLAN, f"no plan {org.plan_id!r}")
        if org.csm_agent_id is not None and self._store.agent(tx, org.csm_agent_id) is None:
            raise DeskError(DeskErrorCode.UNKNOWN_AGENT, f"no agent {org.csm_agent_id!r}")
        self._store.put_organisation(tx, org)

    def put_contact_tx(self, tx: Tx, contact: Contact) -> None:
        """Create or replace a contact of an existing organisation."""
        if self._store.organisation(tx, contact.organisation_id) is None:
            raise DeskError(
                DeskErrorCode.UNKNOWN_ORGANISATION,
                f"no organisation {contact.organisation_id!r}",
            )
        self._store.put_contact(tx, contact)

    def put_agent_tx(self, tx: Tx, agent: Agent) -> None:
        """Create or replace an agent."""
        self._store.put_agent(tx, agent)

    def issue_api_key_tx(self, tx: Tx, principal: Principal, label: str, now: datetime) -> str:
        """Create an API key for an agent or contact; only its hash is stored."""
        if principal.kind == "agent" and self._store.agent(tx, principal.id) is None:
            raise DeskError(DeskErrorCode.UNKNOWN_AGENT, f"no agent {principal.id!r}")
        if principal.kind == "customer" and self._store.contact(tx, principal.id) is None:
            raise DeskError(DeskErrorCode.UNKNOWN_REQUESTER, f"no contact {principal.id!r}")
        key = "rdk_" + secrets.token_urlsafe(32)
        self._store.put_api_key(tx, hash_api_key(key), principal, label, to_ms(now))
        return key

    async def authenticate(self, key: str) -> Principal | None:
        """The principal owning ``key``, or ``None`` for an unknown or revoked key.

        With administration wired in (``authenticator``), its keys are checked, and the
        disabled flags of people and organisations apply."""
        if self.authenticator is not None:
            return await self.authenticator(key)
        digest = hash_api_key(key)
        return await self._db.read(lambda tx: self._store.principal_for_key(tx, digest))

    # -- helpers ------------------------------------------------------------------------------

    def _visible(
        self, tx: Tx, principal: Principal, ticket_id: int, *, for_update: bool = False
    ) -> Ticket:
        ticket = self._store.ticket(tx, ticket_id, for_update=for_update)
        if ticket is None or (
            principal.kind == "customer" and ticket.organisation_id != principal.organisation_id
        ):
            raise DeskError(DeskErrorCode.TICKET_NOT_FOUND, f"no ticket {ticket_id}")
        return ticket

    @staticmethod
    def _agent_only(principal: Principal, what: str) -> None:
        if principal.kind != "agent":
            raise DeskError(DeskErrorCode.FORBIDDEN, f"only agents may {what}")

    def _event(
        self,
        tx: Tx,
        ticket_id: int,
        now: datetime,
        kind: str,
        actor: tuple[ActorKind, str],
        data: dict[str, Any],
    ) -> None:
        self._store.append_event(tx, ticket_id, to_ms(now), kind, actor[0], actor[1], data)

    def compute(self, tx: Tx, ticket: Ticket, now: datetime) -> TicketSla:
        """The ticket's SLA at ``now`` from its whole log (policy version as snapshotted)."""
        policy = self.documents.policy(tx, ticket.policy_id, ticket.policy_version)
        calendars = self.documents.calendars(tx)
        events = sla_events(self._store.events(tx, ticket.id))
        try:
            return compute_sla(policy, calendars, events, now)
        except SlaConfigError as exc:
            raise DeskError(exc.code, exc.message, 422) from exc

    def recompute_tx(
        self, tx: Tx, ticket_id: int, now: datetime, *, from_scheduler: bool = False
    ) -> TicketSla:
        """Recompute and cache a ticket's SLA (after an event, or by the scheduler)."""
        ticket = self._store.ticket(tx, ticket_id)
        if ticket is None:
            raise DeskError(DeskErrorCode.TICKET_NOT_FOUND, f"no ticket {ticket_id}")
        sla = self.compute(tx, ticket, now)
        summary = summarise(sla, now, from_scheduler=from_scheduler)
        if not from_scheduler:
            # Work already due for the scheduler (an urgent page, a passed warning) stays
            # due: a later event must not push it back to the next target.
            pending = self._store.next_check(tx, ticket_id)
            if pending is not None and pending <= to_ms(now):
                check = summary.next_check_at
                summary = msgspec.structs.replace(
                    summary, next_check_at=pending if check is None else min(check, pending)
                )
        self._store.save_sla(tx, ticket_id, summary)
        return sla

    def _check_soon(self, tx: Tx, ticket_id: int, priority: str, now: datetime) -> None:
        # Urgent tickets page the on-call agent as soon as the scheduler next runs.
        if priority in ("P0", "P1"):
            self._store.set_next_check(tx, ticket_id, to_ms(now))

    # -- tickets ------------------------------------------------------------------------------

    def create_ticket_tx(
        self, tx: Tx, principal: Principal, new: NewTicket, now: datetime
    ) -> Ticket:
        """Open a ticket (see :meth:`create_ticket`)."""
        _validate_new(new)
        requester_id = new.requester_id
        if principal.kind == "customer":
            if new.assignee_id is not None:
                raise DeskError(DeskErrorCode.FORBIDDEN, "customers cannot assign tickets")
            requester_id = requester_id or principal.id
        elif requester_id is None:
            raise DeskError(
                DeskErrorCode.UNKNOWN_REQUESTER, "requester_id is required when an agent files"
            )
        contact = self._store.contact(tx, requester_id)
        if contact is None or (
            principal.kind == "customer" and contact.organisation_id != principal.organisation_id
        ):
            raise DeskError(DeskErrorCode.UNKNOWN_REQUESTER, f"no contact {requester_id!r}")
        org = self._store.organisation(tx, contact.organisation_id)
        if org is None:  # pragma: no cover - foreign key
            raise DeskError(DeskErrorCode.UNKNOWN_ORGANISATION, contact.organisation_id)
        plan = self._store.plan(tx, org.plan_id)
        if plan is None:  # pragma: no cover - foreign key
            raise DeskError(DeskErrorCode.UNKNOWN_PLAN, org.plan_id)
        pinned = None if self.plan_version is None else self.plan_version(tx, plan.id)
        version = pinned or self._store.latest_policy_version(tx, plan.policy_id)
        if version is None:
            raise DeskError(DeskErrorCode.UNKNOWN_POLICY, f"no SLA policy {plan.policy_id!r}")
        if new.assignee_id is not None:
            self._require_agent(tx, new.assignee_id)
        if (
            new.app_id is not None
            and self.app_owner is not None
            and self.app_owner(tx, new.app_id) != org.id
        ):
            # Same answer for another tenant's app and for no app at all: another
            # organisation's app ids are never confirmed.
            raise DeskError(
                DeskErrorCode.UNKNOWN_APP, f"organisation {org.id!r} has no app {new.app_id!r}"
            )
        now_ms = to_ms(now)
        ticket_id = self._store.insert_ticket(
            tx,
            TicketInsert(
                organisation_id=org.id,
                requester_id=contact.id,
                assignee_id=new.assignee_id,
                subject=new.subject,
                description=new.description,
                priority=new.priority,
                status="new",
                skills=tuple(dict.fromkeys(new.skills)),
                tags=tuple(dict.fromkeys(new.tags)),
                app_id=new.app_id,
                region=new.region,
                window_start=opt_ms(new.window_start),
                window_end=opt_ms(new.window_end),
                policy_id=plan.policy_id,
                policy_version=version,
                created_at=now_ms,
            ),
        )
        actor = (principal.actor_kind, principal.id)
        self._event(
            tx,
            ticket_id,
            now,
            "created",
            actor,
            {"priority": new.priority, "status": "new", "requester_id": contact.id},
        )
        assignee = new.assignee_id
        if assignee is None and self._assignment is not None:
            assignee = self._assignment(
                self._store.agents(tx), self._store.agent_loads(tx), new.skills, now
            )
            if assignee is not None:
                self._store.set_assignee(tx, ticket_id, assignee, now_ms)
                self._event(
                    tx,
                    ticket_id,
                    now,
                    "assignee_changed",
                    ("automation", "auto-assign"),
                    {"from": None, "to": assignee, "skills": list(new.skills)},
                )
        elif assignee is not None:
            self._event(
                tx, ticket_id, now, "assignee_changed", actor, {"from": None, "to": assignee}
            )
        self.recompute_tx(tx, ticket_id, now)
        self._check_soon(tx, ticket_id, new.priority, now)
        ticket = self._store.ticket(tx, ticket_id)
        assert ticket is not None
        return ticket

    async def create_ticket(self, principal: Principal, new: NewTicket) -> Ticket:
        """Open a ticket.  Customers file for their own organisation; agents name the
        requester.  Unassigned tickets are auto-assigned by skill and load when enabled."""
        now = self.now()
        ticket = await self._db.write(lambda tx: self.create_ticket_tx(tx, principal, new, now))
        await self._changed(ticket.id, "created")
        return ticket

    def _require_agent(self, tx: Tx, agent_id: str) -> Agent:
        agent = self._store.agent(tx, agent_id)
        if agent is None or not agent.active:
            raise DeskError(DeskErrorCode.UNKNOWN_AGENT, f"no active agent {agent_id!r}")
        return agent

    def add_comment_tx(
        self,
        tx: Tx,
        principal: Principal | None,
        ticket_id: int,
        body: str,
        *,
        public: bool,
        now: datetime,
        channel: Channel = "ticket",
        author: tuple[ActorKind, str] | None = None,
    ) -> Comment:
        """Add a comment (see :meth:`add_comment`); ``principal=None`` is the desk itself,
        writing as ``author`` (``automation`` or ``bot``)."""
        if principal is not None:
            ticket = self._visible(tx, principal, ticket_id, for_update=True)
            if principal.kind == "customer" and not public:
                raise DeskError(DeskErrorCode.FORBIDDEN, "customers cannot write internal notes")
            actor: tuple[ActorKind, str] = (principal.actor_kind, principal.id)
        else:
            found = self._store.ticket(tx, ticket_id, for_update=True)
            if found is None:
                raise DeskError(DeskErrorCode.TICKET_NOT_FOUND, f"no ticket {ticket_id}")
            ticket = found
            actor = author or ("automation", _AUTOMATION_ID)
        if len(body) > MAX_TEXT:
            raise DeskError(DeskErrorCode.TOO_LONG, f"comment longer than {MAX_TEXT} characters")
        if not body.strip():
            raise DeskError(DeskErrorCode.REQUEST_INVALID, "comment body is empty")
        if ticket.status == "closed":
            raise DeskError(
                DeskErrorCode.TICKET_CLOSED, f"ticket {ticket_id} is closed; open a new ticket"
            )
        now_ms = to_ms(now)
        cid = self._store.insert_comment(
            tx, ticket_id, actor[0], actor[1], public, channel, body, now_ms
        )
        self._event(
            tx,
            ticket_id,
            now,
            "comment",
            actor,
            {"comment_id": cid, "public": public, "channel": channel},
        )
        implied = status_after_comment(ticket.status, actor[0], public)
        if implied is not None:
            self._apply_status(tx, ticket, implied, now, actor)
        else:
            self._store.touch(tx, ticket_id, now_ms)
        self.recompute_tx(tx, ticket_id, now)
        return Comment(
            id=cid,
            ticket_id=ticket_id,
            author_kind=actor[0],
            author_id=actor[1],
            public=public,
            channel=channel,
            body=body,
            created_at=from_ms(now_ms),
        )

    async def add_comment(
        self,
        principal: Principal,
        ticket_id: int,
        body: str,
        *,
        public: bool = True,
        channel: Channel = "ticket",
    ) -> Comment:
        """Comment on a ticket.  Customers write public comments only; a public agent reply
        opens a ``new`` ticket and a customer comment re-opens a pending or solved one."""
        now = self.now()
        comment = await self._db.write(
            lambda tx: self.add_comment_tx(
                tx, principal, ticket_id, body, public=public, now=now, channel=channel
            )
        )
        await self._changed(ticket_id, "comment" if public else "note", comment, principal)
        return comment

    async def add_automation_comment(
        self, ticket_id: int, body: str, *, public: bool, role: ActorKind = "automation"
    ) -> Comment:
        """A comment written by the desk itself (auto-acknowledgements, diagnosis notes).

        A public automation comment acknowledges a ticket but is never a first response.
        """
        now = self.now()
        comment = await self._db.write(
            lambda tx: self.add_comment_tx(
                tx, None, ticket_id, body, public=public, now=now, author=(role, _AUTOMATION_ID)
            )
        )
        await self._changed(ticket_id, "comment" if public else "note", comment)
        return comment

    def _apply_status(
        self, tx: Tx, ticket: Ticket, status: str, now: datetime, actor: tuple[ActorKind, str]
    ) -> None:
        now_ms = to_ms(now)
        solved_at = opt_ms(ticket.solved_at)
        closed_at = None
        if status == "solved":
            solved_at = now_ms
        elif status == "closed":
            closed_at = now_ms
            solved_at = solved_at or now_ms
        else:
            solved_at = None
        self._store.set_status(
            tx, ticket.id, status, status in ACTIVE_STATUSES, now_ms, solved_at, closed_at
        )
        self._event(
            tx, ticket.id, now, "status_changed", actor, {"from": ticket.status, "to": status}
        )

    def change_status_tx(
        self, tx: Tx, principal: Principal, ticket_id: int, status: str, now: datetime
    ) -> Ticket:
        """Change the status (see :meth:`change_status`)."""
        if status not in STATUSES:
            raise DeskError(
                DeskErrorCode.UNKNOWN_STATUS,
                f"unknown status {status!r}; expected one of {', '.join(STATUSES)}",
            )
        ticket = self._visible(tx, principal, ticket_id, for_update=True)
        self._agent_only(principal, "change the status")
        if status == ticket.status:
            return ticket
        if not can_transition(ticket.status, status):
            raise DeskError(
                DeskErrorCode.INVALID_TRANSITION,
                f"a {ticket.status} ticket cannot become {status}",
            )
        self._apply_status(tx, ticket, status, now, (principal.actor_kind, principal.id))
        self.recompute_tx(tx, ticket_id, now)
        return self._reload(tx, ticket_id)

    async def change_status(self, principal: Principal, ticket_id: int, status: str) -> Ticket:
        """Move a ticket along the status table (agents only); same status is a no-op."""
        now = self.now()
        ticket = await self._db.write(
            lambda tx: self.change_status_tx(tx, principal, ticket_id, status, now)
        )
        await self._changed(ticket_id, "status")
        return ticket

    async def customer_status(
        self, principal: Principal, ticket_id: int, action: Literal["solve", "reopen"]
    ) -> Ticket:
        """A customer marks their own organisation's active ticket solved, or re-opens a
        solved one (the only status changes customers make; docs/desk.md)."""
        now = self.now()

        def run(tx: Tx) -> Ticket:
            if principal.kind != "customer":
                raise DeskError(DeskErrorCode.FORBIDDEN, "agents change the status directly")
            ticket = self._visible(tx, principal, ticket_id, for_update=True)
            if ticket.status == "closed":
                raise DeskError(DeskErrorCode.TICKET_CLOSED, f"ticket {ticket_id} is closed")
            if action == "solve" and ticket.status in ACTIVE_STATUSES:
                target = "solved"
            elif action == "reopen" and ticket.status == "solved":
                target = "open"
            else:
                raise DeskError(
                    DeskErrorCode.INVALID_TRANSITION, f"a {ticket.status} ticket cannot {action}"
                )
            self._apply_status(tx, ticket, target, now, (principal.actor_kind, principal.id))
            self.recompute_tx(tx, ticket_id, now)
            return self._reload(tx, ticket_id)

        ticket = await self._db.write(run)
        await self._changed(ticket_id, "status", actor=principal)
        return ticket

    def change_priority_tx(
        self, tx: Tx, principal: Principal, ticket_id: int, priority: str, now: datetime
    ) -> Ticket:
        """Change the priority (see :meth:`change_priority`)."""
        if priority not in PRIORITIES:
            raise DeskError(
                DeskErrorCode.UNKNOWN_PRIORITY,
                f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}",
            )
        ticket = self._visible(tx, principal, ticket_id, for_update=True)
        self._agent_only(principal, "change the priority")
        if ticket.status == "closed":
            raise DeskError(DeskErrorCode.TICKET_CLOSED, f"ticket {ticket_id} is closed")
        if priority == ticket.priority:
            return ticket
        self._store.set_priority(tx, ticket_id, priority, to_ms(now))
        self._event(
            tx,
            ticket_id,
            now,
            "priority_changed",
            (principal.actor_kind, principal.id),
            {"from": ticket.priority, "to": priority},
        )
        self.recompute_tx(tx, ticket_id, now)
        self._check_soon(tx, ticket_id, priority, now)
        return self._reload(tx, ticket_id)

    async def change_priority(self, principal: Principal, ticket_id: int, priority: str) -> Ticket:
        """Re-prioritise (agents only); SLA targets are recomputed from creation."""
        now = self.now()
        ticket = await self._db.write(
            lambda tx: self.change_priority_tx(tx, principal, ticket_id, priority, now)
        )
        await self._changed(ticket_id, "priority")
        return ticket

    def assign_tx(
        self,
        tx: Tx,
        principal: Principal | None,
        ticket_id: int,
        assignee_id: str | None,
        now: datetime,
    ) -> Ticket:
        """Change the assignee (see :meth:`assign`); ``principal=None`` is automation."""
        if principal is None:
            found = self._store.ticket(tx, ticket_id, for_update=True)
            if found is None:
                raise DeskError(DeskErrorCode.TICKET_NOT_FOUND, f"no ticket {ticket_id}")
            ticket = found
            actor: tuple[ActorKind, str] = ("automation", "auto-assign")
        else:
            ticket = self._visible(tx, principal, ticket_id, for_update=True)
            self._agent_only(principal, "assign tickets")
            actor = (principal.actor_kind, principal.id)
        if assignee_id is not None:
            self._require_agent(tx, assignee_id)
        if ticket.status == "closed":
            raise DeskError(DeskErrorCode.TICKET_CLOSED, f"ticket {ticket_id} is closed")
        if assignee_id == ticket.assignee_id:
            return ticket
        self._store.set_assignee(tx, ticket_id, assignee_id, to_ms(now))
        self._event(
            tx,
            ticket_id,
            now,
            "assignee_changed",
            actor,
            {"from": ticket.assignee_id, "to": assignee_id},
        )
        return self._reload(tx, ticket_id)

    async def assign(self, principal: Principal, ticket_id: int, assignee_id: str | None) -> Ticket:
        """Assign a ticket to an active agent, or unassign it with ``None`` (agents only)."""
        now = self.now()
        ticket = await self._db.write(
            lambda tx: self.assign_tx(tx, principal, ticket_id, assignee_id, now)
        )
        await self._changed(ticket_id, "assignee")
        return ticket

    def _reload(self, tx: Tx, ticket_id: int) -> Ticket:
        ticket = self._store.ticket(tx, ticket_id)
        assert ticket is not None
        return ticket

    # -- reading ------------------------------------------------------------------------------

    def detail_tx(self, tx: Tx, principal: Principal, ticket_id: int) -> TicketDetail:
        """A ticket with what the caller may read of its comments and log."""
        ticket = self._visible(tx, principal, ticket_id)
        customer = principal.kind == "customer"
        comments = self._store.comments(tx, ticket_id, public_only=customer)
        events = self._store.events(tx, ticket_id)
        if customer:
            events = [
                e
                for e in events
                if e.kind in _CUSTOMER_EVENT_KINDS
                and (e.kind != "comment" or bool(e.data.get("public", True)))
            ]
        return TicketDetail(ticket=ticket, comments=comments, events=events)

    async def detail(self, principal: Principal, ticket_id: int) -> TicketDetail:
        """See :meth:`detail_tx`."""
        return await self._db.read(lambda tx: self.detail_tx(tx, principal, ticket_id))

    async def list_tickets(self, principal: Principal, f: TicketFilter) -> list[Ticket]:
        """Tickets matching ``f``; customers are confined to their organisation."""
        if principal.kind == "customer":
            if f.organisation_id not in (None, principal.organisation_id):
                return []
            f = msgspec.structs.replace(f, organisation_id=principal.organisation_id)
        return await self._db.read(lambda tx: self._store.list_tickets(tx, f))

    def queue_tx(
        self,
        tx: Tx,
        principal: Principal,
        now: datetime,
        *,
        limit: int = 50,
        assignee_id: str | None = None,
        organisation_id: str | None = None,
    ) -> list[QueueEntry]:
        """Active tickets by next target, overdue first (agents only)."""
        self._agent_only(principal, "read the queue")
        tickets = self._store.queue(
            tx, limit=limit, assignee_id=assignee_id, organisation_id=organisation_id
        )
        return [
            QueueEntry(
                ticket=t,
                time_to_breach_s=None
                if t.due_at is None
                else round((t.due_at - now).total_seconds(), 3),
            )
            for t in tickets
        ]

    async def queue(
        self,
        principal: Principal,
        *,
        limit: int = 50,
        assignee_id: str | None = None,
        organisation_id: str | None = None,
    ) -> list[QueueEntry]:
        """See :meth:`queue_tx`."""
        now = self.now()
        return await self._db.read(
            lambda tx: self.queue_tx(
                tx,
                principal,
                now,
                limit=limit,
                assignee_id=assignee_id,
                organisation_id=organisation_id,
            )
        )

    async def sla_status(self, principal: Principal, ticket_id: int) -> TicketSla:
        """The ticket's SLA computed afresh at the current time."""
        now = self.now()

        def run(tx: Tx) -> TicketSla:
            ticket = self._visible(tx, principal, ticket_id)
            return self.compute(tx, ticket, now)

        return await self._db.read(run)

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a read snapshot (reports and operators' views)."""
        return await self._db.read(fn)


def _validate_new(new: NewTicket) -> None:
    """Checks the API layer's types also make, repeated for direct callers."""
    if new.priority not in PRIORITIES:
        raise DeskError(DeskErrorCode.UNKNOWN_PRIORITY, f"unknown priority {new.priority!r}")
    if not new.subject.strip():
        raise DeskError(DeskErrorCode.REQUEST_INVALID, "subject is empty")
    if len(new.subject) > 200:
        raise DeskError(DeskErrorCode.TOO_LONG, "subject longer than 200 characters")
    if len(new.description) > MAX_TEXT:
        raise DeskError(DeskErrorCode.TOO_LONG, f"description longer than {MAX_TEXT} characters")
    for label, value in (("window_start", new.window_start), ("window_end", new.window_end)):
        if value is not None and value.utcoffset() is None:
            raise DeskError(
                DeskErrorCode.INVALID_WINDOW, f"{label} needs a time zone offset (e.g. Z)"
            )
    if (new.window_start is None) != (new.window_end is None):
        raise DeskError(
            DeskErrorCode.INVALID_WINDOW, "give both window_start and window_end, or neither"
        )
    if new.window_start is not None and new.window_end is not None:
        if new.window_end <= new.window_start:
            raise DeskError(
                DeskErrorCode.INVALID_WINDOW,
                f"time window ends ({new.window_end.isoformat()}) before it starts "
                f"({new.window_start.isoformat()})",
            )

"""The desk's domain types: organisations, plans, people, tickets, comments, events.

All are frozen msgspec structs so that they double as API response bodies (Litestar
documents them in the OpenAPI schema) and never change under a caller's feet.  Instants
are aware UTC datetimes; the store keeps them as integer epoch milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from msgspec import Meta

Priority = Literal["P0", "P1", "P2", "P3"]
PRIORITIES: Final[tuple[Priority, ...]] = get_args(Priority)
#: Priorities whose warnings and breaches page the on-call agent (BRIEF §2).
URGENT_PRIORITIES: Final = frozenset({"P0", "P1"})

#: ``pending`` waits on the customer, ``on_hold`` on a third party.
Status = Literal["new", "open", "pending", "on_hold", "solved", "closed"]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)
#: Statuses in which a ticket is still being worked (it stays in the agent queue).
ACTIVE_STATUSES: Final = frozenset({"new", "open", "pending", "on_hold"})

#: Who did something.  ``customer`` is a contact of the ticket's organisation;
#: ``automation`` covers the desk's own rules (auto-assignment, escalation, auto-acks).
ActorKind = Literal["agent", "customer", "automation", "bot"]
Channel = Literal["ticket", "war_room"]

EventKind = Literal[
    "created",
    "comment",
    "status_changed",
    "priority_changed",
    "assignee_changed",
    "sla_warning",
    "sla_breach",
    "page",
    "sla_policy_applied",
]
#: Events that feed the SLA engine; the others are audit only.
SLA_INPUT_KINDS: Final = frozenset({"created", "comment", "status_changed", "priority_changed"})

SlaState = Literal["active", "paused", "achieved", "breached", "none"]

# Size limits (BRIEF §4: every interface validates input).  Subjects are one line in a
# queue table; 20,000 characters holds a long log excerpt yet keeps a ticket row small.
MAX_SUBJECT: Final = 200
MAX_TEXT: Final = 20_000
MAX_TAGS: Final = 20
MAX_SKILLS: Final = 10

Slug = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Label = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,63}$")]
HHMM = Annotated[str, Meta(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class OnCallShift(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A weekly on-call window in ``timezone``; ``end <= start`` runs past midnight."""

    days: tuple[Weekday, ...]
    start: HHMM
    end: HHMM
    timezone: str = "UTC"


class Agent(msgspec.Struct, frozen=True):
    """A support engineer: skills route tickets, shifts say when they can be paged."""

    id: str
    name: str
    email: str = ""
    skills: tuple[str, ...] = ()
    oncall: tuple[OnCallShift, ...] = ()
    active: bool = True


class Plan(msgspec.Struct, frozen=True):
    """A customer plan; its SLA policy (by id, latest version) applies to new tickets."""

    id: str
    name: str
    policy_id: str


class Organisation(msgspec.Struct, frozen=True):
    """A customer organisation on a plan, with an optional customer success manager."""

    id: str
    name: str
    plan_id: str
    csm_agent_id: str | None = None


class Contact(msgspec.Struct, frozen=True):
    """A person at a customer organisation who files and follows tickets."""

    id: str
    organisation_id: str
    name: str
    email: str = ""


class Principal(msgspec.Struct, frozen=True):
    """The authenticated caller: an agent, or a customer contact of one organisation."""

    kind: Literal["agent", "customer"]
    id: str
    organisation_id: str | None = None

    @property
    def actor_kind(self) -> ActorKind:
        return "agent" if self.kind == "agent" else "customer"


class Ticket(msgspec.Struct, frozen=True):
    """A ticket with its cached SLA summary (``next_breach_at``, ``due_at``, ``sla_state``).

    ``due_at`` is the earliest target of a metric not yet fulfilled, including targets
    already missed: it is the agent queue's sort key, so overdue work comes first.
    """

    id: int
    organisation_id: str
    requester_id: str
    assignee_id: str | None
    subject: str
    description: str
    priority: Priority
    status: Status
    skills: tuple[str, ...]
    tags: tuple[str, ...]
    app_id: str | None
    region: str | None
    window_start: datetime | None
    window_end: datetime | None
    policy_id: str
    policy_version: int
    created_at: datetime
    updated_at: datetime
    solved_at: datetime | None
    closed_at: datetime | None
    acknowledged_at: datetime | None
    first_response_at: datetime | None
    sla_state: SlaState
    next_breach_at: datetime | None
    due_at: datetime | None


class Comment(msgspec.Struct, frozen=True):
    """A public or internal comment; ``author_kind`` says human agent, customer or bot."""

    id: int
    ticket_id: int
    author_kind: ActorKind
    author_id: str
    public: bool
    channel: Channel
    body: str
    created_at: datetime


class TicketEvent(msgspec.Struct, frozen=True):
    """One entry of the append-only ticket log (audit trail and SLA engine input)."""

    ticket_id: int
    seq: int
    at: datetime
    kind: EventKind
    actor_kind: ActorKind
    actor_id: str
    data: dict[str, Any]


class NewTicket(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a caller supplies to open a ticket (validated again by the service)."""

    subject: Annotated[str, Meta(min_length=1, max_length=MAX_SUBJECT)]
    description: Annotated[str, Meta(max_length=MAX_TEXT)] = ""
    priority: Priority = "P2"
    requester_id: str | None = None
    assignee_id: str | None = None
    skills: Annotated[tuple[Label, ...], Meta(max_length=MAX_SKILLS)] = ()
    tags: Annotated[tuple[Label, ...], Meta(max_length=MAX_TAGS)] = ()
    app_id: Annotated[str, Meta(max_length=64)] | None = None
    region: Annotated[str, Meta(max_length=64)] | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None


class TicketFilter(msgspec.Struct, frozen=True):
    """Criteria for listing tickets; ``None`` means "any"."""

    status: Status | None = None
    priority: Priority | None = None
    assignee_id: str | None = None
    organisation_id: str | None = None
    tag: str | None = None
    active_only: bool = False
    limit: int = 50
    before_id: int | None = None

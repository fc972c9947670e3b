"""Administration's request and response types (frozen msgspec structs, OpenAPI-ready).

Requests validate shape and size (ids are slugs, names one line); the service checks
everything that needs the database (existence, uniqueness, ownership).  Instants are
aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from relaydesk.desk.tickets.model import OnCallShift

#: Ids of organisations, people, plans and keys: lower-case slugs.
Id = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
#: App ids follow the messaging schema's rule (config.AppSettings).
AppId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Email = Annotated[str, Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Skill = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,63}$")]

Role = Literal["agent", "admin"]
PersonKind = Literal["agent", "customer"]
#: ``admin``: /api/admin and (as the owning agent) /api/desk; ``agent``: /api/desk as
#: that agent; ``customer``: /api/desk as that contact, within its organisation.
Scope = Literal["admin", "agent", "customer"]
LinkPurpose = Literal["invite", "reset"]

#: How long an app's previous secret keeps verifying tokens after a rotation by default.
DEFAULT_OVERLAP_S: Final = 24 * 3600
MAX_OVERLAP_S: Final = 30 * 24 * 3600


class Actor(msgspec.Struct, frozen=True):
    """Who performs an administrative action, and from where (the audit log's columns).

    ``who`` is ``agent:<id>`` for an administrator (API key or console) and
    ``cli:<os user>`` for the command line; ``address`` is the client address or ``local``.
    """

    who: str
    address: str = "local"


class NewOrganisation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Create an organisation on a plan, optionally with a customer success manager."""

    id: Id
    name: Name
    plan_id: Id
    csm_agent_id: Id | None = None


class OrganisationChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Rename, change the plan or the customer success manager (omitted: unchanged)."""

    name: Name | None = None
    plan_id: Id | None = None
    csm_agent_id: Id | None = None


class OrganisationView(msgspec.Struct, frozen=True):
    """An organisation with its apps."""

    id: str
    name: str
    plan_id: str
    csm_agent_id: str | None
    disabled: bool
    apps: list[str]


class NewPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A plan: the SLA policy it applies, pinned to ``policy_version`` or (``None``)
    following the policy's latest version.  New tickets snapshot the version in force."""

    id: Id
    name: Name
    policy_id: Id = "default"
    policy_version: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None


class PlanView(msgspec.Struct, frozen=True):
    """A plan and the policy version a ticket created now would pin."""

    id: str
    name: str
    policy_id: str
    policy_version: int | None
    #: Whether ``policy_version`` is pinned (else it is the latest).
    pinned: bool = False


class NewAgent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Invite a support agent (or an administrator)."""

    id: Id
    name: Name
    email: Email
    role: Role = "agent"
    skills: Annotated[tuple[Skill, ...], Meta(max_length=10)] = ()
    oncall: Annotated[tuple[OnCallShift, ...], Meta(max_length=14)] = ()


class AgentChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Change an agent's name, role, skills or on-call shifts (omitted: unchanged)."""

    name: Name | None = None
    role: Role | None = None
    skills: Annotated[tuple[Skill, ...], Meta(max_length=10)] | None = None
    oncall: Annotated[tuple[OnCallShift, ...], Meta(max_length=14)] | None = None


class NewCustomer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Invite a customer contact of an organisation."""

    id: Id
    organisation_id: Id
    name: Name
    email: Email


class PersonView(msgspec.Struct, frozen=True):
    """An agent or customer contact as administrators see them."""

    kind: PersonKind
    id: str
    name: str
    email: str
    role: str
    organisation_id: str | None
    skills: tuple[str, ...]
    oncall: tuple[OnCallShift, ...]
    disabled: bool
    has_password: bool


class Link(msgspec.Struct, frozen=True):
    """A one-time invite or password-reset link (shown once; only its hash is stored)."""

    purpose: LinkPurpose
    kind: PersonKind
    person_id: str
    url: str
    expires_at: datetime


class Invitation(msgspec.Struct, frozen=True):
    """A new person and their invite link."""

    person: PersonView
    link: Link


class NewKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An API key for an agent (``admin``/``agent`` scope) or a contact (``customer``)."""

    name: Name
    scope: Scope
    owner_id: Id


class KeyView(msgspec.Struct, frozen=True):
    """A key's record; the key itself is never shown again."""

    id: str
    name: str
    scope: Scope
    owner_kind: PersonKind
    owner_id: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None


class IssuedKey(msgspec.Struct, frozen=True):
    """A key just created: ``key`` is shown this once."""

    key: str
    record: KeyView


class NewApp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Create a messaging app, optionally attached to an organisation at once."""

    id: AppId
    organisation_id: Id | None = None
    # End-to-end encryption, chosen once at creation (docs/compliance.md).
    compliance: Literal["plaintext", "e2ee", "e2ee_legal_hold"] = "plaintext"


class AppView(msgspec.Struct, frozen=True):
    """An app's administrative state (never its secret)."""

    id: str
    organisation_id: str | None
    disabled: bool
    created_at: datetime
    previous_secret_until: datetime | None
    compliance: str = "plaintext"


class AppSecret(msgspec.Struct, frozen=True):
    """An app with its secret, shown once at creation and at rotation."""

    app: AppView
    secret: str


class Rotation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Rotate an app secret; the old one verifies tokens for ``overlap_s`` more seconds."""

    overlap_s: Annotated[int, Meta(ge=0, le=MAX_OVERLAP_S)] = DEFAULT_OVERLAP_S


class AttachApp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Attach an app to an organisation (an app belongs to at most one)."""

    app_id: AppId


class AuditEntry(msgspec.Struct, frozen=True):
    """One administrative action: who, what, on what, when, from where."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    address: str


class AuditPage(msgspec.Struct, frozen=True):
    """A page of the audit log, newest first; pass ``next_before`` as ``before``."""

    entries: list[AuditEntry]
    next_before: int | None


class KeyOwner(msgspec.Struct, frozen=True):
    """What an API key authenticates: the key's id, scope and owner."""

    key_id: str
    scope: Scope
    kind: PersonKind
    person_id: str
    organisation_id: str | None

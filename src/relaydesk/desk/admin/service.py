"""Administration: one service behind the REST API, the CLI and the console pages.

Theory of operation
-------------------
Every operation is a method ``op(tx, actor, ...)`` that runs inside one write
transaction handed in by the caller (``await admin.write(...)`` from the web,
``admin.write_sync(...)`` from the CLI).  It checks everything first, writes, and
appends one audit entry in the same transaction, so a refused operation leaves no
trace and a performed one is never missing from the log.  Errors are
:class:`~relaydesk.desk.tickets.errors.DeskError` with an
:class:`~relaydesk.desk.admin.errors.AdminErrorCode`.

Secrets (API keys, link tokens) are 256-bit random strings shown once; only their
SHA-256 is stored.  Passwords are hashed with scrypt (``desk/accounts.py``) *before*
the transaction, on a worker thread, so neither the event loop nor the single writer
thread waits on it.

App secrets live in the messaging schema's ``apps`` table; after a transaction that
changed one (create, disable, rotate), ``on_apps_changed`` receives the map of secrets
that verify tokens now (current, plus the previous one during a rotation's overlap), so
the hub uses them at once.  Other nodes of a cluster pick the change up on their next
refresh (``admin.apps_refresh_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import msgspec

from relaydesk.aio import wait_event
from relaydesk.clock import Clock, millis
from relaydesk.desk.accounts import Accounts, normalise_email, password_problem
from relaydesk.desk.admin.errors import AdminErrorCode as E
from relaydesk.desk.admin.errors import refuse
from relaydesk.desk.admin.model import (
    Actor,
    AgentChange,
    AppSecret,
    AppView,
    AuditEntry,
    AuditPage,
    Invitation,
    IssuedKey,
    KeyOwner,
    KeyView,
    Link,
    LinkPurpose,
    NewAgent,
    NewApp,
    NewCustomer,
    NewKey,
    NewOrganisation,
    NewPlan,
    OrganisationChange,
    OrganisationView,
    PersonKind,
    PersonView,
    PlanView,
    Rotation,
    Scope,
)
from relaydesk.desk.admin.webhooks import (
    DeliveryView,
    EndpointSecret,
    EndpointView,
    NewEndpoint,
    Webhooks,
)
from relaydesk.desk.tickets.model import Agent, Contact, Organisation, Plan, Principal
from relaydesk.desk.tickets.service import TicketService, hash_api_key
from relaydesk.storage.admin import AdminStore, AppRow, KeyRow, admin_migrations
from relaydesk.storage.desk import DeskStore, from_ms
from relaydesk.storage.engine import Database, Tx
from relaydesk.storage.keys import key_migrations, set_mode_tx

log = logging.getLogger("relaydesk.desk.admin")

T = TypeVar("T")

#: A key's last-use time is written at most this often (a write per request would
#: put every API call on the single writer).
TOUCH_EVERY_MS: Final = 60_000
_KEY_PREFIX: Final = "rdk_"
_DEMO_SEED: Final = "demo_key_seed"

#: Secrets that verify tokens of each enabled app right now (current first).
AppSecrets = Mapping[str, tuple[str, ...]]


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _person_target(kind: str, person_id: str) -> str:
    return f"{kind}:{person_id}"


class AdminService:
    """Organisations, people, keys, apps, links and the audit log (module docstring)."""

    def __init__(
        self,
        db: Database,
        desk_store: DeskStore,
        tickets: TicketService,
        accounts: Accounts,
        clock: Clock,
        *,
        public_url: str,
        invite_ttl_s: int = 7 * 86_400,
        reset_ttl_s: int = 3_600,
    ) -> None:
        self._db = db
        self._desk = desk_store
        self._tickets = tickets
        self._accounts = accounts
        self._clock = clock
        self._public_url = public_url.rstrip("/")
        self._invite_ttl_ms = invite_ttl_s * 1000
        self._reset_ttl_ms = reset_ttl_s * 1000
        self.store = AdminStore()
        db.migrate("admin", admin_migrations(db.dialect))
        db.migrate("e2ee_keys", key_migrations())  # apps' compliance modes (storage/keys.py)
        self.on_apps_changed: Callable[[AppSecrets], Awaitable[None] | None] | None = None
        self._apps_changes = 0
        self._next_expiry_ms: int | None = None
        self._wake = asyncio.Event()  # set after a change: the refresher re-plans its wait
        self._refresher: asyncio.Task[None] | None = None
        self.webhooks = Webhooks(db, self.store, clock)
        db.read_sync(self.webhooks.refresh_wanted)

    @property
    def tickets_store(self) -> DeskStore:
        """The desk store (contacts, agents) administration reads through."""
        return self._desk

    # -- running operations -------------------------------------------------------------------

    def now_ms(self) -> int:
        """The injected clock in epoch milliseconds."""
        return millis(self._clock)

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a read snapshot."""
        return await self._db.read(fn)

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run one operation in a write transaction; refresh app secrets if it changed one."""
        # A counter, not a flag: concurrent operations may each publish once more than
        # needed, but none misses its own change.
        before = self._apps_changes
        result = await self._db.write(fn)
        if self._apps_changes != before:
            await self.publish_app_secrets()
            self._wake.set()
        return result

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Blocking :meth:`write` for the command line (no hub to tell in that process)."""
        return self._db.write_sync(fn)

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        """Blocking :meth:`read` for the command line."""
        return self._db.read_sync(fn)

    async def publish_app_secrets(self) -> None:
        """Hand the secrets in force to ``on_apps_changed`` (start-up and refreshes)."""
        now = self.now_ms()
        found = await self._db.read(lambda tx: self._refresh_tx(tx, now))
        if self.on_apps_changed is None:
            return
        result = self.on_apps_changed(found)
        if result is not None:
            await result

    def _refresh_tx(self, tx: Tx, now: int) -> dict[str, tuple[str, ...]]:
        self.webhooks.refresh_wanted(tx)
        return self.app_secrets(tx, now)

    async def start(self, refresh_s: float) -> None:
        """Publish the app secrets now and every ``refresh_s`` seconds (changes made on
        another node or by the CLI reach this node's hub within that time)."""
        await self.publish_app_secrets()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh(refresh_s), name="admin-apps")

    async def _refresh(self, every_s: float) -> None:
        while True:
            # Also wake when a rotation's overlap ends, so the old secret stops on time.
            wait = every_s
            if self._next_expiry_ms is not None:
                wait = min(wait, max(0.05, (self._next_expiry_ms - self.now_ms()) / 1000))
            await wait_event(self._wake, wait)
            self._wake.clear()
            try:
                await self.publish_app_secrets()
            except Exception:  # a failed read must not stop later refreshes
                log.exception("refreshing app secrets failed")

    async def aclose(self) -> None:
        """Stop the refresher."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _audit(self, tx: Tx, actor: Actor, action: str, target: str, **detail: Any) -> None:
        self.store.audit(tx, self.now_ms(), actor.who, action, target, detail, actor.address)

    async def record(self, actor: Actor, action: str, target: str, **detail: Any) -> None:
        """Write an administrative action taken elsewhere (a node drain) to the audit log."""
        await self.write(lambda tx: self._audit(tx, actor, action, target, **detail))

    # -- bootstrap ----------------------------------------------------------------------------

    def has_admin(self, tx: Tx) -> bool:
        """Whether an enabled administrator exists."""
        return self.store.admin_count(tx) > 0

    def initialise(self, tx: Tx, actor: Actor, new: NewAgent) -> Invitation:
        """Create the first administrator with a one-time sign-in link (refused once one
        exists, so running it again changes nothing)."""
        if self.has_admin(tx):
            raise refuse(E.ALREADY_INITIALISED, "an administrator exists; use an invite instead")
        admin = NewAgent(
            id=new.id,
            name=new.name,
            email=new.email,
            role="admin",
            skills=new.skills,
            oncall=new.oncall,
        )
        return self.invite_agent(tx, actor, admin, action="admin.initialised")

    # -- organisations and plans --------------------------------------------------------------

    def _org_view(self, tx: Tx, org: Organisation, disabled: set[str]) -> OrganisationView:
        return OrganisationView(
            id=org.id,
            name=org.name,
            plan_id=org.plan_id,
            csm_agent_id=org.csm_agent_id,
            disabled=org.id in disabled,
            apps=self.store.org_apps(tx, org.id),
        )

    def organisations(self, tx: Tx) -> list[OrganisationView]:
        """Every organisation with its apps, by id."""
        disabled = self.store.disabled_orgs(tx)
        return [self._org_view(tx, o, disabled) for o in self._desk.organisations(tx)]

    def organisation(self, tx: Tx, org_id: str) -> OrganisationView:
        """One organisation (``admin.unknown_organisation``)."""
        org = self._desk.organisation(tx, org_id)
        if org is None:
            raise refuse(E.UNKNOWN_ORGANISATION, f"no organisation {org_id!r}")
        return self._org_view(tx, org, self.store.disabled_orgs(tx))

    def _check_plan(self, tx: Tx, plan_id: str) -> None:
        if self._desk.plan(tx, plan_id) is None:
            raise refuse(E.UNKNOWN_PLAN, f"no plan {plan_id!r}")

    def _check_csm(self, tx: Tx, agent_id: str | None) -> None:
        if agent_id is None:
            return
        agent = self._desk.agent(tx, agent_id)
        if agent is None or not agent.active:
            raise refuse(E.UNKNOWN_PERSON, f"no active agent {agent_id!r}")

    def create_organisation(self, tx: Tx, actor: Actor, new: NewOrganisation) -> OrganisationView:
        """Create an organisation (``admin.organisation_exists``, ``admin.unknown_plan``)."""
        if self._desk.organisation(tx, new.id) is not None:
            raise refuse(E.ORGANISATION_EXISTS, f"organisation {new.id!r} exists")
        self._check_plan(tx, new.plan_id)
        self._check_csm(tx, new.csm_agent_id)
        org = Organisation(
            id=new.id, name=new.name, plan_id=new.plan_id, csm_agent_id=new.csm_agent_id
        )
        self._desk.put_organisation(tx, org)
        self._audit(tx, actor, "organisation.created", new.id, name=new.name, plan=new.plan_id)
        return self.organisation(tx, new.id)

    def _live_org(self, tx: Tx, org_id: str) -> Organisation:
        org = self._desk.organisation(tx, org_id)
        if org is None:
            raise refuse(E.UNKNOWN_ORGANISATION, f"no organisation {org_id!r}")
        if self.store.org_disabled(tx, org_id):
            raise refuse(E.ORGANISATION_DISABLED, f"organisation {org_id!r} is disabled")
        return org

    def change_organisation(
        self, tx: Tx, actor: Actor, org_id: str, change: OrganisationChange
    ) -> OrganisationView:
        """Rename, change plan or customer success manager."""
        org = self._live_org(tx, org_id)
        if change.plan_id is not None:
            self._check_plan(tx, change.plan_id)
        self._check_csm(tx, change.csm_agent_id)
        updated = Organisation(
            id=org.id,
            name=change.name or org.name,
            plan_id=change.plan_id or org.plan_id,
            csm_agent_id=change.csm_agent_id or org.csm_agent_id,
        )
        self._desk.put_organisation(tx, updated)
        fields = {k: v for k, v in _changed(change).items() if v is not None}
        self._audit(tx, actor, "organisation.changed", org_id, **fields)
        return self.organisation(tx, org_id)

    def set_organisation_disabled(
        self, tx: Tx, actor: Actor, org_id: str, disabled: bool
    ) -> OrganisationView:
        """Disable (its customers can no longer sign in or use keys) or enable."""
        if self._desk.organisation(tx, org_id) is None:
            raise refuse(E.UNKNOWN_ORGANISATION, f"no organisation {org_id!r}")
        now = self.now_ms()
        self.store.set_org_disabled(tx, org_id, now if disabled else None)
        if disabled:
            for contact_id, contact_org, _, _ in self.store.contacts(tx):
                if contact_org == org_id:
                    self.store.revoke_sessions_of(tx, ("customer", contact_id), now)
        self._audit(
            tx, actor, "organisation.disabled" if disabled else "organisation.enabled", org_id
        )
        return self.organisation(tx, org_id)

    def attach_app(self, tx: Tx, actor: Actor, org_id: str, app_id: str) -> OrganisationView:
        """Attach an app (``admin.app_attached_elsewhere`` if another organisation has it)."""
        self._live_org(tx, org_id)
        app = self.store.app(tx, app_id)
        if app is None:
            raise refuse(E.UNKNOWN_APP, f"no app {app_id!r}")
        if app.organisation_id is not None and app.organisation_id != org_id:
            raise refuse(
                E.APP_ATTACHED_ELSEWHERE,
                f"app {app_id!r} belongs to another organisation; detach it there first",
            )
        self.store.set_app_owner(tx, app_id, org_id, self.now_ms())
        self._audit(tx, actor, "organisation.app_attached", org_id, app=app_id)
        return self.organisation(tx, org_id)

    def detach_app(self, tx: Tx, actor: Actor, org_id: str, app_id: str) -> OrganisationView:
        """Detach an app from its organisation."""
        if self._desk.organisation(tx, org_id) is None:
            raise refuse(E.UNKNOWN_ORGANISATION, f"no organisation {org_id!r}")
        if self.store.app_owner(tx, app_id) != org_id:
            raise refuse(E.UNKNOWN_APP, f"app {app_id!r} is not attached to {org_id!r}")
        self.store.set_app_owner(tx, app_id, None, self.now_ms())
        self._audit(tx, actor, "organisation.app_detached", org_id, app=app_id)
        return self.organisation(tx, org_id)

    def _plan_view(self, tx: Tx, plan: Plan) -> PlanView:
        pinned = self.store.plan_version(tx, plan.id)
        return PlanView(
            id=plan.id,
            name=plan.name,
            policy_id=plan.policy_id,
            policy_version=pinned or self._desk.latest_policy_version(tx, plan.policy_id),
            pinned=pinned is not None,
        )

    def plans(self, tx: Tx) -> list[PlanView]:
        """Every plan with the policy version new tickets would pin."""
        out = []
        for (plan_id,) in tx.query("SELECT id FROM desk_plans ORDER BY id"):
            plan = self._desk.plan(tx, str(plan_id))
            assert plan is not None
            out.append(self._plan_view(tx, plan))
        return out

    def plan_version(self, tx: Tx, plan_id: str) -> int | None:
        """The policy version a plan pins, if any (the ticket service asks)."""
        return self.store.plan_version(tx, plan_id)

    def put_plan(self, tx: Tx, actor: Actor, new: NewPlan) -> PlanView:
        """Create or change a plan (``admin.unknown_policy`` for an unknown policy or
        version)."""
        if self._desk.latest_policy_version(tx, new.policy_id) is None:
            raise refuse(E.UNKNOWN_POLICY, f"no SLA policy {new.policy_id!r}")
        if (
            new.policy_version is not None
            and self._desk.policy(tx, new.policy_id, new.policy_version) is None
        ):
            raise refuse(
                E.UNKNOWN_POLICY,
                f"SLA policy {new.policy_id!r} has no version {new.policy_version}",
            )
        plan = Plan(id=new.id, name=new.name, policy_id=new.policy_id)
        self._desk.put_plan(tx, plan)
        self.store.set_plan_version(tx, new.id, new.policy_version)
        self._audit(
            tx,
            actor,
            "plan.saved",
            new.id,
            name=new.name,
            policy=new.policy_id,
            version=new.policy_version,
        )
        return self._plan_view(tx, plan)

    # -- people -------------------------------------------------------------------------------

    def _agent_view(
        self, agent: Agent, recorded: tuple[str, int | None] | None, logins: dict[str, str]
    ) -> PersonView:
        role, disabled_at = recorded or ("agent", None)
        return PersonView(
            kind="agent",
            id=agent.id,
            name=agent.name,
            email=agent.email or logins.get(agent.id, ""),
            role=role,
            organisation_id=None,
            skills=agent.skills,
            oncall=agent.oncall,
            disabled=disabled_at is not None or not agent.active,
            has_password=agent.id in logins,
        )

    def _customer_view(
        self,
        contact: Contact,
        recorded: tuple[str, int | None] | None,
        logins: dict[str, str],
        org_disabled: bool,
    ) -> PersonView:
        _, disabled_at = recorded or ("customer", None)
        return PersonView(
            kind="customer",
            id=contact.id,
            name=contact.name,
            email=contact.email or logins.get(contact.id, ""),
            role="customer",
            organisation_id=contact.organisation_id,
            skills=(),
            oncall=(),
            disabled=disabled_at is not None or org_disabled,
            has_password=contact.id in logins,
        )

    def people(self, tx: Tx) -> list[PersonView]:
        """Every agent and customer contact (agents first, by id); a fixed number of
        queries whatever the number of people."""
        recorded = self.store.people(tx)
        disabled_orgs = self.store.disabled_orgs(tx)
        agent_logins = self.store.logins(tx, "agent")
        customer_logins = self.store.logins(tx, "customer")
        out = [
            self._agent_view(a, recorded.get(("agent", a.id)), agent_logins)
            for a in self._desk.agents(tx, active_only=False)
        ]
        for cid, org_id, name, email in self.store.contacts(tx):
            contact = Contact(id=cid, organisation_id=org_id, name=name, email=email)
            out.append(
                self._customer_view(
                    contact,
                    recorded.get(("customer", cid)),
                    customer_logins,
                    org_id in disabled_orgs,
                )
            )
        return out

    def person(self, tx: Tx, kind: str, person_id: str) -> PersonView:
        """One person (``admin.unknown_person``)."""
        recorded = self.store.person(tx, kind, person_id)
        email = self.store.login_email(tx, kind, person_id)
        logins = {} if email is None else {person_id: email}
        if kind == "agent":
            agent = self._desk.agent(tx, person_id)
            if agent is not None:
                return self._agent_view(agent, recorded, logins)
        elif kind == "customer":
            contact = self._desk.contact(tx, person_id)
            if contact is not None:
                disabled = self.store.org_disabled(tx, contact.organisation_id)
                return self._customer_view(contact, recorded, logins, disabled)
        raise refuse(E.UNKNOWN_PERSON, f"no {kind} {person_id!r}")

    def role(self, tx: Tx, kind: str, person_id: str) -> str | None:
        """An agent's role (``agent``/``admin``), or ``None``."""
        found = self.store.person(tx, kind, person_id)
        return None if found is None else found[0]

    def _check_email(self, tx: Tx, email: str) -> str:
        address = normalise_email(email)
        owner = self.store.email_owner(tx, address)
        if owner is not None:
            raise refuse(E.DUPLICATE_EMAIL, f"{address} is already used by {owner[0]} {owner[1]!r}")
        return address

    def invite_agent(
        self, tx: Tx, actor: Actor, new: NewAgent, *, action: str = "agent.invited"
    ) -> Invitation:
        """Create an agent (or administrator) and a one-time invite link."""
        if self._desk.agent(tx, new.id) is not None:
            raise refuse(E.PERSON_EXISTS, f"agent {new.id!r} exists")
        email = self._check_email(tx, new.email)
        self._tickets.put_agent_tx(
            tx,
            Agent(id=new.id, name=new.name, email=email, skills=new.skills, oncall=new.oncall),
        )
        self.store.put_person(tx, "agent", new.id, new.role)
        link = self._link(tx, actor, "invite", "agent", new.id, self._invite_ttl_ms)
        self._audit(tx, actor, action, _person_target("agent", new.id), role=new.role, email=email)
        return Invitation(person=self.person(tx, "agent", new.id), link=link)

    def invite_customer(self, tx: Tx, actor: Actor, new: NewCustomer) -> Invitation:
        """Create a customer contact of an organisation and a one-time invite link."""
        self._live_org(tx, new.organisation_id)
        if self._desk.contact(tx, new.id) is not None:
            raise refuse(E.PERSON_EXISTS, f"customer {new.id!r} exists")
        email = self._check_email(tx, new.email)
        self._desk.put_contact(
            tx, Contact(id=new.id, organisation_id=new.organisation_id, name=new.name, email=email)
        )
        self.store.put_person(tx, "customer", new.id, "customer")
        link = self._link(tx, actor, "invite", "customer", new.id, self._invite_ttl_ms)
        self._audit(
            tx,
            actor,
            "customer.invited",
            _person_target("customer", new.id),
            organisation=new.organisation_id,
            email=email,
        )
        return Invitation(person=self.person(tx, "customer", new.id), link=link)

    def change_agent(self, tx: Tx, actor: Actor, agent_id: str, change: AgentChange) -> PersonView:
        """Change an agent's name, role, skills or on-call shifts."""
        agent = self._desk.agent(tx, agent_id)
        if agent is None:
            raise refuse(E.UNKNOWN_PERSON, f"no agent {agent_id!r}")
        current_role = self.role(tx, "agent", agent_id) or "agent"
        if change.role == "agent" and current_role == "admin" and self.store.admin_count(tx) <= 1:
            raise refuse(E.LAST_ADMIN, "the last administrator cannot lose the role")
        self._desk.put_agent(
            tx,
            Agent(
                id=agent.id,
                name=change.name or agent.name,
                email=agent.email,
                skills=agent.skills if change.skills is None else change.skills,
                oncall=agent.oncall if change.oncall is None else change.oncall,
                active=agent.active,
            ),
        )
        if change.role is not None:
            self.store.put_person(tx, "agent", agent_id, change.role)
        fields = {k: v for k, v in _changed(change).items() if v is not None}
        self._audit(tx, actor, "agent.changed", _person_target("agent", agent_id), **fields)
        return self.person(tx, "agent", agent_id)

    def set_person_disabled(
        self, tx: Tx, actor: Actor, kind: PersonKind, person_id: str, disabled: bool
    ) -> PersonView:
        """Disable a person (sessions end, keys and links stop working) or enable them."""
        now = self.now_ms()
        if kind == "agent":
            agent = self._desk.agent(tx, person_id)
            if agent is None:
                raise refuse(E.UNKNOWN_PERSON, f"no agent {person_id!r}")
            role = self.role(tx, "agent", person_id) or "agent"
            if disabled and role == "admin" and self.store.admin_count(tx) <= 1:
                raise refuse(E.LAST_ADMIN, "the last administrator cannot be disabled")
            self._desk.put_agent(
                tx,
                Agent(
                    id=agent.id,
                    name=agent.name,
                    email=agent.email,
                    skills=agent.skills,
                    oncall=agent.oncall,
                    active=not disabled,
                ),
            )
        else:
            role = "customer"
            if self._desk.contact(tx, person_id) is None:
                raise refuse(E.UNKNOWN_PERSON, f"no customer {person_id!r}")
        self.store.set_person_disabled(tx, kind, person_id, now if disabled else None, role)
        if disabled:
            self.store.revoke_sessions_of(tx, (kind, person_id), now)
            self.store.expire_links(tx, (kind, person_id), now)
        action = f"{kind}.{'disabled' if disabled else 'enabled'}"
        self._audit(tx, actor, action, _person_target(kind, person_id))
        return self.person(tx, kind, person_id)

    # -- one-time links -----------------------------------------------------------------------

    def _link(
        self,
        tx: Tx,
        actor: Actor,
        purpose: LinkPurpose,
        kind: PersonKind,
        person_id: str,
        ttl_ms: int,
    ) -> Link:
        token = secrets.token_urlsafe(32)
        now = self.now_ms()
        self.store.expire_links(tx, (kind, person_id), now)
        self.store.insert_link(
            tx, _sha(token), purpose, (kind, person_id), now, now + ttl_ms, actor.who
        )
        return Link(
            purpose=purpose,
            kind=kind,
            person_id=person_id,
            url=f"{self._public_url}/console/welcome?token={token}",
            expires_at=from_ms(now + ttl_ms),
        )

    def reset_link(self, tx: Tx, actor: Actor, kind: PersonKind, person_id: str) -> Link:
        """A one-time password-reset link (earlier unused links of the person stop working)."""
        person = self.person(tx, kind, person_id)
        if person.disabled:
            raise refuse(E.PERSON_DISABLED, f"{kind} {person_id!r} is disabled")
        purpose: LinkPurpose = "reset" if person.has_password else "invite"
        ttl = self._reset_ttl_ms if purpose == "reset" else self._invite_ttl_ms
        link = self._link(tx, actor, purpose, kind, person_id, ttl)
        self._audit(tx, actor, f"{kind}.{purpose}_link", _person_target(kind, person_id))
        return link

    def check_link(self, tx: Tx, token: str) -> PersonView:
        """The person a usable link belongs to (``admin.link_invalid|expired|used``)."""
        row = self.store.link(tx, _sha(token))
        if row is None:
            raise refuse(E.LINK_INVALID, "this link is not valid")
        if row.used_at is not None:
            raise refuse(E.LINK_USED, "this link was already used; ask for a new one")
        if row.expires_at <= self.now_ms():
            raise refuse(E.LINK_EXPIRED, "this link has expired; ask for a new one")
        person = self.person(tx, row.owner_kind, row.owner_id)
        if person.disabled:
            raise refuse(E.PERSON_DISABLED, "this account is disabled")
        return person

    def use_link(self, tx: Tx, token: str, password_hash: str, address: str) -> Principal:
        """Set the password of the link's person and spend the link (one transaction);
        every existing session of theirs ends.  The password is hashed by the caller."""
        person = self.check_link(tx, token)
        now = self.now_ms()
        if not self.store.use_link(tx, _sha(token), now):
            raise refuse(E.LINK_USED, "this link was already used; ask for a new one")
        principal = Principal(
            kind=person.kind, id=person.id, organisation_id=person.organisation_id
        )
        email = person.email or self.store.login_email(tx, person.kind, person.id) or ""
        self._accounts.put_hash_tx(tx, principal, email, password_hash, from_ms(now))
        self.store.revoke_sessions_of(tx, (person.kind, person.id), now)
        actor = Actor(who=_person_target(person.kind, person.id), address=address)
        self._audit(
            tx, actor, f"{person.kind}.password_set", _person_target(person.kind, person.id)
        )
        return principal

    async def accept_link(self, token: str, password: str, address: str) -> Principal:
        """Check the link and the password, hash it off the loop, then :meth:`use_link`."""
        person = await self._db.read(lambda tx: self.check_link(tx, token))
        problem = password_problem(password, person.email)
        if problem is not None:
            raise refuse(E.WEAK_PASSWORD, problem)
        hashed = await self._accounts.hasher.hash(password)
        return await self.write(lambda tx: self.use_link(tx, token, hashed, address))

    # -- API keys -----------------------------------------------------------------------------

    def _key_view(self, row: KeyRow) -> KeyView:
        return KeyView(
            id=row.id,
            name=row.name,
            scope=row.scope,  # type: ignore[arg-type]
            owner_kind=row.owner_kind,  # type: ignore[arg-type]
            owner_id=row.owner_id,
            created_at=from_ms(row.created_at),
            created_by=row.created_by,
            last_used_at=None if row.last_used_at is None else from_ms(row.last_used_at),
            revoked_at=None if row.revoked_at is None else from_ms(row.revoked_at),
        )

    def keys(self, tx: Tx) -> list[KeyView]:
        """Every key, newest first (never the keys themselves)."""
        return [self._key_view(r) for r in self.store.keys(tx)]

    def issue_key(
        self,
        tx: Tx,
        actor: Actor,
        new: NewKey,
        *,
        key: str | None = None,
        key_id: str | None = None,
    ) -> IssuedKey:
        """Create a key; ``key`` is returned this once.  ``admin``/``agent`` keys belong to
        an agent (``admin`` needs the admin role), ``customer`` keys to a contact."""
        kind: PersonKind = "customer" if new.scope == "customer" else "agent"
        person = self.person(tx, kind, new.owner_id)
        if person.disabled:
            raise refuse(E.PERSON_DISABLED, f"{kind} {new.owner_id!r} is disabled")
        if new.scope == "admin" and person.role != "admin":
            raise refuse(E.NOT_ADMIN, f"agent {new.owner_id!r} is not an administrator")
        secret = key or _KEY_PREFIX + secrets.token_urlsafe(32)
        row = KeyRow(
            id=key_id or "k" + secrets.token_hex(6),
            name=new.name,
            scope=new.scope,
            owner_kind=kind,
            owner_id=new.owner_id,
            created_at=self.now_ms(),
            created_by=actor.who,
            last_used_at=None,
            revoked_at=None,
        )
        self.store.insert_key(tx, row, hash_api_key(secret))
        self._audit(
            tx, actor, "key.issued", row.id, name=new.name, scope=new.scope, owner=new.owner_id
        )
        return IssuedKey(key=secret, record=self._key_view(row))

    def revoke_key(self, tx: Tx, actor: Actor, key_id: str) -> KeyView:
        """Revoke a key; it stops working with the next request."""
        row = self.store.key(tx, key_id)
        if row is None:
            raise refuse(E.UNKNOWN_KEY, f"no key {key_id!r}")
        if not self.store.revoke_key(tx, key_id, self.now_ms()):
            raise refuse(E.KEY_REVOKED, f"key {key_id!r} is already revoked")
        self._audit(tx, actor, "key.revoked", key_id, name=row.name)
        found = self.store.key(tx, key_id)
        assert found is not None
        return self._key_view(found)

    def key_owner(self, tx: Tx, key: str) -> tuple[KeyOwner | None, KeyRow | None]:
        """What ``key`` authenticates now (``None`` when unknown, revoked or its owner is
        disabled) and its stored row (``None`` for an unknown key)."""
        digest = hash_api_key(key)
        row = self.store.key_by_hash(tx, digest)
        if row is None:
            legacy = self._desk.principal_for_key(tx, digest)
            if legacy is None or not self._principal_enabled(tx, legacy):
                return None, None
            scope: Scope = "agent" if legacy.kind == "agent" else "customer"
            return (
                KeyOwner(
                    key_id="legacy",
                    scope=scope,
                    kind=legacy.kind,
                    person_id=legacy.id,
                    organisation_id=legacy.organisation_id,
                ),
                None,
            )
        if row.revoked_at is not None:
            return None, row
        kind: PersonKind = "agent" if row.owner_kind == "agent" else "customer"
        org_id = None
        if kind == "customer":
            contact = self._desk.contact(tx, row.owner_id)
            if contact is None:
                return None, row
            org_id = contact.organisation_id
        principal = Principal(kind=kind, id=row.owner_id, organisation_id=org_id)
        if not self._principal_enabled(tx, principal):
            return None, row
        if row.scope == "admin" and self.role(tx, "agent", row.owner_id) != "admin":
            return None, row
        owner = KeyOwner(
            key_id=row.id,
            scope=row.scope,  # type: ignore[arg-type]
            kind=kind,
            person_id=row.owner_id,
            organisation_id=org_id,
        )
        return owner, row

    def _principal_enabled(self, tx: Tx, principal: Principal) -> bool:
        found = self.store.person(tx, principal.kind, principal.id)
        if found is not None and found[1] is not None:
            return False
        if principal.kind == "agent":
            agent = self._desk.agent(tx, principal.id)
            return agent is not None and agent.active
        org = principal.organisation_id
        return org is not None and not self.store.org_disabled(tx, org)

    def principal_enabled(self, tx: Tx, principal: Principal) -> bool:
        """Whether ``principal`` may act now (not disabled, organisation not disabled)."""
        return self._principal_enabled(tx, principal)

    async def authenticate_key(self, key: str) -> tuple[KeyOwner | None, bool]:
        """``(owner, revoked)`` for a presented key; records its use (at most once a minute)."""
        owner, row = await self._db.read(lambda tx: self.key_owner(tx, key))
        if owner is not None and row is not None:
            now = self.now_ms()
            if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY_MS:
                await self._db.write(lambda tx: self.store.touch_key(tx, row.id, now))
        revoked = owner is None and row is not None and row.revoked_at is not None
        return owner, revoked

    async def authenticate(self, key: str) -> Principal | None:
        """The desk principal of ``key`` (the desk API's, knowledge's and diagnosis's)."""
        owner, _ = await self.authenticate_key(key)
        if owner is None:
            return None
        return Principal(kind=owner.kind, id=owner.person_id, organisation_id=owner.organisation_id)

    # -- apps ---------------------------------------------------------------------------------

    def _app_view(self, row: AppRow) -> AppView:
        now = self.now_ms()
        until = row.previous_until if row.previous_until and row.previous_until > now else None
        return AppView(
            id=row.id,
            organisation_id=row.organisation_id,
            disabled=row.disabled_at is not None,
            created_at=from_ms(row.created_ms),
            previous_secret_until=None if until is None else from_ms(until),
            compliance=row.compliance,
        )

    def apps(self, tx: Tx) -> list[AppView]:
        """Every messaging app with its organisation and state."""
        return [self._app_view(r) for r in self.store.apps(tx)]

    def _app(self, tx: Tx, app_id: str) -> AppRow:
        row = self.store.app(tx, app_id)
        if row is None:
            raise refuse(E.UNKNOWN_APP, f"no app {app_id!r}")
        return row

    def create_app(self, tx: Tx, actor: Actor, new: NewApp) -> AppSecret:
        """Create an app with a fresh secret (shown once), optionally attached."""
        secret = secrets.token_urlsafe(32)
        if new.organisation_id is not None:
            self._live_org(tx, new.organisation_id)
        if not self.store.insert_app(tx, new.id, secret, self.now_ms()):
            raise refuse(E.APP_EXISTS, f"app {new.id!r} exists")
        if new.organisation_id is not None:
            self.store.set_app_owner(tx, new.id, new.organisation_id, self.now_ms())
        set_mode_tx(tx, new.id, new.compliance, self.now_ms())
        self._apps_changes += 1
        self._audit(
            tx,
            actor,
            "app.created",
            new.id,
            organisation=new.organisation_id,
            compliance=new.compliance,
        )
        return AppSecret(app=self._app_view(self._app(tx, new.id)), secret=secret)

    def set_app_disabled(self, tx: Tx, actor: Actor, app_id: str, disabled: bool) -> AppView:
        """Disable an app (its tokens and secret stop working at once) or enable it."""
        self._app(tx, app_id)
        now = self.now_ms()
        self.store.set_app_disabled(tx, app_id, now if disabled else None, now)
        self._apps_changes += 1
        self._audit(tx, actor, "app.disabled" if disabled else "app.enabled", app_id)
        return self._app_view(self._app(tx, app_id))

    def rotate_app_secret(self, tx: Tx, actor: Actor, app_id: str, rotation: Rotation) -> AppSecret:
        """A new secret; the old one keeps verifying tokens for ``overlap_s`` seconds."""
        row = self._app(tx, app_id)
        if row.disabled_at is not None:
            raise refuse(E.APP_DISABLED, f"app {app_id!r} is disabled")
        secret = secrets.token_urlsafe(32)
        now = self.now_ms()
        self.store.rotate_app_secret(
            tx, app_id, secret, row.secret, now + rotation.overlap_s * 1000, now
        )
        self._apps_changes += 1
        self._audit(tx, actor, "app.secret_rotated", app_id, overlap_s=rotation.overlap_s)
        return AppSecret(app=self._app_view(self._app(tx, app_id)), secret=secret)

    def app_secrets(self, tx: Tx, now_ms: int) -> dict[str, tuple[str, ...]]:
        """Secrets verifying tokens at ``now_ms`` per enabled app (current first)."""
        out: dict[str, tuple[str, ...]] = {}
        expiries = []
        for row in self.store.apps(tx):
            if row.disabled_at is not None:
                continue
            keys = [row.secret]
            if row.previous_secret and row.previous_until and row.previous_until > now_ms:
                keys.append(row.previous_secret)
                expiries.append(row.previous_until)
            out[row.id] = tuple(keys)
        self._next_expiry_ms = min(expiries, default=None)
        return out

    def app_owner(self, tx: Tx, app_id: str) -> str | None:
        """The organisation an app belongs to (tenancy checks)."""
        return self.store.app_owner(tx, app_id)

    # -- webhooks -----------------------------------------------------------------------------

    def create_webhook(self, tx: Tx, actor: Actor, new: NewEndpoint) -> EndpointSecret:
        """Register a signed-webhook endpoint (its secret is returned this once)."""
        return self.webhooks.create(tx, actor, new, self._audit)

    def list_webhooks(self, tx: Tx) -> list[EndpointView]:
        """Every endpoint."""
        return self.webhooks.endpoints(tx)

    def set_webhook_disabled(
        self, tx: Tx, actor: Actor, endpoint_id: str, disabled: bool
    ) -> EndpointView:
        """Disable or enable an endpoint."""
        return self.webhooks.set_disabled(tx, actor, endpoint_id, disabled, self._audit)

    def webhook_deliveries(
        self, tx: Tx, endpoint_id: str | None = None, limit: int = 50
    ) -> list[DeliveryView]:
        """The delivery log, newest first."""
        return self.webhooks.deliveries(tx, endpoint_id=endpoint_id, limit=limit)

    # -- audit --------------------------------------------------------------------------------

    def audit_log(self, tx: Tx, *, limit: int = 50, before: int | None = None) -> AuditPage:
        """A page of the audit log, newest first."""
        rows = self.store.audit_log(tx, limit=limit, before_id=before)
        entries = [
            AuditEntry(
                id=r.id,
                at=from_ms(r.at),
                actor=r.actor,
                action=r.action,
                target=r.target,
                detail=r.detail,
                address=r.address,
            )
            for r in rows
        ]
        more = len(entries) == limit and entries
        return AuditPage(entries=entries, next_before=entries[-1].id if more else None)

    # -- demo ---------------------------------------------------------------------------------

    def demo_key(self, tx: Tx, label: str) -> str:
        """A demo key that stays the same across restarts: an HMAC of ``label`` under a
        random seed stored once in this database (demo data only)."""
        seed = self.store.put_setting_once(tx, _DEMO_SEED, secrets.token_hex(32))
        digest = hmac.new(bytes.fromhex(seed), label.encode(), hashlib.sha256).digest()
        return _KEY_PREFIX + "demo_" + digest.hex()[:40]

    def ensure_demo_key(self, tx: Tx, label: str, scope: Scope, owner_id: str) -> str:
        """Issue the demo key for ``label`` unless it exists (idempotent)."""
        key = self.demo_key(tx, label)
        row = self.store.key_by_hash(tx, hash_api_key(key))
        if row is None:
            actor = Actor(who="system:demo")
            new = NewKey(name=f"demo {label}", scope=scope, owner_id=owner_id)
            key_id = "demo-" + label.replace(":", "-")
            self.issue_key(tx, actor, new, key=key, key_id=key_id)
        return key


def _changed(change: Any) -> dict[str, Any]:
    return dict(msgspec.structs.asdict(change))

"""The desk as one component: storage, ticket service, escalation scheduler and HTTP router.

``open_desk`` is called by the composition root (``server/app.py``); it migrates the desk
schema, installs the default SLA policy and calendars when missing, and wires the
notifiers from settings.  ``start``/``aclose`` own the scheduler task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import msgspec
from litestar import Router

from relaydesk.clock import Clock
from relaydesk.config import Settings
from relaydesk.desk.accounts import Accounts, PasswordHasher
from relaydesk.desk.admin.model import Scope
from relaydesk.desk.admin.service import AdminService
from relaydesk.desk.admin.webhooks import SignedWebhookNotifier, TicketEvents, WebhookDispatcher
from relaydesk.desk.escalation import (
    ChannelNotifier,
    EscalationScheduler,
    Notifier,
    WebhookNotifier,
    choose_assignee,
)
from relaydesk.desk.live import LiveNotices, WarRooms
from relaydesk.desk.mail import SmtpConfig, SmtpSender
from relaydesk.desk.mail.notifications import MailNotifications
from relaydesk.desk.mail.preferences import PersonalPreferences
from relaydesk.desk.ports import Messaging
from relaydesk.desk.sla import default_calendars, default_policy
from relaydesk.desk.tickets.model import (
    Agent,
    Contact,
    NewTicket,
    OnCallShift,
    Organisation,
    Plan,
    Principal,
    Weekday,
)
from relaydesk.desk.tickets.service import TicketService
from relaydesk.desk.workspace import WorkspaceService
from relaydesk.storage.desk import DeskStore, desk_migrations, to_ms
from relaydesk.storage.engine import Database, Tx
from relaydesk.storage.workspace import workspace_migrations
from relaydesk.web.desk_api import desk_router
from relaydesk.web.notifications_api import notifications_router
from relaydesk.web.workspace_api import workspace_router

_DEMO_ORG: Final = "acme"
_DEMO_KEY_LABEL: Final = "demo:"
#: Console sign-in of every demo person (printed by ``make run``; demo data only).
DEMO_PASSWORD: Final = "demo-password"
_DEMO_LOGINS: Final = (
    (Principal(kind="agent", id="alice"), "alice@desk.example"),
    (Principal(kind="agent", id="bob"), "bob@desk.example"),
    (Principal(kind="agent", id="carol"), "carol@desk.example"),
    (Principal(kind="customer", id="dana", organisation_id=_DEMO_ORG), "dana@acme.example"),
    (Principal(kind="customer", id="frank", organisation_id="globex"), "frank@globex.example"),
)


#: Demo apps and the demo organisation each belongs to.
_DEMO_APPS: Final = (("demo", _DEMO_ORG), ("acme-chat", _DEMO_ORG), ("globex-iot", "globex"))
#: Demo API keys: label, scope, owner.
_DEMO_KEYS: Final[tuple[tuple[str, Scope, str], ...]] = (
    ("admin:alice", "admin", "alice"),
    ("agent:alice", "agent", "alice"),
    ("agent:bob", "agent", "bob"),
    ("customer:dana", "customer", "dana"),
    ("customer:frank", "customer", "frank"),
)


class DemoCredentials(msgspec.Struct, frozen=True):
    """API keys of the demo people (``"agent:alice"`` -> key), from
    :meth:`DeskComponent.seed_demo`.

    ``seeded`` is False when the demo data already existed.  The keys are the same on
    every call and across restarts (derived from a seed stored in the database).
    """

    seeded: bool
    keys: dict[str, str]
    #: Console sign-ins (e-mail -> password) of the demo people.
    logins: dict[str, str] = {}


class DeskComponent:
    """The support desk inside one relaydesk process."""

    def __init__(
        self, db: Database, settings: Settings, clock: Clock, messaging: Messaging | None
    ) -> None:
        self._db = db
        self._clock = clock
        self.store = DeskStore()
        db.migrate("desk", desk_migrations(db.dialect))
        self.tickets = TicketService(
            db,
            self.store,
            clock,
            assignment=choose_assignee if settings.desk.auto_assign else None,
        )
        self.accounts = Accounts(db, self.store, PasswordHasher(settings.admin.hash_threads))
        self.admin = AdminService(
            db,
            self.store,
            self.tickets,
            self.accounts,
            clock,
            public_url=settings.public_url,
            invite_ttl_s=settings.admin.invite_ttl_s,
            reset_ttl_s=settings.admin.reset_ttl_s,
        )
        self.tickets.authenticator = self.admin.authenticate
        self.tickets.app_owner = self.admin.app_owner
        self.tickets.plan_version = self.admin.plan_version
        self.accounts.enabled = self.admin.principal_enabled
        self._messaging = messaging
        self._messaging_app = settings.desk.messaging_app
        self._live = False
        db.write_sync(self._install_defaults)
        notifiers: list[Notifier] = []
        self._webhook: WebhookNotifier | None = None
        if settings.desk.webhook_url:
            self._webhook = WebhookNotifier(
                settings.desk.webhook_url, timeout_s=settings.desk.webhook_timeout_s
            )
            notifiers.append(self._webhook)
        if messaging is not None:
            notifiers.append(
                ChannelNotifier(messaging, settings.desk.messaging_app, self._oncall_members)
            )
        # Signed webhooks (desk/admin/webhooks.py): notices and ticket changes enter an
        # outbox that the dispatcher signs and sends from the leader.
        notifiers.append(SignedWebhookNotifier(self.admin.webhooks))
        self.tickets.add_listener(TicketEvents(self.admin.webhooks))
        self.webhook_dispatcher = WebhookDispatcher(
            db,
            self.admin.store,
            self.admin.webhooks,
            clock,
            timeout_s=settings.desk.webhook_timeout_s,
        )
        # E-mail (desk/mail): replies and assignments as they happen, escalations and
        # at-risk warnings from the scheduler, digests; only with an SMTP server set.
        self.mail: MailNotifications | None = None
        if settings.mail.smtp_host:
            self.mail = _open_mail(db, self.store, settings, self.tickets.now)
            self.tickets.add_listener(self.mail)
            notifiers.append(self.mail)
        self.scheduler = EscalationScheduler(
            db, self.tickets, clock, notifiers, interval_s=settings.desk.escalation_interval_s
        )
        self.router: Router = desk_router(self.tickets)
        # Agent workspace (desk/workspace): its own tables, reads the desk's.
        db.migrate("workspace", workspace_migrations(db.dialect))
        self.workspace = WorkspaceService(
            db,
            self.store,
            self.tickets,
            clock,
            attachments_dir=Path(settings.server.data_dir) / "attachments",
            max_attachment_bytes=settings.desk.attachment_max_bytes,
        )
        self.tickets.add_listener(self.workspace)
        if self.mail is not None:  # @mentions in internal notes are mailed too
            self.workspace.add_mention_hook(self.mail)
        self.workspace_router: Router = workspace_router(self.workspace)
        # A person's own mail preferences (GET/PUT /api/desk/me/notifications).
        self.preferences = PersonalPreferences(db)
        self.notifications_router: Router = notifications_router(self.preferences, self.tickets)

    def _install_defaults(self, tx: Tx) -> None:
        now = self.tickets.now()
        if self.store.latest_policy_version(tx, "default") is None:
            self.tickets.put_policy_tx(tx, default_policy(), now)
        existing = self.store.calendars(tx)
        for name, calendar in default_calendars().items():
            if name not in existing:
                self.tickets.put_calendar_tx(tx, name, calendar, now)

    def enable_live(self) -> bool:
        """Post live ticket notices and open war rooms over messaging (``desk/live.py``).

        Called once by whoever consumes them (the web console); without a messaging port
        this does nothing and returns False.  Idempotent.
        """
        if self._messaging is None:
            return False
        if not self._live:
            app = self._messaging_app
            self.tickets.add_listener(LiveNotices(self._messaging, app))
            self.tickets.add_listener(
                WarRooms(self._messaging, app, self._agents, self.tickets.now)
            )
            self._live = True
        return True

    async def _agents(self) -> Sequence[Agent]:
        return await self._db.read(lambda tx: self.store.agents(tx))

    async def _oncall_members(self) -> Sequence[str]:
        agents = await self._db.read(lambda tx: self.store.agents(tx))
        return [a.id for a in agents if a.oncall]

    async def start(self) -> None:
        """Start the escalation scheduler and the webhook dispatcher."""
        await self.scheduler.start()
        await self.webhook_dispatcher.start()
        if self.mail is not None:
            await self.mail.start()

    async def stop(self) -> None:
        """Stop the background jobs (this node lost the lead); :meth:`start` resumes."""
        await self.scheduler.aclose()
        await self.webhook_dispatcher.stop()

    async def aclose(self) -> None:
        """Stop the jobs and close the clients."""
        await self.scheduler.aclose()
        await self.webhook_dispatcher.aclose()
        if self.mail is not None:
            await self.mail.aclose()
        self.accounts.hasher.close()
        if self._webhook is not None:
            await self._webhook.aclose()

    def seed_demo(self) -> DemoCredentials:
        """Create a demo organisation, plan, agents with on-call hours and tickets in
        several states (once), and the demo API keys (stable across calls)."""
        return self._db.write_sync(self._seed_tx)

    def _seed_tx(self, tx: Tx) -> DemoCredentials:
        svc = self.tickets
        now = svc.now()
        seeded = self.store.organisation(tx, _DEMO_ORG) is None
        # The demo's apps belong to its organisations (tickets may name only their
        # organisation's apps), and alice administers the demo desk (unless changed).
        for app_id, org_id in _DEMO_APPS:
            if self.admin.store.app_owner(tx, app_id) is None:
                self.admin.store.set_app_owner(tx, app_id, org_id, to_ms(now))
        if self.admin.store.person(tx, "agent", "alice") is None:
            self.admin.store.put_person(tx, "agent", "alice", "admin")
        if seeded:
            _seed_data(svc, tx, now)
        # Keys issued by earlier versions (a fresh set on every start) are revoked; the
        # demo keys are now derived from a seed stored once, so they survive restarts.
        self.store.revoke_api_keys(tx, _DEMO_KEY_LABEL, to_ms(now))
        keys: dict[str, str] = {}
        for label, scope, owner in _DEMO_KEYS:
            keys[label] = self.admin.ensure_demo_key(tx, label, scope, owner)
        logins: dict[str, str] = {}
        for principal, email in _DEMO_LOGINS:
            if self.store.login(tx, email) is None:
                self.accounts.set_password_tx(tx, principal, email, DEMO_PASSWORD, now)
            logins[email] = DEMO_PASSWORD
        return DemoCredentials(seeded=seeded, keys=keys, logins=logins)


def _seed_data(svc: TicketService, tx: Tx, now: datetime) -> None:
    london = "Europe/London"
    weekdays: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    week: tuple[Weekday, ...] = (*weekdays, "sat", "sun")
    svc.put_plan_tx(tx, Plan(id="standard", name="Standard", policy_id="default"))
    for agent in (
        Agent(
            id="alice",
            name="Alice Ng",
            email="alice@desk.example",
            skills=("transport", "storage"),
            oncall=(OnCallShift(days=weekdays, start="09:00", end="17:00", timezone=london),),
        ),
        Agent(
            id="bob",
            name="Bob Okafor",
            email="bob@desk.example",
            skills=("client_sdk", "security"),
            oncall=(OnCallShift(days=week, start="17:00", end="09:00", timezone=london),),
        ),
        Agent(
            id="carol",
            name="Carol Diaz",
            email="carol@desk.example",
            skills=("storage", "security"),
            oncall=(OnCallShift(days=("sat", "sun"), start="09:00", end="17:00", timezone=london),),
        ),
    ):
        svc.put_agent_tx(tx, agent)
    svc.put_organisation_tx(
        tx, Organisation(id=_DEMO_ORG, name="Acme Chat", plan_id="standard", csm_agent_id="carol")
    )
    svc.put_organisation_tx(tx, Organisation(id="globex", name="Globex IoT", plan_id="standard"))
    svc.put_contact_tx(tx, Contact(id="dana", organisation_id=_DEMO_ORG, name="Dana Ruiz"))
    svc.put_contact_tx(tx, Contact(id="erin", organisation_id=_DEMO_ORG, name="Erin Park"))
    svc.put_contact_tx(tx, Contact(id="frank", organisation_id="globex", name="Frank Li"))
    dana = Principal(kind="customer", id="dana", organisation_id=_DEMO_ORG)
    frank = Principal(kind="customer", id="frank", organisation_id="globex")
    alice = Principal(kind="agent", id="alice")
    bob = Principal(kind="agent", id="bob")

    def ago(**kw: float) -> datetime:
        return now - timedelta(**kw)

    def ticket(who: Principal, at: datetime, **fields: object) -> int:
        return svc.create_ticket_tx(tx, who, msgspec.convert(fields, NewTicket), at).id

    t1 = ticket(
        dana,
        ago(minutes=10),
        subject="Messages not delivered to Android devices in eu-west",
        description="Since 10:05 UTC about 20% of sends from eu-west never reach Android.",
        priority="P0",
        skills=("transport",),
        app_id="acme-chat",
        region="eu-west",
        window_start=ago(minutes=40),
        window_end=ago(minutes=10),
    )
    svc.add_comment_tx(
        tx,
        None,
        t1,
        "We received your report and are investigating.",
        public=True,
        now=ago(minutes=9),
    )
    t2 = ticket(
        dana,
        ago(hours=3),
        subject="Reconnect storm after our deploy",
        priority="P1",
        skills=("client_sdk",),
    )
    svc.add_comment_tx(
        tx,
        bob,
        t2,
        "Looking at the reconnect backoff settings now.",
        public=True,
        now=ago(hours=2, minutes=30),
    )
    svc.add_comment_tx(
        tx, bob, t2, "Jitter disabled in their SDK config.", public=False, now=ago(hours=2)
    )
    t3 = ticket(
        dana,
        ago(days=2),
        subject="Presence flaps for some users",
        priority="P2",
        skills=("transport",),
    )
    svc.add_comment_tx(
        tx, alice, t3, "Which SDK version do they run?", public=True, now=ago(days=1, hours=20)
    )
    svc.change_status_tx(tx, alice, t3, "pending", ago(days=1, hours=20))
    t4 = ticket(dana, ago(days=6), subject="How long is history retained?", priority="P3")
    svc.add_comment_tx(
        tx, alice, t4, "30 days by default; configurable.", public=True, now=ago(days=5)
    )
    svc.change_status_tx(tx, alice, t4, "solved", ago(days=5))
    t5 = ticket(
        frank,
        ago(days=4),
        subject="History paging is slow for large channels",
        priority="P2",
        skills=("storage",),
    )
    t6 = ticket(frank, ago(days=9), subject="Token expiry question", priority="P3")
    svc.add_comment_tx(
        tx, bob, t6, "Tokens live 15 minutes by default.", public=True, now=ago(days=8)
    )
    svc.change_status_tx(tx, bob, t6, "solved", ago(days=8))
    svc.change_status_tx(tx, bob, t6, "closed", ago(days=4))
    for tid in (t1, t2, t3, t4, t5, t6):
        svc.recompute_tx(tx, tid, now)


def _open_mail(
    db: Database, store: DeskStore, settings: Settings, now: Callable[[], datetime]
) -> MailNotifications:

    m = settings.mail
    sender = SmtpSender(
        SmtpConfig(
            host=m.smtp_host,
            port=m.smtp_port,
            starttls=m.starttls,
            tls=m.tls,
            username=m.username,
            password=m.password,
            sender=m.sender,
            timeout_s=m.timeout_s,
        )
    )
    return MailNotifications(
        db,
        store,
        sender,
        base_url=settings.public_url,
        now=now,
        digest_interval=timedelta(seconds=m.digest_interval_s),
    )


def open_desk(
    db: Database, settings: Settings, clock: Clock, messaging: Messaging | None
) -> DeskComponent:
    """Open the desk on ``db`` (migrating it) with notifiers from ``settings.desk``."""
    return DeskComponent(db, settings, clock, messaging)

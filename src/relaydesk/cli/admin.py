"""``relaydesk admin``: administer the desk from the server's machine.

Commands open the node's database directly (``--data-dir`` or ``--config``, the same
settings ``relaydesk serve`` reads) and run the same :class:`AdminService` as
``/api/admin``, so the rules, errors and audit log are the same; the actor in the log is
``cli:<os user>``.  A running server sees the changes at once (keys, people, sessions)
or within ``admin.apps_refresh_s`` (app secrets).  ``admin init`` creates the first
administrator on a fresh data directory and prints a one-time sign-in link.

Errors print ``error <code>: <message>`` and exit with status 1; bad settings exit 2.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import msgspec
import typer

from relaydesk.clock import SystemClock
from relaydesk.config import ConfigError, Settings, load_settings
from relaydesk.desk.admin import (
    Actor,
    AdminService,
    AgentChange,
    NewAgent,
    NewApp,
    NewCustomer,
    NewKey,
    NewOrganisation,
    NewPlan,
    OrganisationChange,
    Rotation,
)
from relaydesk.desk.admin.model import PersonKind
from relaydesk.desk.admin.webhooks import EVENT_TYPES, NewEndpoint
from relaydesk.desk.tickets.errors import DeskError
from relaydesk.storage.engine import Tx
from relaydesk.storage.push import (
    PushConfig,
    configs_tx,
    dead_letters_tx,
    delete_config_tx,
    put_config_tx,
)

T = TypeVar("T")

admin_app = typer.Typer(
    help="Administration: organisations, people, API keys, apps, audit log.",
    no_args_is_help=True,
)
org_app = typer.Typer(help="Organisations and their apps.", no_args_is_help=True)
plan_app = typer.Typer(help="Plans (SLA policy per customer).", no_args_is_help=True)
agent_app = typer.Typer(help="Support agents and administrators.", no_args_is_help=True)
customer_app = typer.Typer(help="Customer contacts.", no_args_is_help=True)
person_app = typer.Typer(help="Disable, enable, reset links.", no_args_is_help=True)
key_app = typer.Typer(help="API keys.", no_args_is_help=True)
apps_app = typer.Typer(help="Messaging apps and their secrets.", no_args_is_help=True)
webhook_app = typer.Typer(help="Signed webhooks and their delivery log.", no_args_is_help=True)
push_app = typer.Typer(
    help="Offline push webhook per app and its dead-letter list.", no_args_is_help=True
)
for sub, name in (
    (push_app, "push"),
    (webhook_app, "webhook"),
    (org_app, "org"),
    (plan_app, "plan"),
    (agent_app, "agent"),
    (customer_app, "customer"),
    (person_app, "person"),
    (key_app, "key"),
    (apps_app, "app"),
):
    admin_app.add_typer(sub, name=name)


class _Target(msgspec.Struct):
    data_dir: str | None = None
    config: str | None = None


_target = _Target()


@admin_app.callback()
def _options(
    data_dir: Annotated[
        str | None, typer.Option(help="The server's data directory (SQLite database).")
    ] = None,
    config: Annotated[str | None, typer.Option(help="The server's TOML settings file.")] = None,
) -> None:
    """Where the server's database is: the same --data-dir/--config as ``serve``."""
    _target.data_dir = data_dir
    _target.config = config


def _fail(code: str, message: str, status: int = 1) -> NoReturn:
    typer.echo(f"error {code}: {message}", err=True)
    raise typer.Exit(status)


def _settings() -> Settings:
    overrides: dict[str, Any] = {}
    if _target.data_dir is not None:
        overrides["server"] = {"data_dir": _target.data_dir}
    try:
        return load_settings(_target.config, overrides)
    except ConfigError as exc:
        _fail("config.invalid", str(exc), 2)


@contextlib.contextmanager
def _service() -> Iterator[AdminService]:
    from relaydesk.desk.component import open_desk
    from relaydesk.server.storage_setup import open_messaging_storage

    settings = _settings()
    if settings.storage_url.startswith("sqlite:///"):
        Path(settings.storage_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    clock = SystemClock()
    db, _store = open_messaging_storage(settings, clock)
    try:
        yield open_desk(db, settings, clock, None).admin
    finally:
        db.close_sync()


def _actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return Actor(who=f"cli:{user}", address="local")


def _run(fn: Callable[[AdminService, Tx, Actor], T]) -> T:
    with _service() as admin:
        actor = _actor()
        try:
            return admin.write_sync(lambda tx: fn(admin, tx, actor))
        except DeskError as exc:
            _fail(exc.code, exc.message)


def _build(kind: type[T], **fields: Any) -> T:
    try:
        return msgspec.convert({k: v for k, v in fields.items() if v is not None}, kind)
    except msgspec.ValidationError as exc:
        _fail("admin.invalid", str(exc))


def _out(value: Any) -> None:
    sys.stdout.write(json.dumps(msgspec.to_builtins(value), indent=2) + "\n")


# -- bootstrap -------------------------------------------------------------------------------


@admin_app.command()
def init(
    email: Annotated[str, typer.Option(help="The administrator's e-mail (their sign-in).")],
    name: Annotated[str, typer.Option(help="The administrator's name.")] = "Administrator",
    agent_id: Annotated[str, typer.Option("--id", help="The administrator's agent id.")] = "admin",
) -> None:
    """Create the first administrator and print a one-time sign-in link.

    Refused (status 1, ``admin.already_initialised``) once an administrator exists, so it
    is safe to run again: nothing changes.
    """
    new = _build(NewAgent, id=agent_id, name=name, email=email, role="admin")
    made = _run(lambda a, tx, actor: a.initialise(tx, actor, new))
    typer.echo(f"administrator {made.person.id} <{made.person.email}> created")
    typer.echo("open this one-time link to choose a password and sign in")
    typer.echo(f"(valid until {made.link.expires_at.isoformat()}):")
    typer.echo(made.link.url)


@admin_app.command()
def audit(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    before: Annotated[int | None, typer.Option(help="Page before this entry id.")] = None,
) -> None:
    """The audit log, newest first."""
    _out(_run(lambda a, tx, _: a.audit_log(tx, limit=limit, before=before)))


@admin_app.command()
def people() -> None:
    """Every agent and customer."""
    _out(_run(lambda a, tx, _: a.people(tx)))


# -- organisations and plans -----------------------------------------------------------------


@org_app.command("list")
def org_list() -> None:
    """Every organisation with its apps."""
    _out(_run(lambda a, tx, _: a.organisations(tx)))


@org_app.command("create")
def org_create(
    org_id: Annotated[str, typer.Argument(help="Organisation id (lower-case slug).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    plan: Annotated[str, typer.Option(help="Plan id.")],
    csm: Annotated[str | None, typer.Option(help="Customer success manager (agent id).")] = None,
) -> None:
    """Create an organisation on a plan."""
    new = _build(NewOrganisation, id=org_id, name=name, plan_id=plan, csm_agent_id=csm)
    _out(_run(lambda a, tx, actor: a.create_organisation(tx, actor, new)))


@org_app.command("update")
def org_update(
    org_id: str,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    plan: Annotated[str | None, typer.Option(help="New plan id.")] = None,
    csm: Annotated[str | None, typer.Option(help="New customer success manager.")] = None,
) -> None:
    """Rename an organisation, change its plan or customer success manager."""
    change = _build(OrganisationChange, name=name, plan_id=plan, csm_agent_id=csm)
    _out(_run(lambda a, tx, actor: a.change_organisation(tx, actor, org_id, change)))


@org_app.command("attach")
def org_attach(org_id: str, app_id: str) -> None:
    """Attach an app to an organisation (an app belongs to at most one)."""
    _out(_run(lambda a, tx, actor: a.attach_app(tx, actor, org_id, app_id)))


@org_app.command("detach")
def org_detach(org_id: str, app_id: str) -> None:
    """Detach an app from its organisation."""
    _out(_run(lambda a, tx, actor: a.detach_app(tx, actor, org_id, app_id)))


@org_app.command("disable")
def org_disable(org_id: str) -> None:
    """Disable an organisation: its customers' sessions, keys and sign-ins stop working."""
    _out(_run(lambda a, tx, actor: a.set_organisation_disabled(tx, actor, org_id, True)))


@org_app.command("enable")
def org_enable(org_id: str) -> None:
    """Enable a disabled organisation."""
    _out(_run(lambda a, tx, actor: a.set_organisation_disabled(tx, actor, org_id, False)))


@plan_app.command("list")
def plan_list() -> None:
    """Every plan and the policy version new tickets pin."""
    _out(_run(lambda a, tx, _: a.plans(tx)))


@plan_app.command("create")
def plan_create(
    plan_id: str,
    name: Annotated[str, typer.Option(help="Display name.")],
    policy: Annotated[str, typer.Option(help="SLA policy id.")] = "default",
    version: Annotated[
        int | None, typer.Option(help="Pin this policy version (default: follow the latest).")
    ] = None,
) -> None:
    """Create or change a plan."""
    new = _build(NewPlan, id=plan_id, name=name, policy_id=policy, policy_version=version)
    _out(_run(lambda a, tx, actor: a.put_plan(tx, actor, new)))


# -- people ----------------------------------------------------------------------------------


OnCall = Annotated[
    list[str] | None,
    typer.Option(
        help="An on-call shift DAYS@HH:MM-HH:MM[@TZ] (repeat), e.g."
        " mon,tue,wed,thu,fri@09:00-17:00@Europe/London; an end before the start runs"
        " past midnight."
    ),
]


def _shifts(specs: list[str] | None) -> list[dict[str, Any]] | None:
    if specs is None:
        return None
    out = []
    for spec in specs:
        parts = spec.split("@")
        if len(parts) not in (2, 3) or parts[1].count("-") != 1:
            _fail("admin.invalid", f"on-call shift {spec!r}: expected DAYS@HH:MM-HH:MM[@TZ]")
        start, end = parts[1].split("-")
        shift: dict[str, Any] = {"days": parts[0].split(","), "start": start, "end": end}
        if len(parts) == 3:
            shift["timezone"] = parts[2]
        out.append(shift)
    return out


@agent_app.command("invite")
def agent_invite(
    agent_id: str,
    name: Annotated[str, typer.Option(help="Display name.")],
    email: Annotated[str, typer.Option(help="Sign-in e-mail.")],
    role: Annotated[str, typer.Option(help="agent or admin.")] = "agent",
    skill: Annotated[list[str] | None, typer.Option(help="A skill (repeat).")] = None,
    oncall: OnCall = None,
) -> None:
    """Create an agent and print their one-time invite link."""
    new = _build(
        NewAgent,
        id=agent_id,
        name=name,
        email=email,
        role=role,
        skills=tuple(skill or ()),
        oncall=_shifts(oncall),
    )
    made = _run(lambda a, tx, actor: a.invite_agent(tx, actor, new))
    typer.echo(f"invite link for {made.person.id} (until {made.link.expires_at.isoformat()}):")
    typer.echo(made.link.url)


@agent_app.command("update")
def agent_update(
    agent_id: str,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    role: Annotated[str | None, typer.Option(help="agent or admin.")] = None,
    skill: Annotated[list[str] | None, typer.Option(help="Replace the skills (repeat).")] = None,
    oncall: OnCall = None,
) -> None:
    """Change an agent's name, role, skills or on-call shifts (given: replaced)."""
    change = _build(
        AgentChange,
        name=name,
        role=role,
        skills=None if skill is None else tuple(skill),
        oncall=_shifts(oncall),
    )
    _out(_run(lambda a, tx, actor: a.change_agent(tx, actor, agent_id, change)))


@customer_app.command("invite")
def customer_invite(
    customer_id: str,
    org: Annotated[str, typer.Option(help="Organisation id.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    email: Annotated[str, typer.Option(help="Sign-in e-mail.")],
) -> None:
    """Create a customer contact and print their one-time invite link."""
    new = _build(NewCustomer, id=customer_id, organisation_id=org, name=name, email=email)
    made = _run(lambda a, tx, actor: a.invite_customer(tx, actor, new))
    typer.echo(f"invite link for {made.person.id} (until {made.link.expires_at.isoformat()}):")
    typer.echo(made.link.url)


def _kind(kind: str) -> PersonKind:
    if kind not in ("agent", "customer"):
        _fail("admin.invalid", "KIND is agent or customer")
    return "agent" if kind == "agent" else "customer"


@person_app.command("disable")
def person_disable(kind: str, person_id: str) -> None:
    """Disable an agent or customer (KIND is agent or customer)."""
    k = _kind(kind)
    _out(_run(lambda a, tx, actor: a.set_person_disabled(tx, actor, k, person_id, True)))


@person_app.command("enable")
def person_enable(kind: str, person_id: str) -> None:
    """Enable a disabled agent or customer."""
    k = _kind(kind)
    _out(_run(lambda a, tx, actor: a.set_person_disabled(tx, actor, k, person_id, False)))


@person_app.command("reset-link")
def person_reset_link(kind: str, person_id: str) -> None:
    """Print a one-time password-reset link (an invite link if no password is set yet)."""
    k = _kind(kind)
    link = _run(lambda a, tx, actor: a.reset_link(tx, actor, k, person_id))
    typer.echo(f"{link.purpose} link for {person_id} (until {link.expires_at.isoformat()}):")
    typer.echo(link.url)


Delivery = Annotated[
    str | None, typer.Option(help="instant, digest or off (unchanged if not given).")
]


@person_app.command("notifications")
def person_notifications(
    kind: str,
    person_id: str,
    reply: Delivery = None,
    assignment: Delivery = None,
    escalation: Delivery = None,
    at_risk: Delivery = None,
    mention: Delivery = None,
) -> None:
    """Show or change which e-mails a person gets (docs/desk.md "E-mail notifications")."""
    from relaydesk.desk.mail import MailPreferences
    from relaydesk.storage.engine import apply_migrations
    from relaydesk.storage.mail import MAIL_MIGRATIONS, MailPreferenceStore

    k = _kind(kind)
    changes = {
        name: value
        for name, value in (
            ("reply", reply),
            ("assignment", assignment),
            ("escalation", escalation),
            ("at_risk", at_risk),
            ("mention", mention),
        )
        if value is not None
    }
    store = MailPreferenceStore()

    def run(a: AdminService, tx: Tx, _actor: Actor) -> MailPreferences:
        a.person(tx, k, person_id)  # admin.not_found for an unknown person
        apply_migrations(tx, "desk_mail", MAIL_MIGRATIONS)
        prefs = store.get(tx, k, person_id)
        if changes:
            merged = {**msgspec.to_builtins(prefs), **changes}
            prefs = _build(MailPreferences, **merged)
            store.put(tx, k, person_id, prefs)
        return prefs

    _out(_run(run))


# -- keys ------------------------------------------------------------------------------------


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[str, typer.Option(help="admin, agent or customer.")],
    owner: Annotated[str, typer.Option(help="Agent id (admin/agent) or customer id.")],
) -> None:
    """Issue an API key; it is printed once (only its hash is stored)."""
    new = _build(NewKey, name=name, scope=scope, owner_id=owner)
    issued = _run(lambda a, tx, actor: a.issue_key(tx, actor, new))
    typer.echo(f"key {issued.record.id} ({issued.record.scope}, {issued.record.owner_id}):")
    typer.echo(issued.key)


@key_app.command("list")
def key_list() -> None:
    """Every key with its scope, owner, last use and revocation (never the key)."""
    _out(_run(lambda a, tx, _: a.keys(tx)))


@key_app.command("revoke")
def key_revoke(key_id: str) -> None:
    """Revoke a key: it stops working with the next request."""
    _out(_run(lambda a, tx, actor: a.revoke_key(tx, actor, key_id)))


# -- apps ------------------------------------------------------------------------------------


@apps_app.command("list")
def app_list() -> None:
    """Every messaging app with its organisation and state."""
    _out(_run(lambda a, tx, _: a.apps(tx)))


@apps_app.command("create")
def app_create(
    app_id: str,
    org: Annotated[str | None, typer.Option(help="Attach to this organisation.")] = None,
    compliance: Annotated[
        str,
        typer.Option(help="plaintext, e2ee or e2ee_legal_hold: chosen once (docs/compliance.md)."),
    ] = "plaintext",
) -> None:
    """Create an app; its secret is printed once."""
    new = _build(NewApp, id=app_id, organisation_id=org, compliance=compliance)
    made = _run(lambda a, tx, actor: a.create_app(tx, actor, new))
    typer.echo(f"app {made.app.id} ({made.app.compliance}) secret:")
    typer.echo(made.secret)


@apps_app.command("disable")
def app_disable(app_id: str) -> None:
    """Disable an app: its tokens and secret stop working."""
    _out(_run(lambda a, tx, actor: a.set_app_disabled(tx, actor, app_id, True)))


@apps_app.command("enable")
def app_enable(app_id: str) -> None:
    """Enable a disabled app."""
    _out(_run(lambda a, tx, actor: a.set_app_disabled(tx, actor, app_id, False)))


@apps_app.command("rotate")
def app_rotate(
    app_id: str,
    overlap: Annotated[
        int, typer.Option(help="Seconds the old secret keeps verifying tokens.")
    ] = 86_400,
) -> None:
    """Rotate an app's secret; the new one is printed once."""
    rotation = _build(Rotation, overlap_s=overlap)
    made = _run(lambda a, tx, actor: a.rotate_app_secret(tx, actor, app_id, rotation))
    until = made.app.previous_secret_until
    typer.echo(f"app {made.app.id} new secret (old one valid until {until}):")
    typer.echo(made.secret)


# -- webhooks --------------------------------------------------------------------------------


@webhook_app.command("create")
def webhook_create(
    name: Annotated[str, typer.Option(help="What the endpoint is.")],
    url: Annotated[str, typer.Option(help="Where events are POSTed.")],
    event: Annotated[
        list[str], typer.Option(help=f"An event type (repeat): {', '.join(EVENT_TYPES)}.")
    ],
) -> None:
    """Register an endpoint; its signing secret is printed once."""
    new = _build(NewEndpoint, name=name, url=url, events=tuple(event))
    made = _run(lambda a, tx, actor: a.create_webhook(tx, actor, new))
    typer.echo(f"webhook {made.endpoint.id} signing secret:")
    typer.echo(made.secret)


@webhook_app.command("list")
def webhook_list() -> None:
    """Every endpoint (never its secret)."""
    _out(_run(lambda a, tx, _: a.list_webhooks(tx)))


@webhook_app.command("disable")
def webhook_disable(endpoint_id: str) -> None:
    """Disable an endpoint (nothing new is queued for it)."""
    _out(_run(lambda a, tx, actor: a.set_webhook_disabled(tx, actor, endpoint_id, True)))


@webhook_app.command("enable")
def webhook_enable(endpoint_id: str) -> None:
    """Enable an endpoint."""
    _out(_run(lambda a, tx, actor: a.set_webhook_disabled(tx, actor, endpoint_id, False)))


@webhook_app.command("deliveries")
def webhook_deliveries(
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """The delivery log, newest first, with the last status and answer."""
    _out(_run(lambda a, tx, _: a.webhook_deliveries(tx, endpoint, limit)))


# -- offline push (docs/protocol.md "Offline push webhook") ----------------------------------


def _push_view(config: PushConfig) -> dict[str, Any]:
    return {
        "app": config.app,
        "url": config.url,
        "preview": config.preview,
        "batch_ms": config.batch_ms,
    }


def _known_app(a: AdminService, tx: Tx, app_id: str) -> None:
    if app_id not in {view.id for view in a.apps(tx)}:
        _fail("admin.unknown_app", f"no app {app_id!r}")


@push_app.command("set")
def push_set(
    app_id: str,
    url: Annotated[str, typer.Option(help="Where batches are POSTed.")],
    secret: Annotated[str, typer.Option(help="The signing secret (16+ characters).")],
    preview: Annotated[
        bool, typer.Option(help="Send a preview of plaintext messages (never for E2EE).")
    ] = False,
    batch_ms: Annotated[int, typer.Option(help="Batching window in milliseconds.")] = 1000,
) -> None:
    """Configure an app's offline push webhook (running nodes adopt it within 5 s)."""
    from relaydesk.server.features.push_http import PushConfigRequest

    req = _build(PushConfigRequest, url=url, secret=secret, preview=preview, batch_ms=batch_ms)
    config = PushConfig(app_id, req.url, req.secret, req.preview, req.batch_ms)

    def run(a: AdminService, tx: Tx, _actor: Actor) -> None:
        _known_app(a, tx, app_id)
        put_config_tx(tx, config, int(SystemClock().time() * 1000))

    _run(run)
    _out(_push_view(config))


@push_app.command("show")
def push_show(app_id: str) -> None:
    """An app's push webhook (never its secret)."""
    found = _run(lambda a, tx, _: configs_tx(tx).get(app_id))
    if found is None:
        _fail("push.not_configured", f"app {app_id!r} has no push webhook")
    _out(_push_view(found))


@push_app.command("off")
def push_off(app_id: str) -> None:
    """Turn an app's push webhook off."""
    _out({"removed": _run(lambda a, tx, _: delete_config_tx(tx, app_id))})


@push_app.command("dead-letters")
def push_dead_letters(
    app_id: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20
) -> None:
    """Batches that exhausted their retries, newest first, with the body as sent."""
    _out(_run(lambda a, tx, _: dead_letters_tx(tx, app_id, limit)))


__all__ = ["admin_app"]

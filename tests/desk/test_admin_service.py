"""Administration service on both engines: every operation, every refusal, the audit log.

Refusals must leave nothing behind (one transaction per operation): each refusal test
counts the rows of the tables the operation would have written.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from desk_testkit import desk_settings

from relaydesk.clock import FakeClock
from relaydesk.desk.admin import (
    Actor,
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
from relaydesk.desk.component import DeskComponent, open_desk
from relaydesk.desk.tickets.errors import DeskError
from relaydesk.desk.tickets.model import NewTicket, Principal
from relaydesk.storage.engine import Database
from relaydesk.storage.messages import messaging_migrations

ROOT = Actor(who="cli:test", address="local")


@pytest.fixture
def desk(desk_db: Database, desk_clock: FakeClock) -> DeskComponent:
    desk_db.migrate("messaging", messaging_migrations(desk_db.dialect))
    return open_desk(desk_db, desk_settings(), desk_clock, None)


def _w(desk: DeskComponent, fn: Any) -> Any:
    return desk.admin.write_sync(fn)


def _refused(desk: DeskComponent, code: str, fn: Any) -> None:
    before = _counts(desk)
    with pytest.raises(DeskError) as err:
        desk.admin.write_sync(fn)
    assert err.value.code == code, err.value
    assert _counts(desk) == before, "a refused operation wrote something"


def _counts(desk: DeskComponent) -> tuple[int, ...]:
    tables = (
        "desk_organisations",
        "desk_agents",
        "desk_contacts",
        "admin_apps",
        "admin_keys",
        "admin_links",
        "admin_audit",
        "admin_people",
        "apps",
    )
    return desk.admin.read_sync(
        lambda tx: tuple(int(tx.scalar(f"SELECT COUNT(*) FROM {t}")) for t in tables)
    )


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def _setup(desk: DeskComponent) -> dict[str, Any]:
    a = desk.admin
    init = _w(
        desk,
        lambda tx: a.initialise(
            tx, ROOT, NewAgent(id="root", name="Root", email="root@ops.example")
        ),
    )
    _w(desk, lambda tx: a.put_plan(tx, ROOT, NewPlan(id="gold", name="Gold", policy_id="default")))
    _w(
        desk,
        lambda tx: a.create_organisation(
            tx, ROOT, NewOrganisation(id="acme", name="Acme", plan_id="gold")
        ),
    )
    _w(
        desk,
        lambda tx: a.create_organisation(
            tx, ROOT, NewOrganisation(id="globex", name="Globex", plan_id="gold")
        ),
    )
    app = _w(
        desk, lambda tx: a.create_app(tx, ROOT, NewApp(id="acme-chat", organisation_id="acme"))
    )
    agent = _w(
        desk,
        lambda tx: a.invite_agent(
            tx,
            ROOT,
            NewAgent(id="alice", name="Alice", email="Alice@Desk.example", skills=("transport",)),
        ),
    )
    cust = _w(
        desk,
        lambda tx: a.invite_customer(
            tx,
            ROOT,
            NewCustomer(id="dana", organisation_id="acme", name="Dana", email="dana@acme.example"),
        ),
    )
    return {"init": init, "app": app, "agent": agent, "customer": cust}


async def test_init_once_then_refused(desk: DeskComponent) -> None:
    made = _setup(desk)
    assert made["init"].person.role == "admin" and made["init"].link.purpose == "invite"
    _refused(
        desk,
        "admin.already_initialised",
        lambda tx: desk.admin.initialise(tx, ROOT, NewAgent(id="x", name="X", email="x@x.example")),
    )
    # The one-time link sets the password; it cannot be used twice.
    token = _token(made["init"].link.url)
    who = await desk.admin.accept_link(token, "correct horse battery", "127.0.0.1")
    assert who == Principal(kind="agent", id="root")
    with pytest.raises(DeskError) as err:
        await desk.admin.accept_link(token, "correct horse battery", "127.0.0.1")
    assert err.value.code == "admin.link_used"
    assert await desk.accounts.authenticate("ROOT@ops.example", "correct horse battery") == who


async def test_links_expire_and_weak_passwords_are_refused(
    desk: DeskComponent, desk_clock: FakeClock
) -> None:
    made = _setup(desk)
    token = _token(made["customer"].link.url)
    for weak in ("short", "aaaaaaaaaaaaaaaa", "password1234", "dana-is-my-name-ok"):
        with pytest.raises(DeskError) as err:
            await desk.admin.accept_link(token, weak, "127.0.0.1")
        assert err.value.code == "admin.weak_password", weak
    desk_clock.advance(timedelta(days=8).total_seconds())
    with pytest.raises(DeskError) as err:
        await desk.admin.accept_link(token, "a fine long passphrase", "127.0.0.1")
    assert err.value.code == "admin.link_expired"
    with pytest.raises(DeskError) as err:
        await desk.admin.accept_link("not-a-token", "a fine long passphrase", "127.0.0.1")
    assert err.value.code == "admin.link_invalid"
    # A fresh link replaces the old one.
    link = _w(desk, lambda tx: desk.admin.reset_link(tx, ROOT, "customer", "dana"))
    dana = await desk.admin.accept_link(_token(link.url), "a fine long passphrase", "::1")
    assert dana.organisation_id == "acme"


def test_organisations_apps_and_refusals(desk: DeskComponent) -> None:
    _setup(desk)
    a = desk.admin
    _refused(
        desk,
        "admin.organisation_exists",
        lambda tx: a.create_organisation(
            tx, ROOT, NewOrganisation(id="acme", name="A", plan_id="gold")
        ),
    )
    _refused(
        desk,
        "admin.unknown_plan",
        lambda tx: a.create_organisation(
            tx, ROOT, NewOrganisation(id="new", name="N", plan_id="nope")
        ),
    )
    _refused(
        desk,
        "admin.unknown_policy",
        lambda tx: a.put_plan(tx, ROOT, NewPlan(id="p", name="P", policy_id="nope")),
    )
    _refused(
        desk,
        "admin.app_attached_elsewhere",
        lambda tx: a.attach_app(tx, ROOT, "globex", "acme-chat"),
    )
    _refused(desk, "admin.unknown_app", lambda tx: a.attach_app(tx, ROOT, "globex", "nope"))
    _refused(
        desk, "admin.unknown_organisation", lambda tx: a.attach_app(tx, ROOT, "nope", "acme-chat")
    )
    _refused(desk, "admin.app_exists", lambda tx: a.create_app(tx, ROOT, NewApp(id="acme-chat")))
    # Creating an app attached to an unknown organisation creates nothing (one transaction).
    _refused(
        desk,
        "admin.unknown_organisation",
        lambda tx: a.create_app(tx, ROOT, NewApp(id="x1", organisation_id="nope")),
    )
    renamed = _w(
        desk,
        lambda tx: a.change_organisation(
            tx, ROOT, "acme", OrganisationChange(name="Acme Corp", csm_agent_id="alice")
        ),
    )
    assert (renamed.name, renamed.csm_agent_id, renamed.apps) == (
        "Acme Corp",
        "alice",
        ["acme-chat"],
    )
    _w(desk, lambda tx: a.detach_app(tx, ROOT, "acme", "acme-chat"))
    moved = _w(desk, lambda tx: a.attach_app(tx, ROOT, "globex", "acme-chat"))
    assert moved.apps == ["acme-chat"]
    _w(desk, lambda tx: a.set_organisation_disabled(tx, ROOT, "globex", True))
    _refused(
        desk,
        "admin.organisation_disabled",
        lambda tx: a.invite_customer(
            tx, ROOT, NewCustomer(id="g", organisation_id="globex", name="G", email="g@g.example")
        ),
    )
    _refused(
        desk,
        "admin.unknown_organisation",
        lambda tx: a.invite_customer(
            tx, ROOT, NewCustomer(id="g", organisation_id="nope", name="G", email="g@g.example")
        ),
    )


def test_people_duplicates_roles_and_last_admin(desk: DeskComponent) -> None:
    _setup(desk)
    a = desk.admin
    _refused(
        desk,
        "admin.duplicate_email",
        lambda tx: a.invite_agent(
            tx, ROOT, NewAgent(id="al2", name="A", email="alice@desk.EXAMPLE")
        ),
    )
    _refused(
        desk,
        "admin.duplicate_email",
        lambda tx: a.invite_customer(
            tx,
            ROOT,
            NewCustomer(id="d2", organisation_id="acme", name="D", email="dana@acme.example"),
        ),
    )
    _refused(
        desk,
        "admin.person_exists",
        lambda tx: a.invite_agent(
            tx, ROOT, NewAgent(id="alice", name="A", email="other@x.example")
        ),
    )
    _refused(
        desk, "admin.last_admin", lambda tx: a.set_person_disabled(tx, ROOT, "agent", "root", True)
    )
    _refused(
        desk,
        "admin.last_admin",
        lambda tx: a.change_agent(tx, ROOT, "root", AgentChange(role="agent")),
    )
    _refused(
        desk,
        "admin.unknown_person",
        lambda tx: a.set_person_disabled(tx, ROOT, "customer", "nope", True),
    )
    alice = _w(
        desk,
        lambda tx: a.change_agent(
            tx, ROOT, "alice", AgentChange(role="admin", skills=("storage",))
        ),
    )
    assert (alice.role, alice.skills) == ("admin", ("storage",))
    _w(desk, lambda tx: a.set_person_disabled(tx, ROOT, "agent", "root", True))
    people = {p.id: p for p in _w(desk, lambda tx: a.people(tx))}
    assert people["root"].disabled and not people["alice"].disabled
    assert people["dana"].organisation_id == "acme" and not people["dana"].has_password


async def test_keys_scoped_hashed_revocable(desk: DeskComponent, desk_clock: FakeClock) -> None:
    _setup(desk)
    a = desk.admin
    admin_key = _w(
        desk, lambda tx: a.issue_key(tx, ROOT, NewKey(name="ops", scope="admin", owner_id="root"))
    )
    cust_key = _w(
        desk, lambda tx: a.issue_key(tx, ROOT, NewKey(name="ci", scope="customer", owner_id="dana"))
    )
    _refused(
        desk,
        "auth.not_admin",
        lambda tx: a.issue_key(tx, ROOT, NewKey(name="x", scope="admin", owner_id="alice")),
    )
    _refused(
        desk,
        "admin.unknown_person",
        lambda tx: a.issue_key(tx, ROOT, NewKey(name="x", scope="customer", owner_id="alice")),
    )
    # Only the hash is stored.
    stored = desk.admin.read_sync(lambda tx: tx.query("SELECT key_hash FROM admin_keys"))
    assert all(cust_key.key not in str(r) and admin_key.key not in str(r) for r in stored)
    owner, revoked = await a.authenticate_key(admin_key.key)
    assert owner is not None and owner.scope == "admin" and not revoked
    dana = await desk.tickets.authenticate(cust_key.key)
    assert dana == Principal(kind="customer", id="dana", organisation_id="acme")
    used = _w(desk, lambda tx: a.keys(tx))
    assert {k.id: k.last_used_at for k in used}[cust_key.record.id] is not None
    _w(desk, lambda tx: a.revoke_key(tx, ROOT, cust_key.record.id))
    assert await desk.tickets.authenticate(cust_key.key) is None
    assert (await a.authenticate_key(cust_key.key))[1] is True
    _refused(desk, "admin.key_revoked", lambda tx: a.revoke_key(tx, ROOT, cust_key.record.id))
    _refused(desk, "admin.unknown_key", lambda tx: a.revoke_key(tx, ROOT, "nope"))
    # Disabling the organisation stops its customers' keys; demoting stops admin keys.
    key2 = _w(
        desk,
        lambda tx: a.issue_key(tx, ROOT, NewKey(name="ci2", scope="customer", owner_id="dana")),
    )
    _w(desk, lambda tx: a.set_organisation_disabled(tx, ROOT, "acme", True))
    assert await desk.tickets.authenticate(key2.key) is None
    _w(desk, lambda tx: a.set_organisation_disabled(tx, ROOT, "acme", False))
    assert await desk.tickets.authenticate(key2.key) is not None


async def test_app_rotation_overlap_and_disable(desk: DeskComponent, desk_clock: FakeClock) -> None:
    made = _setup(desk)
    a = desk.admin
    seen: list[dict[str, tuple[str, ...]]] = []
    a.on_apps_changed = lambda secrets: seen.append(dict(secrets))
    old = made["app"].secret
    new = await a.write(
        lambda tx: a.rotate_app_secret(tx, ROOT, "acme-chat", Rotation(overlap_s=60))
    )
    assert seen[-1]["acme-chat"] == (new.secret, old)
    assert new.app.previous_secret_until is not None
    desk_clock.advance(61)
    await a.publish_app_secrets()
    assert seen[-1]["acme-chat"] == (new.secret,)
    await a.write(lambda tx: a.set_app_disabled(tx, ROOT, "acme-chat", True))
    assert "acme-chat" not in seen[-1]
    _refused(
        desk,
        "admin.app_disabled",
        lambda tx: a.rotate_app_secret(tx, ROOT, "acme-chat", Rotation()),
    )


def test_every_action_is_audited(desk: DeskComponent) -> None:
    _setup(desk)
    a = desk.admin
    page = _w(desk, lambda tx: a.audit_log(tx, limit=100))
    actions = [e.action for e in reversed(page.entries)]
    assert actions == [
        "admin.initialised",
        "plan.saved",
        "organisation.created",
        "organisation.created",
        "app.created",
        "agent.invited",
        "customer.invited",
    ]
    assert {(e.actor, e.address) for e in page.entries} == {("cli:test", "local")}
    assert page.entries[0].target == "customer:dana"
    two = _w(desk, lambda tx: a.audit_log(tx, limit=2))
    rest = _w(desk, lambda tx: a.audit_log(tx, limit=10, before=two.next_before))
    assert len(two.entries) + len(rest.entries) == len(actions)


def test_public_names_are_pinned() -> None:
    import relaydesk.desk.admin as admin

    assert set(admin.__all__) == {
        "Actor",
        "AdminErrorCode",
        "AdminService",
        "AgentChange",
        "AppSecret",
        "AppSecrets",
        "AppView",
        "AttachApp",
        "AuditEntry",
        "AuditPage",
        "Invitation",
        "IssuedKey",
        "KeyOwner",
        "KeyView",
        "Link",
        "NewAgent",
        "NewApp",
        "NewCustomer",
        "NewKey",
        "NewOrganisation",
        "NewPlan",
        "OrganisationChange",
        "OrganisationView",
        "PersonView",
        "PlanView",
        "Rotation",
    }
    for name in admin.__all__:
        assert hasattr(admin, name)
    codes = [c.value for c in admin.AdminErrorCode]
    assert len(codes) == len(set(codes))
    assert admin.AdminErrorCode.APP_ATTACHED_ELSEWHERE.http_status == 409
    assert admin.AdminErrorCode.NOT_ADMIN.http_status == 403


async def test_a_plan_pins_a_policy_version_or_follows_the_latest(desk: DeskComponent) -> None:
    import msgspec

    from relaydesk.desk.sla import default_policy

    _setup(desk)
    a = desk.admin
    v2 = msgspec.structs.replace(default_policy(), version=2)
    desk.admin.write_sync(lambda tx: desk.tickets.put_policy_tx(tx, v2, desk.tickets.now()))
    pinned = _w(
        desk, lambda tx: a.put_plan(tx, ROOT, NewPlan(id="gold", name="Gold", policy_version=1))
    )
    assert (pinned.policy_version, pinned.pinned) == (1, True)
    _refused(
        desk,
        "admin.unknown_policy",
        lambda tx: a.put_plan(tx, ROOT, NewPlan(id="gold", name="G", policy_version=9)),
    )
    dana = Principal(kind="customer", id="dana", organisation_id="acme")
    t1 = await desk.tickets.create_ticket(dana, NewTicket(subject="pinned"))
    assert (t1.policy_id, t1.policy_version) == ("default", 1)
    latest = _w(desk, lambda tx: a.put_plan(tx, ROOT, NewPlan(id="gold", name="Gold")))
    assert (latest.policy_version, latest.pinned) == (2, False)
    t2 = await desk.tickets.create_ticket(dana, NewTicket(subject="latest"))
    assert t2.policy_version == 2

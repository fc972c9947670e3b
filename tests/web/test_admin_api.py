"""/api/admin through Litestar's TestClient on a real SQLite database: scopes, errors,
transactions, the audit log's actor and address, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.testing import TestClient

from relaydesk.clock import FakeClock
from relaydesk.config import Settings
from relaydesk.desk.admin import Actor, NewAgent, NewCustomer, NewKey, NewOrganisation, NewPlan
from relaydesk.desk.component import DeskComponent, open_desk
from relaydesk.storage import open_database
from relaydesk.storage.messages import messaging_migrations
from relaydesk.web.admin_api import admin_router

Client = TestClient[Litestar]
CLI = Actor(who="cli:test")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Client, DeskComponent, dict[str, str]]]:
    db = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate("messaging", messaging_migrations(db.dialect))
    desk = open_desk(db, Settings(), FakeClock(1_800_000_000.0), None)
    a = desk.admin

    def run(tx: Any) -> dict[str, str]:
        a.initialise(tx, CLI, NewAgent(id="root", name="Root", email="root@ops.example"))
        a.put_plan(tx, CLI, NewPlan(id="gold", name="Gold"))
        a.create_organisation(tx, CLI, NewOrganisation(id="acme", name="Acme", plan_id="gold"))
        a.invite_agent(tx, CLI, NewAgent(id="alice", name="Alice", email="alice@d.example"))
        a.invite_customer(
            tx, CLI, NewCustomer(id="dana", organisation_id="acme", name="D", email="d@a.example")
        )
        return {
            who: a.issue_key(tx, CLI, NewKey(name=who, scope=scope, owner_id=owner)).key
            for who, scope, owner in (
                ("admin", "admin", "root"),
                ("agent", "agent", "alice"),
                ("customer", "customer", "dana"),
            )
        }

    keys = a.write_sync(run)
    app = Litestar(
        route_handlers=[admin_router(a), desk.router],
        openapi_config=OpenAPIConfig(title="t", version="1", path="/api/docs"),
    )
    with TestClient(app) as client:
        yield client, desk, {k: f"Bearer {v}" for k, v in keys.items()}
    db.close_sync()


def _err(resp: Any, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code, resp.text


def test_only_admin_keys_reach_the_api(setup: tuple[Client, DeskComponent, dict[str, str]]) -> None:
    client, _desk, auth = setup
    _err(client.get("/api/admin/organisations"), 401, "auth.missing_key")
    _err(
        client.get("/api/admin/organisations", headers={"Authorization": "Bearer rdk_x"}),
        401,
        "auth.invalid_key",
    )
    for who in ("agent", "customer"):
        r = client.get("/api/admin/organisations", headers={"Authorization": auth[who]})
        _err(r, 403, "auth.not_admin")
    ok = client.get("/api/admin/organisations", headers={"Authorization": auth["admin"]})
    assert ok.status_code == 200 and [o["id"] for o in ok.json()] == ["acme"]


def test_revocation_takes_effect_at_once(
    setup: tuple[Client, DeskComponent, dict[str, str]],
) -> None:
    client, _desk, auth = setup
    h = {"Authorization": auth["admin"]}
    made = client.post(
        "/api/admin/keys", json={"name": "tmp", "scope": "customer", "owner_id": "dana"}, headers=h
    )
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["record"]["id"]
    dana = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/desk/tickets", headers=dana).status_code == 200
    listed = client.get("/api/admin/keys", headers=h).json()
    assert all("key" not in k for k in listed)
    assert {k["id"]: k["last_used_at"] for k in listed}[key_id] is not None
    assert client.post(f"/api/admin/keys/{key_id}/revoke", headers=h).status_code == 200
    _err(client.get("/api/desk/tickets", headers=dana), 401, "auth.invalid_key")
    _err(client.get("/api/admin/keys", headers=dana), 401, "auth.revoked_key")
    _err(client.post(f"/api/admin/keys/{key_id}/revoke", headers=h), 409, "admin.key_revoked")


def test_errors_are_documented_codes_and_nothing_is_half_created(
    setup: tuple[Client, DeskComponent, dict[str, str]],
) -> None:
    client, _desk, auth = setup
    h = {"Authorization": auth["admin"]}
    _err(
        client.post(
            "/api/admin/organisations",
            json={"id": "acme", "name": "A", "plan_id": "gold"},
            headers=h,
        ),
        409,
        "admin.organisation_exists",
    )
    _err(
        client.post(
            "/api/admin/organisations",
            json={"id": "Bad Id", "name": "A", "plan_id": "gold"},
            headers=h,
        ),
        422,
        "admin.invalid",
    )
    _err(
        client.post("/api/admin/apps", json={"id": "x", "organisation_id": "nope"}, headers=h),
        404,
        "admin.unknown_organisation",
    )
    assert [a["id"] for a in client.get("/api/admin/apps", headers=h).json()] == []
    _err(
        client.post(
            "/api/admin/customers",
            json={"id": "e", "organisation_id": "acme", "name": "E", "email": "D@A.example"},
            headers=h,
        ),
        409,
        "admin.duplicate_email",
    )
    _err(client.post("/api/admin/people/agent/root/disable", headers=h), 409, "admin.last_admin")
    _err(
        client.get("/api/admin/audit?before=99999999999999999999", headers=h), 422, "admin.invalid"
    )
    made = client.post(
        "/api/admin/apps", json={"id": "acme-chat", "organisation_id": "acme"}, headers=h
    )
    assert made.status_code == 201 and len(made.json()["secret"]) >= 32
    rotated = client.post("/api/admin/apps/acme-chat/rotate", json={"overlap_s": 60}, headers=h)
    assert rotated.status_code == 200 and rotated.json()["app"]["previous_secret_until"]
    log = client.get("/api/admin/audit?limit=2", headers=h).json()
    top = log["entries"][0]
    assert (top["action"], top["actor"], top["target"]) == (
        "app.secret_rotated",
        "agent:root",
        "acme-chat",
    )
    assert top["address"] == "testclient"
    assert log["next_before"] is not None


def test_openapi_documents_the_admin_api(
    setup: tuple[Client, DeskComponent, dict[str, str]],
) -> None:
    client, _desk, _auth = setup
    paths = client.get("/api/docs/openapi.json").json()["paths"]
    for path in (
        "/api/admin/organisations",
        "/api/admin/organisations/{org_id}/apps",
        "/api/admin/agents",
        "/api/admin/customers",
        "/api/admin/keys",
        "/api/admin/keys/{key_id}/revoke",
        "/api/admin/apps/{app_id}/rotate",
        "/api/admin/audit",
    ):
        assert path in paths, path

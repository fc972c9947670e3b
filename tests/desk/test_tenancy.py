"""Tenancy: a ticket may name only its organisation's apps (issue #10, medium row).

Before the check, a customer of one organisation could file a ticket naming another
tenant's app, and the public auto-acknowledgement then described that tenant's devices.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from desk_testkit import ALICE, DANA, FRANK, issue_keys
from litestar import Litestar
from litestar.testing import TestClient

from relaydesk.desk.component import DeskComponent
from relaydesk.desk.tickets.errors import DeskError
from relaydesk.desk.tickets.model import NewTicket
from relaydesk.storage.engine import Database


def _count(db: Database) -> int:
    return int(db.read_sync(lambda tx: tx.scalar("SELECT COUNT(*) FROM desk_tickets")))


async def test_customer_cannot_name_another_tenants_app(
    desk: DeskComponent, desk_db: Database
) -> None:
    before = _count(desk_db)
    for app in ("globex-iot", "no-such-app"):
        with pytest.raises(DeskError) as err:
            await desk.tickets.create_ticket(DANA, NewTicket(subject="x", app_id=app))
        assert err.value.code == "ticket.unknown_app" and err.value.status == 422
        # Same message shape for a foreign app and a missing one: nothing is confirmed.
        assert "organisation 'acme' has no app" in err.value.message
    assert _count(desk_db) == before
    own = await desk.tickets.create_ticket(DANA, NewTicket(subject="x", app_id="acme-chat"))
    assert own.app_id == "acme-chat"
    theirs = await desk.tickets.create_ticket(FRANK, NewTicket(subject="y", app_id="globex-iot"))
    assert theirs.organisation_id == "globex"


async def test_agents_filing_for_a_customer_are_held_to_the_same_rule(
    desk: DeskComponent,
) -> None:
    with pytest.raises(DeskError) as err:
        await desk.tickets.create_ticket(
            ALICE, NewTicket(subject="x", requester_id="dana", app_id="globex-iot")
        )
    assert err.value.code == "ticket.unknown_app"
    ok = await desk.tickets.create_ticket(
        ALICE, NewTicket(subject="x", requester_id="frank", app_id="globex-iot")
    )
    assert ok.organisation_id == "globex"


@pytest.fixture
def api(desk: DeskComponent, desk_db: Database) -> Iterator[tuple[Any, dict[str, str]]]:
    keys = issue_keys(desk, desk_db)
    with TestClient(Litestar(route_handlers=[desk.router])) as client:
        yield client, {who: f"Bearer {key}" for who, key in keys.items()}


def test_desk_api_answers_the_documented_code(api: tuple[Any, dict[str, str]]) -> None:
    client, auth = api
    r = client.post(
        "/api/desk/tickets",
        json={"subject": "Lost messages", "app_id": "globex-iot"},
        headers={"Authorization": auth["dana"]},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "ticket.unknown_app"
    r = client.post(
        "/api/desk/tickets",
        json={"subject": "Lost messages", "app_id": "acme-chat"},
        headers={"Authorization": auth["dana"]},
    )
    assert r.status_code == 201

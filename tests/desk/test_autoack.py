"""Auto-acknowledgement on a real SQLite desk: note + public comment, acknowledged_at set,
first response untouched, priority unchanged, idempotent; the diagnosis API's auth."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import msgspec
import pytest
from desk_testkit import ALICE, DANA, MONDAY_10, issue_keys
from litestar import Litestar
from litestar.testing import TestClient

from relaydesk.clock import FakeClock
from relaydesk.config import Settings
from relaydesk.desk.autoack import AutoAcknowledger, infer_symptom, suggest_priority
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.diagnosis import Evidence, Finding
from relaydesk.desk.diagnosis.adapter import TelemetrySnapshots, run_settings
from relaydesk.desk.diagnosis.service import DiagnosisService, knowledge_links
from relaydesk.desk.knowledge import open_knowledge
from relaydesk.desk.tickets.model import NewTicket
from relaydesk.storage.engine import Database
from relaydesk.storage.telemetry import TelemetryStore, telemetry_migrations
from relaydesk.web.diagnosis_api import diagnosis_router


@pytest.fixture
def service(desk_db: Database, desk_clock: FakeClock) -> DiagnosisService:
    desk_db.migrate("telemetry", telemetry_migrations(desk_db.dialect))
    kb = open_knowledge(desk_db, desk_clock)
    return DiagnosisService(
        desk_db,
        TelemetrySnapshots(TelemetryStore(), run_settings(Settings())),
        desk_clock,
        knowledge_links(kb.summaries),
    )


def desk_db_of(desk: DeskComponent) -> Database:
    return desk._db  # the test's own database, via the component under test


def _ticket(desk: DeskComponent, **kw: object) -> int:
    fields: dict[str, object] = {"subject": "Messages lost on Android", "priority": "P2"}
    fields.update(kw)
    return (
        desk_db_of(desk)
        .write_sync(
            lambda tx: desk.tickets.create_ticket_tx(
                tx, DANA, msgspec.convert(fields, NewTicket), desk.tickets.now()
            )
        )
        .id
    )


async def test_ticket_naming_an_app_is_acknowledged_once(
    desk: DeskComponent, desk_db: Database, desk_clock: FakeClock, service: DiagnosisService
) -> None:
    with_app = _ticket(desk, app_id="acme-chat", region="eu-west")
    without = _ticket(desk, subject="How long is history kept?")
    acker = AutoAcknowledger(desk_db, desk.tickets, service, desk_clock)
    outcomes = await acker.poll_once()
    assert [o.ticket_id for o in outcomes] == [with_app] and outcomes[0].acknowledged
    detail = await desk.tickets.detail(ALICE, with_app)
    t = detail.ticket
    assert t.acknowledged_at is not None and t.first_response_at is None
    assert t.priority == "P2" and t.status == "new"
    note, public = detail.comments
    assert not note.public and note.author_kind == "automation" and note.author_id == "diagnosis"
    assert "symptom loss" in note.body and "No findings." in note.body
    assert public.public and "automatic acknowledgement" in public.body
    assert "/console/kb/" in public.body
    # Customers see only the public comment; a second poll writes nothing.
    assert [c.public for c in (await desk.tickets.detail(DANA, with_app)).comments] == [True]
    assert await acker.poll_once() == []
    assert len((await desk.tickets.detail(ALICE, with_app)).comments) == 2
    assert (await desk.tickets.detail(ALICE, without)).ticket.acknowledged_at is None


async def test_old_tickets_are_left_alone(
    desk: DeskComponent, desk_db: Database, desk_clock: FakeClock, service: DiagnosisService
) -> None:
    _ticket(desk, app_id="acme-chat")
    desk_clock.advance(3600)
    assert await AutoAcknowledger(desk_db, desk.tickets, service, desk_clock).poll_once() == []


async def test_start_and_aclose_own_the_task(
    desk: DeskComponent, desk_db: Database, desk_clock: FakeClock, service: DiagnosisService
) -> None:
    acker = AutoAcknowledger(desk_db, desk.tickets, service, desk_clock, poll_interval_s=0.01)
    await acker.start()
    tid = _ticket(desk, app_id="acme-chat")
    import asyncio

    for _ in range(3000):  # a wait, not a time limit: a loaded machine may take seconds
        acked = (await desk.tickets.detail(ALICE, tid)).ticket.acknowledged_at is not None
        if acked and acker.stats["acknowledged"] == 1:  # the count follows the write
            break
        await asyncio.sleep(0.01)
    await acker.aclose()
    assert (await desk.tickets.detail(ALICE, tid)).ticket.acknowledged_at is not None
    assert acker.stats["acknowledged"] == 1


def test_symptoms_and_priority_suggestions() -> None:
    assert infer_symptom("Messages never arrive on iOS", "") == "loss"
    assert infer_symptom("Slow delivery", "") == "delay"
    assert infer_symptom("x", "phones keep reconnecting") == "disconnects"
    assert infer_symptom("Billing question", "") == "other"
    ev = Evidence("m", 1.0, None, MONDAY_10, MONDAY_10 + timedelta(minutes=1))
    serious = Finding("network", "node bad", [ev], 0.8, "drain", "regional-quality", "r")
    weak = msgspec.structs.replace(serious, confidence=0.5)
    assert suggest_priority("P2", [serious]) == "P1"
    assert suggest_priority("P0", [serious]) is None
    assert suggest_priority("P3", [weak]) is None


@pytest.fixture
def api(
    desk: DeskComponent, desk_db: Database, service: DiagnosisService
) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    keys = issue_keys(desk, desk_db)
    app = Litestar(route_handlers=[diagnosis_router(service, desk.tickets.authenticate)])
    with TestClient(app) as client:
        yield client, keys


def test_diagnosis_api(api: tuple[TestClient[Litestar], dict[str, str]]) -> None:
    client, keys = api
    body = {"app": "acme-chat", "from": "-1h", "to": "now", "region": "eu-west"}
    assert client.post("/api/diagnosis", json=body).status_code == 401
    dana = client.post(
        "/api/diagnosis", json=body, headers={"Authorization": f"Bearer {keys['dana']}"}
    )
    assert dana.status_code == 403 and dana.json()["error"]["code"] == "auth.forbidden"
    alice = {"Authorization": f"Bearer {keys['alice']}"}
    empty = client.post("/api/diagnosis", json=body, headers=alice)
    # nothing recorded for the app in the window: "no data", never "no problem"
    assert empty.status_code == 404, empty.text
    error = empty.json()["error"]
    assert (
        error["code"] == "diagnosis.no_data" and "no data for app 'acme-chat'" in error["message"]
    )
    long = client.post("/api/diagnosis", json={**body, "from": "-3d"}, headers=alice)
    assert long.status_code == 400 and long.json()["error"]["code"] == "diagnosis.invalid_window"
    bad = client.post("/api/diagnosis", json={**body, "from": "yesterday"}, headers=alice)
    assert bad.status_code == 400
    junk = client.post("/api/diagnosis", json={"app": "a b"}, headers=alice)
    assert junk.status_code == 422

"""The /api/desk router through Litestar's TestClient: auth, isolation, errors, queue, docs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from desk_testkit import MONDAY_10, issue_keys
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.testing import TestClient

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent
from relaydesk.storage.engine import Database

Client = TestClient[Litestar]


@pytest.fixture
def api(desk: DeskComponent, desk_db: Database) -> Iterator[tuple[Client, dict[str, str]]]:
    keys = issue_keys(desk, desk_db)
    app = Litestar(
        route_handlers=[desk.router],
        openapi_config=OpenAPIConfig(title="t", version="1", path="/api/docs"),
    )
    with TestClient(app) as client:
        yield client, {who: f"Bearer {key}" for who, key in keys.items()}


def _h(auth: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": auth[who]}


def _count(db: Database, table: str) -> int:
    return int(db.read_sync(lambda tx: tx.scalar(f"SELECT COUNT(*) FROM {table}")))


def _assert_error(resp: Any, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


def _create(client: Client, auth: dict[str, str], who: str = "dana", **fields: Any) -> Any:
    body = {"subject": "Messages lost", **fields}
    resp = client.post("/api/desk/tickets", json=body, headers=_h(auth, who))
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_missing_and_invalid_keys_are_401(api: tuple[Client, dict[str, str]]) -> None:
    client, _auth = api
    _assert_error(client.get("/api/desk/tickets"), 401, "auth.missing_key")
    _assert_error(
        client.get("/api/desk/tickets", headers={"Authorization": "Bearer rdk_nope"}),
        401,
        "auth.invalid_key",
    )
    _assert_error(
        client.get("/api/desk/tickets", headers={"Authorization": "Basic abc"}),
        401,
        "auth.invalid_key",
    )


def test_keys_are_stored_hashed(api: tuple[Client, dict[str, str]], desk_db: Database) -> None:
    _client, auth = api
    stored = desk_db.read_sync(
        lambda tx: [r[0] for r in tx.query("SELECT key_hash FROM desk_api_keys")]
    )
    raw = [v.split(" ", 1)[1] for v in auth.values()]
    assert not set(raw) & set(stored)
    assert all(len(h) == 64 for h in stored)


def test_ticket_lifecycle_over_http(api: tuple[Client, dict[str, str]]) -> None:
    client, auth = api
    t = _create(client, auth, priority="P1", tags=["android"], app_id="chat", region="eu-west")
    tid = t["id"]
    assert t["status"] == "new" and t["due_at"] == "2024-03-04T12:00:00Z"
    r = client.post(
        f"/api/desk/tickets/{tid}/comments",
        json={"body": "internal", "public": False},
        headers=_h(auth, "alice"),
    )
    assert r.status_code == 201 and r.json()["public"] is False
    r = client.post(
        f"/api/desk/tickets/{tid}/comments", json={"body": "On it"}, headers=_h(auth, "alice")
    )
    assert r.status_code == 201
    r = client.put(
        f"/api/desk/tickets/{tid}/priority", json={"priority": "P0"}, headers=_h(auth, "alice")
    )
    assert r.status_code == 200 and r.json()["priority"] == "P0"
    r = client.put(
        f"/api/desk/tickets/{tid}/assignee", json={"assignee_id": "bob"}, headers=_h(auth, "alice")
    )
    assert r.json()["assignee_id"] == "bob"
    r = client.put(
        f"/api/desk/tickets/{tid}/status", json={"status": "solved"}, headers=_h(auth, "alice")
    )
    assert r.json()["status"] == "solved"
    agent_view = client.get(f"/api/desk/tickets/{tid}", headers=_h(auth, "alice")).json()
    assert [c["body"] for c in agent_view["comments"]] == ["internal", "On it"]
    assert [e["kind"] for e in agent_view["events"]] == [
        "created",
        "comment",
        "comment",
        "status_changed",
        "priority_changed",
        "assignee_changed",
        "status_changed",
    ]
    customer_view = client.get(f"/api/desk/tickets/{tid}", headers=_h(auth, "dana")).json()
    assert [c["body"] for c in customer_view["comments"]] == ["On it"]
    assert "assignee_changed" not in {e["kind"] for e in customer_view["events"]}
    assert all(e["data"].get("public", True) for e in customer_view["events"])
    sla = client.get(f"/api/desk/tickets/{tid}/sla", headers=_h(auth, "dana")).json()
    fr = next(m for m in sla["metrics"] if m["metric"] == "first_response")
    assert fr["state"] == "achieved" and sla["priority"] == "P0"
    listed = client.get("/api/desk/tickets?tag=android", headers=_h(auth, "alice")).json()
    assert [x["id"] for x in listed["tickets"]] == [tid]


def test_other_organisation_gets_404_everywhere(
    api: tuple[Client, dict[str, str]], desk_db: Database
) -> None:
    client, auth = api
    tid = _create(client, auth)["id"]
    frank = _h(auth, "frank")
    before = _count(desk_db, "desk_ticket_events")
    _assert_error(client.get(f"/api/desk/tickets/{tid}", headers=frank), 404, "ticket.not_found")
    _assert_error(
        client.get(f"/api/desk/tickets/{tid}/sla", headers=frank), 404, "ticket.not_found"
    )
    _assert_error(
        client.post(f"/api/desk/tickets/{tid}/comments", json={"body": "x"}, headers=frank),
        404,
        "ticket.not_found",
    )
    # Same answer as for an id that does not exist at all.
    _assert_error(client.get("/api/desk/tickets/99999", headers=frank), 404, "ticket.not_found")
    assert client.get("/api/desk/tickets", headers=frank).json()["tickets"] == []
    assert _count(desk_db, "desk_ticket_events") == before


def test_customer_on_agent_endpoints_is_403(api: tuple[Client, dict[str, str]]) -> None:
    client, auth = api
    tid = _create(client, auth)["id"]
    dana = _h(auth, "dana")
    _assert_error(client.get("/api/desk/queue", headers=dana), 403, "auth.forbidden")
    _assert_error(
        client.get("/api/desk/reports/sla?from=2024-03-01&to=2024-04-01", headers=dana),
        403,
        "auth.forbidden",
    )
    _assert_error(
        client.put(f"/api/desk/tickets/{tid}/status", json={"status": "pending"}, headers=dana),
        403,
        "auth.forbidden",
    )
    _assert_error(
        client.post(
            f"/api/desk/tickets/{tid}/comments", json={"body": "x", "public": False}, headers=dana
        ),
        403,
        "auth.forbidden",
    )


def test_customer_solves_and_reopens_their_own_ticket(api: tuple[Client, dict[str, str]]) -> None:
    client, auth = api
    tid = _create(client, auth)["id"]
    url = f"/api/desk/tickets/{tid}/status"
    dana, frank = _h(auth, "dana"), _h(auth, "frank")
    _assert_error(
        client.put(url, json={"status": "solved"}, headers=frank), 404, "ticket.not_found"
    )
    _assert_error(
        client.put(url, json={"status": "open"}, headers=dana), 409, "ticket.invalid_transition"
    )
    solved = client.put(url, json={"status": "solved"}, headers=dana)
    assert solved.status_code == 200 and solved.json()["status"] == "solved"
    reopened = client.put(url, json={"status": "open"}, headers=dana)
    assert reopened.status_code == 200 and reopened.json()["status"] == "open"
    log = client.get(f"/api/desk/tickets/{tid}", headers=_h(auth, "alice")).json()["events"]
    assert [(e["kind"], e["actor_kind"]) for e in log][-2:] == [
        ("status_changed", "customer"),
        ("status_changed", "customer"),
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"subject": "x" * 201}, "request.too_long"),
        ({"subject": "x", "description": "y" * 20_001}, "request.too_long"),
        ({"subject": "x", "priority": "P9"}, "ticket.unknown_priority"),
        ({"subject": "x", "surprise": 1}, "request.invalid"),
        (
            {
                "subject": "x",
                "window_start": "2024-03-04T10:00:00Z",
                "window_end": "2024-03-04T09:00:00Z",
            },
            "ticket.invalid_window",
        ),
    ],
)
def test_bad_ticket_bodies_are_422_and_write_nothing(
    api: tuple[Client, dict[str, str]], desk_db: Database, body: dict[str, Any], code: str
) -> None:
    client, auth = api
    r = client.post("/api/desk/tickets", json=body, headers=_h(auth, "dana"))
    _assert_error(r, 422, code)
    assert _count(desk_db, "desk_tickets") == 0


def test_bad_changes(api: tuple[Client, dict[str, str]], desk_db: Database) -> None:
    client, auth = api
    tid = _create(client, auth)["id"]
    alice = _h(auth, "alice")
    url = f"/api/desk/tickets/{tid}"
    _assert_error(
        client.post(f"{url}/comments", json={"body": "z" * 20_001}, headers=alice),
        422,
        "request.too_long",
    )
    _assert_error(
        client.put(f"{url}/status", json={"status": "archived"}, headers=alice),
        422,
        "ticket.unknown_status",
    )
    _assert_error(
        client.put(f"{url}/priority", json={"priority": "urgent"}, headers=alice),
        422,
        "ticket.unknown_priority",
    )
    _assert_error(
        client.get("/api/desk/tickets?status=bogus", headers=alice), 422, "ticket.unknown_status"
    )
    for status in ("solved", "closed"):
        assert client.put(f"{url}/status", json={"status": status}, headers=alice).is_success
    before = _count(desk_db, "desk_ticket_events")
    _assert_error(
        client.put(f"{url}/status", json={"status": "pending"}, headers=alice),
        409,
        "ticket.invalid_transition",
    )
    assert _count(desk_db, "desk_ticket_events") == before


def test_queue_sorted_by_next_breach(
    api: tuple[Client, dict[str, str]], desk_clock: FakeClock
) -> None:
    client, auth = api
    p3 = _create(client, auth, subject="question", priority="P3")["id"]
    p0 = _create(client, auth, subject="down", priority="P0")["id"]
    p2 = _create(client, auth, subject="slow", priority="P2")["id"]
    desk_clock.advance(20 * 60)  # P0 first response (15 min) is now 5 min overdue
    q = client.get("/api/desk/queue", headers=_h(auth, "alice")).json()
    assert [e["ticket"]["id"] for e in q["entries"]] == [p0, p2, p3]
    assert q["entries"][0]["time_to_breach_s"] == -300.0
    # P2: one business day (8 h) from Monday 10:00 -> Tuesday 10:00 UTC.
    assert q["entries"][1]["ticket"]["due_at"] == "2024-03-05T10:00:00Z"
    limited = client.get("/api/desk/queue?limit=1", headers=_h(auth, "alice")).json()
    assert len(limited["entries"]) == 1
    _assert_error(
        client.get("/api/desk/queue?limit=0", headers=_h(auth, "alice")), 422, "request.invalid"
    )


def test_explain_endpoint(api: tuple[Client, dict[str, str]]) -> None:
    client, auth = api
    case = {
        "now": "2024-03-04T12:00:00Z",
        "events": [{"at": "2024-03-04T10:00:00Z", "kind": "created", "priority": "P1"}],
    }
    r = client.post("/api/desk/sla/explain", content=json.dumps(case), headers=_h(auth, "dana"))
    assert r.status_code == 200, r.text
    body = r.json()
    fr = next(m for m in body["sla"]["metrics"] if m["metric"] == "first_response")
    assert fr["target_at"] == "2024-03-04T12:00:00Z"


@pytest.mark.parametrize(
    ("calendar", "code"),
    [
        ({"hours": {"mon": ["09:00-12:00", "11:00-17:00"]}}, "calendar.overlap"),
        ({"hours": {"mon": ["09:00-09:00"]}}, "calendar.empty_interval"),
        ({"hours": {}}, "calendar.no_hours"),
        (
            {"hours": {"mon": ["09:00-17:00"]}, "holiday_country": "XX"},
            "calendar.unknown_holiday_country",
        ),
        (
            {"hours": {"mon": ["09:00-17:00"]}, "timezone": "Mars/Olympus"},
            "calendar.unknown_timezone",
        ),
    ],
)
def test_bad_calendars_are_422_with_engine_code(
    api: tuple[Client, dict[str, str]], desk_db: Database, calendar: dict[str, Any], code: str
) -> None:
    client, auth = api
    case = {
        "now": "2024-03-04T12:00:00Z",
        "calendars": {"business": calendar},
        "events": [{"at": "2024-03-04T10:00:00Z", "kind": "created", "priority": "P2"}],
    }
    r = client.post("/api/desk/sla/explain", content=json.dumps(case), headers=_h(auth, "alice"))
    _assert_error(r, 422, code)
    before = desk_db.read_sync(lambda tx: tx.query("SELECT name, body FROM desk_calendars"))
    r = client.put(
        "/api/desk/sla/calendars/business", content=json.dumps(calendar), headers=_h(auth, "alice")
    )
    _assert_error(r, 422, code)
    after = desk_db.read_sync(lambda tx: tx.query("SELECT name, body FROM desk_calendars"))
    assert before == after


def test_put_calendar_changes_future_sla(api: tuple[Client, dict[str, str]]) -> None:
    client, auth = api
    cal = {
        "hours": {d: ["08:00-20:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        "timezone": "Europe/London",
    }
    r = client.put(
        "/api/desk/sla/calendars/business", content=json.dumps(cal), headers=_h(auth, "alice")
    )
    assert r.status_code == 200, r.text
    _assert_error(
        client.put(
            "/api/desk/sla/calendars/business", content=json.dumps(cal), headers=_h(auth, "dana")
        ),
        403,
        "auth.forbidden",
    )
    t = _create(client, auth, priority="P2")
    # 8 business hours from Monday 10:00 on a 08:00-20:00 calendar: Monday 18:00.
    assert t["due_at"] == "2024-03-04T18:00:00Z"


def test_report_window_and_format_errors(api: tuple[Client, dict[str, str]]) -> None:
    client, auth = api
    alice = _h(auth, "alice")
    base = "/api/desk/reports/sla"
    _assert_error(
        client.get(f"{base}?from=2024-04-01&to=2024-03-01", headers=alice),
        422,
        "report.invalid_window",
    )
    _assert_error(
        client.get(f"{base}?from=2024-03-01&to=2024-04-01&format=xml", headers=alice),
        422,
        "report.unknown_format",
    )
    _assert_error(
        client.get(f"{base}?from=yesterday&to=2024-04-01", headers=alice), 422, "request.invalid"
    )
    _assert_error(client.get(f"{base}?to=2024-04-01", headers=alice), 422, "request.invalid")
    _create(client, auth, priority="P1")
    r = client.get(f"{base}?from=2024-03-01&to=2024-04-01", headers=alice)
    assert r.status_code == 200 and r.json()["tickets"] == 1
    r = client.get(f"{base}?from=2024-03-01&to=2024-04-01&format=csv", headers=alice)
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0] == "month,priority,metric,achieved,breached,open,attainment"


def test_openapi_documents_desk_types(api: tuple[Client, dict[str, str]]) -> None:
    client, _auth = api
    doc = client.get("/api/docs/openapi.json").json()
    assert "/api/desk/tickets" in doc["paths"]
    assert "/api/desk/queue" in doc["paths"]
    schemas = doc["components"]["schemas"]
    assert {"NewTicket", "Ticket", "QueueResponse", "CommentRequest"} <= set(schemas)
    assert schemas["NewTicket"]["properties"]["subject"]["maxLength"] == 200


def test_clock_is_injected(api: tuple[Client, dict[str, str]]) -> None:
    client, auth = api
    t = _create(client, auth)
    assert t["created_at"] == MONDAY_10.isoformat().replace("+00:00", "Z")

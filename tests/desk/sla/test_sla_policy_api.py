"""Policy versions over the desk API: list, add a version, re-apply it to a ticket (an
event in the log), and a ticket exported as a case file that replays to the same SLA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from sla_api_kit import Client, error_code, open_client

from relaydesk.desk.component import DeskComponent
from relaydesk.desk.sla import default_policy
from relaydesk.storage.engine import Database


@pytest.fixture
def api(desk: DeskComponent, desk_db: Database) -> Iterator[tuple[Client, dict[str, Any]]]:
    with open_client(desk, desk_db) as pair:
        yield pair


def _draft(**resolution: Any) -> dict[str, Any]:
    body = msgspec.to_builtins(default_policy())
    del body["id"], body["version"]
    body["name"] = "Standard 2027"
    body["targets"]["P1"]["resolution"] = {"calendar": "business", **resolution}
    return dict(body)


def _ticket(client: Client, who: dict[str, Any]) -> dict[str, Any]:
    r = client.post(
        "/api/desk/tickets", json={"subject": "x", "priority": "P1"}, headers=who["dana"]
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def _resolution(client: Client, who: dict[str, Any], ticket_id: int) -> dict[str, Any]:
    r = client.get(f"/api/desk/tickets/{ticket_id}/sla", headers=who["alice"])
    assert r.status_code == 200, r.text
    return next(m for m in r.json()["metrics"] if m["metric"] == "resolution")


def test_new_version_applies_to_new_tickets_and_on_request(
    api: tuple[Client, dict[str, Any]],
) -> None:
    client, who = api
    listed = client.get("/api/desk/sla/policies", headers=who["alice"]).json()["policies"]
    assert [(p["id"], p["version"]) for p in listed] == [("default", 1)]
    old = _ticket(client, who)  # Monday 2024-03-04 10:00 UTC, P1: end of business day
    assert (old["policy_id"], old["policy_version"]) == ("default", 1)
    assert _resolution(client, who, old["id"])["target_at"] == "2024-03-04T17:00:00Z"

    r = client.post(
        "/api/desk/sla/policies/default/versions",
        content=json.dumps(_draft(kind="end_of_nth_business_day", n=1, cutoff="15:00")),
        headers=who["alice"],
    )
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    got = client.get("/api/desk/sla/policies/default/versions/2", headers=who["alice"]).json()
    assert got["targets"]["P1"]["resolution"]["n"] == 1

    new = _ticket(client, who)
    assert new["policy_version"] == 2
    assert _resolution(client, who, new["id"])["target_at"] == "2024-03-05T17:00:00Z"
    # the old ticket keeps the version it was created under ...
    assert _resolution(client, who, old["id"])["target_at"] == "2024-03-04T17:00:00Z"
    # ... until an agent re-applies the latest one
    r = client.put(f"/api/desk/tickets/{old['id']}/sla/policy", json={}, headers=who["alice"])
    assert r.status_code == 200, r.text
    assert r.json()["policy_version"] == 2
    assert _resolution(client, who, old["id"])["target_at"] == "2024-03-05T17:00:00Z"
    log = client.get(f"/api/desk/tickets/{old['id']}", headers=who["alice"]).json()["events"]
    applied = [e for e in log if e["kind"] == "sla_policy_applied"]
    assert len(applied) == 1
    assert applied[0]["actor_id"] == "alice"
    assert applied[0]["data"] == {
        "from": {"policy_id": "default", "version": 1},
        "to": {"policy_id": "default", "version": 2},
    }
    # re-applying the version in force changes nothing and logs nothing
    client.put(
        f"/api/desk/tickets/{old['id']}/sla/policy", json={"version": 2}, headers=who["alice"]
    )
    log = client.get(f"/api/desk/tickets/{old['id']}", headers=who["alice"]).json()["events"]
    assert len([e for e in log if e["kind"] == "sla_policy_applied"]) == 1
    # and an agent may go back to version 1 explicitly
    r = client.put(
        f"/api/desk/tickets/{old['id']}/sla/policy", json={"version": 1}, headers=who["alice"]
    )
    assert r.json()["policy_version"] == 1
    # customers never see the audit entry
    theirs = client.get(f"/api/desk/tickets/{old['id']}", headers=who["dana"]).json()["events"]
    assert not [e for e in theirs if e["kind"] == "sla_policy_applied"]


def test_policy_errors(api: tuple[Client, dict[str, Any]]) -> None:
    client, who = api
    path = "/api/desk/sla/policies/default/versions"
    assert error_code(client.get("/api/desk/sla/policies", headers=who["dana"]), 403) == (
        "auth.forbidden"
    )
    r = client.post(
        path, content=json.dumps(_draft(kind="end_of_business_day")), headers=who["dana"]
    )
    assert error_code(r, 403) == "auth.forbidden"
    r = client.post(path, content=b"{", headers=who["alice"])  # as every JSON body endpoint
    assert error_code(r, 400) == "http.400"
    r = client.post(path, json={"name": "x", "targets": 5}, headers=who["alice"])
    assert error_code(r, 422) == "request.invalid"
    r = client.post(
        path, content=json.dumps(_draft(kind="end_of_nth_business_day")), headers=who["alice"]
    )
    assert error_code(r, 422) == "policy.bad_target"
    bad_cal = _draft(kind="end_of_business_day")
    bad_cal["targets"]["P1"]["resolution"]["calendar"] = "mars"
    r = client.post(path, content=json.dumps(bad_cal), headers=who["alice"])
    assert error_code(r, 422) == "policy.unknown_calendar"
    r = client.post(
        "/api/desk/sla/policies/%20bad/versions",
        content=json.dumps(_draft(kind="end_of_business_day")),
        headers=who["alice"],
    )
    assert error_code(r, 422) == "policy.bad_id"
    r = client.get("/api/desk/sla/policies/default/versions/9", headers=who["alice"])
    assert error_code(r, 422) == "sla.unknown_policy"
    t = _ticket(client, who)
    url = f"/api/desk/tickets/{t['id']}/sla/policy"
    assert error_code(client.put(url, json={}, headers=who["dana"]), 403) == "auth.forbidden"
    r = client.put(url, json={"policy_id": "gold"}, headers=who["alice"])
    assert error_code(r, 422) == "sla.unknown_policy"
    r = client.put(url, json={"version": 0}, headers=who["alice"])
    assert error_code(r, 422) == "request.invalid"
    frank_ticket = client.put(url, json={}, headers=who["frank"])
    assert error_code(frank_ticket, 404) == "ticket.not_found"
    # nothing above stored a version
    listed = client.get("/api/desk/sla/policies", headers=who["alice"]).json()["policies"]
    assert [(p["id"], p["version"]) for p in listed] == [("default", 1)]


def test_ticket_case_file_replays_to_the_same_sla(api: tuple[Client, dict[str, Any]]) -> None:
    client, who = api
    t = _ticket(client, who)
    client.post(
        f"/api/desk/tickets/{t['id']}/comments", json={"body": "on it"}, headers=who["alice"]
    )
    client.put(
        f"/api/desk/tickets/{t['id']}/status", json={"status": "pending"}, headers=who["alice"]
    )
    note = client.post(
        f"/api/desk/tickets/{t['id']}/comments",
        json={"body": "internal", "public": False},
        headers=who["alice"],
    )
    assert note.status_code == 201, note.text
    r = client.get(f"/api/desk/tickets/{t['id']}/sla/case", headers=who["dana"])
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["organisation"] == "acme"
    assert case["plan"] == {
        "id": "standard",
        "name": "Standard",
        "policy_id": "default",
        "policy_version": 1,
    }
    assert set(case["calendars"]) == {"24x7", "business"}
    assert all(e.get("public", True) for e in case["events"])  # no internal note for dana
    agents_copy = client.get(f"/api/desk/tickets/{t['id']}/sla/case", headers=who["alice"])
    assert len(agents_copy.json()["events"]) == len(case["events"]) + 1
    replay = client.post("/api/desk/sla/explain", content=json.dumps(case), headers=who["dana"])
    assert replay.status_code == 200, replay.text
    live = client.get(f"/api/desk/tickets/{t['id']}/sla", headers=who["alice"]).json()
    assert replay.json()["sla"] == live
    again = client.post("/api/desk/sla/explain", content=agents_copy.content, headers=who["alice"])
    assert again.json()["sla"] == live
    assert replay.json()["organisation"] == "acme"
    other = client.get(f"/api/desk/tickets/{t['id']}/sla/case", headers=who["frank"])
    assert error_code(other, 404) == "ticket.not_found"

"""The workspace API over HTTP (Litestar TestClient, real SQLite): attachments across
organisations, upload limits and types, safe download headers; search, views, bulk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from desk_testkit import attach_apps, issue_keys, seed_people
from litestar import Litestar
from litestar.testing import TestClient

from relaydesk.clock import FakeClock
from relaydesk.config import DeskSettings, ServerSettings, Settings
from relaydesk.desk.component import open_desk
from relaydesk.storage.engine import open_database

Client = TestClient[Litestar]
LIMIT = 4096
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def api(
    tmp_path: Path, desk_clock: FakeClock
) -> Iterator[tuple[Client, dict[str, dict[str, str]], Path]]:
    db = open_database(f"sqlite:///{tmp_path / 'd.db'}")
    settings = Settings(
        server=ServerSettings(data_dir=str(tmp_path / "data")),
        desk=DeskSettings(auto_assign=False, attachment_max_bytes=LIMIT),
    )
    desk = open_desk(db, settings, desk_clock, None)
    seed_people(desk.tickets, db)
    attach_apps(desk)
    keys = issue_keys(desk, db)
    app = Litestar(route_handlers=[desk.router, desk.workspace_router])
    with TestClient(app) as client:
        yield client, {w: {"Authorization": f"Bearer {k}"} for w, k in keys.items()}, tmp_path
    db.close_sync()


def _ticket(client: Client, h: dict[str, str], subject: str) -> int:
    r = client.post("/api/desk/tickets", json={"subject": subject}, headers=h)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _upload(client: Client, h: dict[str, str], tid: int, name: str, data: bytes, **q: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/desk/tickets/{tid}/attachments",
        params={"filename": name, **q},
        content=data,
        headers={**h, "Content-Type": "application/octet-stream"},
    )


def test_attachments_are_confined_to_their_organisation(
    api: tuple[Client, dict[str, dict[str, str]], Path],
) -> None:
    client, h, tmp = api
    acme = _ticket(client, h["dana"], "Doctor report attached")
    globex = _ticket(client, h["frank"], "Our own ticket")
    r = _upload(client, h["dana"], acme, "doctor report.json", b'{"ok": true}')
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta["filename"] == "doctor report.json" and meta["size"] == 12
    assert meta["content_type"] == "application/json" and meta["public"] is True
    # Stored under the data directory by content hash.
    assert (tmp / "data" / "attachments" / meta["sha256"][:2] / meta["sha256"]).is_file()
    url = meta["url"]

    # The requester's organisation and agents may read it ...
    for who in ("dana", "alice"):
        got = client.get(url, headers=h[who])
        assert got.status_code == 200 and got.content == b'{"ok": true}'
        assert got.headers["content-type"].startswith("application/json")
        assert got.headers["content-disposition"].startswith("attachment;")
        assert "filename*=UTF-8''doctor%20report.json" in got.headers["content-disposition"]
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in got.headers["content-security-policy"]
    # ... another organisation gets exactly what a missing id gets.
    other = client.get(url, headers=h["frank"])
    missing = client.get("/api/desk/attachments/999999", headers=h["frank"])
    assert other.status_code == missing.status_code == 404
    assert (
        other.json()["error"]["code"] == missing.json()["error"]["code"] == "attachment.not_found"
    )
    assert (
        client.get(f"/api/desk/tickets/{acme}/attachments", headers=h["frank"]).status_code == 404
    )
    assert _upload(client, h["frank"], acme, "x.txt", b"hi").status_code == 404
    assert _upload(client, h["frank"], globex, "x.txt", b"hi").status_code == 201

    # An agent's internal attachment is invisible to the customer, listing and download.
    r = _upload(client, h["alice"], acme, "heap.txt", b"internal", public="false")
    assert r.status_code == 201, r.text
    internal_url = r.json()["url"]
    assert client.get(internal_url, headers=h["dana"]).status_code == 404
    assert client.get(internal_url, headers=h["alice"]).status_code == 200
    listed = client.get(f"/api/desk/tickets/{acme}/attachments", headers=h["dana"]).json()
    assert [a["filename"] for a in listed["attachments"]] == ["doctor report.json"]
    assert _upload(client, h["dana"], acme, "x.txt", b"hi", public="false").status_code == 403
    # Images are shown inline; everything else downloads.
    r = _upload(client, h["dana"], acme, "shot.png", PNG)
    assert r.status_code == 201
    assert (
        client.get(r.json()["url"], headers=h["dana"])
        .headers["content-disposition"]
        .startswith("inline;")
    )


def test_upload_limits_and_types(api: tuple[Client, dict[str, dict[str, str]], Path]) -> None:
    client, h, _ = api
    tid = _ticket(client, h["dana"], "Limits")

    def code(r) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        return r.status_code, r.json()["error"]["code"]

    assert _upload(client, h["dana"], tid, "big.log", b"x" * LIMIT).status_code == 201
    assert code(_upload(client, h["dana"], tid, "big.log", b"x" * (LIMIT + 1))) == (
        413,
        "attachment.too_large",
    )
    for name, data in (
        ("page.html", b"<script>alert(1)</script>"),
        ("logo.svg", b"<svg/>"),
        ("fake.png", b"<html>not a png</html>"),
        ("bin.txt", b"\xff\xfe\x00bad"),
    ):
        assert code(_upload(client, h["dana"], tid, name, data)) == (
            415,
            "attachment.type_not_allowed",
        ), name
    assert code(_upload(client, h["dana"], tid, "noext", b"abc")) == (422, "attachment.bad_name")
    assert code(_upload(client, h["dana"], tid, "empty.txt", b"")) == (422, "attachment.empty")
    # Path parts and quotes never reach the stored name.
    r = _upload(client, h["dana"], tid, '../../etc/"passwd".txt', b"root")
    assert r.status_code == 201 and r.json()["filename"] == "passwd.txt"


def test_search_views_bulk_over_http(api: tuple[Client, dict[str, dict[str, str]], Path]) -> None:
    client, h, _ = api
    a = _ticket(client, h["dana"], "Push notifications missing on iOS")
    b = _ticket(client, h["frank"], "Push for globex")
    r = client.get("/api/desk/search", params={"q": "push notification"}, headers=h["alice"])
    assert r.status_code == 200 and [x["ticket"]["id"] for x in r.json()["rows"]] == [a]
    r = client.get("/api/desk/search", params={"q": "push"}, headers=h["frank"])
    assert [x["ticket"]["id"] for x in r.json()["rows"]] == [b]
    r = client.get(
        "/api/desk/views/unassigned",
        params={"sort": "created", "order": "desc"},
        headers=h["alice"],
    )
    assert [x["ticket"]["id"] for x in r.json()["rows"]] == [b, a] and r.json()["total"] == 2
    assert client.get("/api/desk/views/unassigned", headers=h["dana"]).status_code == 403
    assert client.get("/api/desk/views/nope", headers=h["alice"]).status_code in (404, 422)
    counts = client.get("/api/desk/views", headers=h["alice"]).json()["counts"]
    assert counts["unassigned"] == 2 and counts["at_risk"] == 0
    r = client.post(
        "/api/desk/bulk", json={"ticket_ids": [a, b], "assignee_id": "bob"}, headers=h["alice"]
    )
    assert r.status_code == 200 and all(x["ok"] for x in r.json()["results"])
    assert (
        client.post(
            "/api/desk/bulk", json={"ticket_ids": [a], "status": "open"}, headers=h["dana"]
        ).status_code
        == 403
    )

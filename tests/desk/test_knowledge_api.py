"""The /api/kb router through Litestar's TestClient: anonymous and keyed reads, errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from desk_testkit import issue_keys
from litestar import Litestar
from litestar.testing import TestClient

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.knowledge import open_knowledge
from relaydesk.storage.engine import Database
from relaydesk.web.knowledge_api import knowledge_router

Client = TestClient[Litestar]


@pytest.fixture
def api(desk: DeskComponent, desk_db: Database) -> Iterator[tuple[Client, dict[str, str]]]:
    keys = issue_keys(desk, desk_db)
    kb = open_knowledge(desk_db, FakeClock())
    app = Litestar(route_handlers=[knowledge_router(kb, desk.tickets.authenticate)])
    with TestClient(app) as client:
        yield client, {who: f"Bearer {key}" for who, key in keys.items()}


def test_anonymous_search_suggest_and_read(api: tuple[Client, dict[str, str]]) -> None:
    client, _ = api
    r = client.get("/api/kb/search", params={"q": "messages arrive late queue wait"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["slug"] == "message-delay"
    assert "<mark>" in body["hits"][0]["snippet_html"]
    assert body["hits"][0]["url"] == "/console/kb/message-delay"
    s = client.get("/api/kb/suggest", params={"q": "Reconnect loop after token exp"})
    assert s.status_code == 200 and s.json()["hits"][0]["slug"] == "tokens-and-auth"
    a = client.get("/api/kb/articles/capacity-settings")
    assert a.status_code == 200 and "storage.commit_batch_max" in a.json()["body"]
    listed = {x["slug"] for x in client.get("/api/kb/articles").json()["articles"]}
    assert "message-loss" in listed and "reading-diagnosis" not in listed


def test_agents_read_internal_articles(api: tuple[Client, dict[str, str]]) -> None:
    client, auth = api
    path = "/api/kb/articles/reading-diagnosis"
    assert client.get(path).status_code == 404
    assert client.get(path, headers={"Authorization": auth["dana"]}).status_code == 404
    r = client.get(path, headers={"Authorization": auth["alice"]})
    assert r.status_code == 200 and r.json()["audience"] == "internal"


def test_errors_have_stable_codes(api: tuple[Client, dict[str, str]]) -> None:
    client, _ = api
    bad = client.get("/api/kb/search", params={"q": "x"}, headers={"Authorization": "Bearer no"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "auth.invalid_key"
    basic = client.get("/api/kb/search", params={"q": "x"}, headers={"Authorization": "Basic a"})
    assert basic.status_code == 401
    missing = client.get("/api/kb/articles/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "kb.not_found"
    assert client.get("/api/kb/search").status_code in (400, 422)
    huge = client.get("/api/kb/search", params={"q": "x" * 5000})
    assert huge.status_code in (400, 422) and "error" in huge.json()
    assert client.get("/api/kb/search", params={"q": "a", "kind": "blog"}).status_code in (
        400,
        422,
    )


@pytest.mark.parametrize("q", ['"', "NEAR(", "*", "a OR", "<script>", "\u0000"])
def test_fts_syntax_is_not_an_error(api: tuple[Client, dict[str, str]], q: str) -> None:
    client, _ = api
    for path in ("/api/kb/search", "/api/kb/suggest"):
        r = client.get(path, params={"q": q})
        assert r.status_code == 200, (path, q, r.text)


def test_kind_filter(api: tuple[Client, dict[str, str]]) -> None:
    client, _ = api
    r = client.get("/api/kb/search", params={"q": "token", "kind": "faq"})
    assert r.status_code == 200
    assert {h["kind"] for h in r.json()["hits"]} == {"faq"}

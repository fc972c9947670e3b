"""The messaging HTTP API: server-side publish, history, channels, presence, ops."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from raw_client import Raw

from relaydesk.protocol.frames import Join


@pytest.fixture
def api(running_server: Any) -> httpx.Client:
    return running_server.admin()


def test_health_and_readiness(running_server: Any) -> None:
    assert httpx.get(running_server.http_url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(running_server.http_url + "/readyz").json()
    assert ready["ready"] is True and ready["node"] == "node-1"


def test_openapi_document_lists_the_messaging_api(running_server: Any) -> None:
    doc = httpx.get(running_server.http_url + "/api/docs/openapi.json").json()
    assert "/v1/apps/{app}/publish" in doc["paths"]


async def test_server_publish_reaches_a_connected_user(
    running_server: Any, api: httpx.Client
) -> None:
    bob = await Raw.login(running_server.ws_url, running_server.token("bob"))
    r = api.post(
        "/apps/demo/publish",
        json={"sender": "alerts", "to": "user:bob", "id": "a-1", "text": "disk almost full"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["conv"], body["seq"]) == ("dm:alerts:bob", 1)
    (event,) = await bob.events_until(1)
    assert (event.sender, event.body, event.seq) == ("alerts", b"disk almost full", 1)
    again = api.post(
        "/apps/demo/publish",
        json={"sender": "alerts", "to": "user:bob", "id": "a-1", "text": "disk almost full"},
    )
    assert again.json()["pos"] == body["pos"]  # idempotent on the id


def test_publish_to_channel_and_page_history(running_server: Any, api: httpx.Client) -> None:
    assert api.post("/apps/demo/channels/news", json={"public": False}).status_code == 200
    for i in range(5):
        r = api.post(
            "/apps/demo/publish",
            json={
                "sender": "bot",
                "to": "channel:news",
                "id": f"n{i}",
                "body_b64": base64.b64encode(bytes([i])).decode(),
            },
        )
        assert r.status_code == 200
    page = api.get("/apps/demo/history", params={"conv": "ch:news", "limit": 2}).json()
    assert [e["seq"] for e in page["items"]] == [4, 5] and page["more"] is True
    page = api.get("/apps/demo/history", params={"conv": "ch:news", "before": 4}).json()
    assert [e["seq"] for e in page["items"]] == [1, 2, 3] and page["more"] is False
    # A user token may read only as a member.
    carol = {"Authorization": f"Bearer {running_server.token('carol')}"}
    r = httpx.get(
        running_server.http_url + "/v1/apps/demo/history", params={"conv": "ch:news"}, headers=carol
    )
    assert r.status_code == 403 and r.json()["error"]["name"] == "FORBIDDEN"
    assert api.post("/apps/demo/channels/news/members", json={"user": "carol"}).status_code == 200
    r = httpx.get(
        running_server.http_url + "/v1/apps/demo/history", params={"conv": "ch:news"}, headers=carol
    )
    assert r.status_code == 200 and len(r.json()["items"]) == 5


async def test_public_channel_can_be_joined_without_a_grant(
    running_server: Any, api: httpx.Client
) -> None:
    api.post("/apps/demo/channels/open", json={"public": True})
    raw = await Raw.login(running_server.ws_url, running_server.token("dave"))
    await raw.send(Join(rid=1, channel="open"))
    assert (await raw.expect("joined")).role == "member"


def test_presence_query(running_server: Any, api: httpx.Client) -> None:
    r = api.get("/apps/demo/presence", params={"users": "nobody,else"})
    assert r.status_code == 200
    assert [p["online"] for p in r.json()] == [False, False]


@pytest.mark.parametrize(
    ("headers", "status", "name"),
    [
        ({}, 401, "TOKEN_INVALID"),
        ({"Authorization": "Bearer wrong-secret"}, 403, "FORBIDDEN"),
        ({"Authorization": "Basic abc"}, 401, "TOKEN_INVALID"),
    ],
)
def test_unauthorised(running_server: Any, headers: dict[str, str], status: int, name: str) -> None:
    r = httpx.post(
        running_server.http_url + "/v1/apps/demo/publish",
        headers=headers,
        json={"sender": "x", "to": "user:y", "id": "1", "text": "t"},
    )
    assert r.status_code == status and r.json()["error"]["name"] == name


def test_unknown_app_is_forbidden(running_server: Any) -> None:
    r = httpx.post(
        running_server.http_url + "/v1/apps/nope/publish",
        headers={"Authorization": f"Bearer {running_server.secret}"},
        json={"sender": "x", "to": "user:y", "id": "1", "text": "t"},
    )
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"sender": "x", "to": "user:y", "id": "1"}, 400),  # no body at all
        ({"sender": "x", "to": "user:y", "id": "1", "text": "a", "body_b64": "YQ=="}, 400),
        ({"sender": "x", "to": "user:y", "id": "1", "body_b64": "***"}, 400),
        ({"sender": "bad sender", "to": "user:y", "id": "1", "text": "a"}, 400),
        ({"sender": "x", "to": "mars:y", "id": "1", "text": "a"}, 400),
        ({"sender": "x", "to": "user:y", "id": "1", "text": "a", "extra": 1}, 400),
        ({"sender": "x", "to": "user:y", "id": "1", "text": "a" * 40_000}, 413),
    ],
)
def test_malformed_and_oversized(api: httpx.Client, payload: dict[str, Any], status: int) -> None:
    r = api.post("/apps/demo/publish", json=payload)
    assert r.status_code == status, r.text


def test_malformed_json(api: httpx.Client) -> None:
    r = api.post(
        "/apps/demo/publish", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400

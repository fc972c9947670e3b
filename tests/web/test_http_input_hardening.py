"""Hostile input to the HTTP APIs and the console answers 4xx in the documented shape.

Each case here was an HTTP 500 (most before authentication) in the 2026-12-02 audit:
JSON nested 1,000+ deep, a NUL in a static path, ids at or over 2^63, digits of other
scripts (``'١٢٣'`` passes ``str.isdigit``), an empty calendar body, and paths under an
API prefix that match no route (answered in the framework's shape, not the API's).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from console_kit import ConsoleNode, sign_in

from relaydesk.server.storage_setup import DEMO_SECRET

TOO_BIG = str(2**63)
ARABIC_12 = "\u0661\u0662"  # '١٢'
SECRET = {"Authorization": f"Bearer {DEMO_SECRET}"}


def desk_key(node: ConsoleNode, who: str = "agent:alice") -> dict[str, str]:
    found = re.search(rf"desk key\s+{re.escape(who)}\s+(rdk_\S+)", node.log.read_text())
    assert found, "no demo desk key in the node's log"
    return {"Authorization": f"Bearer {found.group(1)}"}


def assert_desk_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error["code"], str) and error["message"], error


def assert_messaging_error(r: httpx.Response, status: int, name: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error["code"], int) and error["name"] == name and error["message"], error


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


JSON_BODY_ROUTES = [
    ("POST", "/api/desk/tickets", "desk"),
    ("PUT", "/api/desk/tickets/1/status", "desk"),
    ("POST", "/api/desk/tickets/1/comments", "desk"),
    ("POST", "/api/diagnosis", "desk"),
    ("POST", "/v1/apps/demo/publish", "messaging"),
    ("POST", "/v1/apps/demo/channels/deep", "messaging"),
    ("POST", "/v1/apps/demo/channels/deep/members", "messaging"),
]


@pytest.mark.parametrize("levels", [1_000, 100_000])
@pytest.mark.parametrize("authenticated", [False, True])
def test_deeply_nested_json_is_400_in_each_api_shape(
    console_node: ConsoleNode, levels: int, authenticated: bool
) -> None:
    body = b'{"subject":' + deep(levels) + b"}" if levels == 1_000 else deep(levels)
    for method, path, family in JSON_BODY_ROUTES:
        headers = {"Content-Type": "application/json"}
        if authenticated:
            headers |= SECRET if family == "messaging" else desk_key(console_node)
        r = httpx.request(method, console_node.url + path, content=body, headers=headers)
        if family == "messaging":
            assert_messaging_error(r, 400, "INVALID_ARGUMENT")
        else:
            assert_desk_error(r, 400)
        assert "deeply" in r.json()["error"]["message"]
    assert httpx.get(console_node.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    "name", ["a%00b", "console.css%00.png", "x" * 5000, "..%2F..%2Fpyproject.toml"]
)
def test_static_paths_the_os_refuses_are_404(console_node: ConsoleNode, name: str) -> None:
    r = httpx.get(f"{console_node.url}/console/static/{name}")
    assert r.status_code == 404, r.text[:300]
    assert httpx.get(console_node.url + "/console/static/console.css").status_code == 200


def test_ids_over_storage_range_are_4xx(console_node: ConsoleNode) -> None:
    url, agent = console_node.url, desk_key(console_node)
    for path in (f"/api/desk/tickets/{TOO_BIG}", f"/api/desk/tickets/{TOO_BIG}/sla"):
        assert_desk_error(httpx.get(url + path, headers=agent), 422)
    r = httpx.post(f"{url}/api/desk/tickets/{TOO_BIG}/comments", json={"body": "hi"}, headers=agent)
    assert_desk_error(r, 422)
    assert_desk_error(httpx.get(f"{url}/api/desk/tickets?before={TOO_BIG}", headers=agent), 422)
    for param in ("before", "after"):
        r = httpx.get(
            f"{url}/v1/apps/demo/history",
            params={"conv": "ch:lobby", param: TOO_BIG},
            headers=SECRET,
        )
        assert_messaging_error(r, 400, "INVALID_ARGUMENT")
    # The largest id a request may carry is a plain "not found".
    assert_desk_error(httpx.get(f"{url}/api/desk/tickets/{2**53 - 1}", headers=agent), 404)
    assert_desk_error(httpx.get(f"{url}/api/desk/tickets/{2**53}", headers=agent), 422)
    for alias in (ARABIC_12, "+1", "1_0", " 1", "abc"):  # int() reads some of these
        assert_desk_error(httpx.get(f"{url}/api/desk/tickets/{alias}", headers=agent), 422)


def test_console_ticket_ids_out_of_range_or_in_other_scripts(console_node: ConsoleNode) -> None:
    client, csrf = sign_in(console_node, "alice@desk.example")
    try:
        for ticket in (TOO_BIG, "9" * 5000, ARABIC_12):
            assert client.get(f"/console/tickets/{ticket}").status_code in (400, 404)
        for ticket in (TOO_BIG, ARABIC_12, "-1", "0", "9" * 5000):
            r = client.post(
                "/console/live-token", params={"ticket": ticket}, headers={"X-CSRF-Token": csrf}
            )
            assert r.status_code == 400, (ticket, r.status_code, r.text[:200])
            assert r.json() == {"error": "bad_ticket"}
    finally:
        client.close()


def test_numbers_in_other_scripts_are_refused(console_node: ConsoleNode) -> None:
    url = console_node.url
    for params in (
        {"step": "\u0661\u0662\u0660"},
        {"from": ARABIC_12},
        {"to": "99999999999999999999"},
        {"from": "9" * 5000},
        {"from": "-" + "9" * 5000 + "d"},
    ):
        r = httpx.get(f"{url}/api/quality/apps/demo/series", params=params, headers=SECRET)
        assert_messaging_error(r, 400, "INVALID_ARGUMENT")
    for route in ("traces", "connections", "worst"):
        r = httpx.get(f"{url}/api/quality/apps/demo/{route}?limit={ARABIC_12}", headers=SECRET)
        assert_messaging_error(r, 400, "INVALID_ARGUMENT")
    r = httpx.get(f"{url}/api/desk/tickets?limit={ARABIC_12}", headers=desk_key(console_node))
    assert_desk_error(r, 422)
    r = httpx.get(f"{url}/v1/apps/demo/history?conv=ch:lobby&limit={ARABIC_12}", headers=SECRET)
    assert_messaging_error(r, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    "window",
    [
        {"from": ARABIC_12},
        {"from": "99999999999999999990", "to": "99999999999999999999"},
        {"from": "9" * 5000},
        {"from": "-" + "9" * 5000 + "m"},
        {"from": "0001-01-01T00:00:00Z", "to": "0001-01-01T01:00:00Z"},
    ],
)
def test_diagnosis_windows_out_of_range_are_400(
    console_node: ConsoleNode, window: dict[str, str]
) -> None:
    r = httpx.post(
        console_node.url + "/api/diagnosis",
        json={"app": "demo", **window},
        headers=desk_key(console_node),
    )
    assert_desk_error(r, 400)


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"[]"])
def test_calendar_body_that_is_not_a_calendar_is_422(
    console_node: ConsoleNode, body: bytes
) -> None:
    r = httpx.put(
        console_node.url + "/api/desk/sla/calendars/bad",
        content=body,
        headers=desk_key(console_node),
    )
    assert_desk_error(r, 422)


@pytest.mark.parametrize(
    ("method", "path", "status", "family"),
    [
        ("GET", "/api/desk/nothing-here", 404, "desk"),
        ("GET", "/api/kb/nothing-here", 404, "desk"),
        ("DELETE", "/api/desk/tickets", 405, "desk"),
        ("GET", "/v1/apps/demo/nothing-here", 404, "messaging"),
        ("DELETE", "/v1/apps/demo/publish", 405, "messaging"),
        ("GET", "/api/quality/apps/demo/nothing-here", 404, "messaging"),
    ],
)
def test_unrouted_requests_under_an_api_prefix_use_its_error_shape(
    console_node: ConsoleNode, method: str, path: str, status: int, family: str
) -> None:
    r = httpx.request(method, console_node.url + path)
    if family == "desk":
        assert_desk_error(r, status)
    else:
        assert_messaging_error(r, status, "NOT_FOUND" if status == 404 else "INVALID_ARGUMENT")


def test_api_docs_page_loads_nothing_from_another_host(console_node: ConsoleNode) -> None:
    page = httpx.get(console_node.url + "/api/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    head = page.text.split("<body", 1)[0]
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert refs, head
    for ref in refs:
        assert not re.match(r"^([a-z]+:)?//", ref, re.I), ref  # relative to this node only
        asset = httpx.get(console_node.url + ref)
        assert asset.status_code == 200 and len(asset.content) > 100, ref
    assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", head, re.I), head
    assert "SwaggerUIBundle" in page.text


def test_openapi_declares_security_and_the_real_error_bodies(console_node: ConsoleNode) -> None:
    doc: dict[str, Any] = httpx.get(console_node.url + "/api/docs/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert {"appSecret", "userToken", "operatorKey", "deskKey", "adminKey"} <= set(schemes)
    publish = doc["paths"]["/v1/apps/{app}/publish"]["post"]
    assert publish["security"] == [{"appSecret": []}]
    assert {"400", "401", "403", "409", "413"} <= set(publish["responses"])
    ticket = doc["paths"]["/api/desk/tickets/{ticket_id}"]["get"]
    assert ticket["security"] == [{"deskKey": []}]
    assert {"401", "404", "422"} <= set(ticket["responses"])
    revoke = doc["paths"]["/api/admin/keys/{key_id}/revoke"]["post"]
    assert revoke["security"] == [{"adminKey": []}]
    assert {"400", "401", "403", "404", "409", "422"} <= set(revoke["responses"])
    for op in (publish, ticket, revoke):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert "status_code" not in str(schema), (status, schema)
    bound = next(p for p in ticket["parameters"] if p["name"] == "ticket_id")["schema"]
    assert bound.get("maximum") == 2**53 - 1, bound  # exact as a double


#: (path, query parameter, largest accepted value, credential, family) for every bounded
#: ``limit``-like parameter of the HTTP APIs (docs/desk.md, "HTTP limits").
LIMITS = [
    ("/api/desk/tickets", "limit", 200, "agent", "desk"),
    ("/api/desk/queue", "limit", 500, "agent", "desk"),
    ("/api/kb/search?q=token", "limit", 50, "none", "desk"),
    ("/api/kb/suggest?q=token", "limit", 20, "none", "desk"),
    ("/v1/apps/demo/history?conv=ch:lobby", "limit", 500, "secret", "messaging"),
    ("/api/quality/apps/demo/worst", "limit", 1000, "secret", "messaging"),
    ("/api/quality/apps/demo/traces", "limit", 5000, "secret", "messaging"),
    ("/api/quality/apps/demo/connections", "limit", 5000, "secret", "messaging"),
    ("/api/quality/apps/demo/series", "step", 86_400, "secret", "messaging"),
]


@pytest.mark.parametrize(("path", "param", "most", "who", "family"), LIMITS)
def test_each_bounded_parameter_takes_its_maximum_and_refuses_more(
    console_node: ConsoleNode, path: str, param: str, most: int, who: str, family: str
) -> None:
    headers = {"agent": desk_key(console_node), "secret": SECRET, "none": {}}[who]
    sep = "&" if "?" in path else "?"
    ok = httpx.get(f"{console_node.url}{path}{sep}{param}={most}", headers=headers)
    assert ok.status_code == 200, ok.text
    over = most + (60 if param == "step" else 1)
    r = httpx.get(f"{console_node.url}{path}{sep}{param}={over}", headers=headers)
    if family == "desk":
        assert_desk_error(r, 422)
    else:
        assert_messaging_error(r, 400, "INVALID_ARGUMENT")
    assert param in r.json()["error"]["message"]


def test_presence_answers_at_most_500_users(console_node: ConsoleNode) -> None:
    users = ",".join(f"u{i}" for i in range(600))
    r = httpx.get(
        f"{console_node.url}/v1/apps/demo/presence", params={"users": users}, headers=SECRET
    )
    assert r.status_code == 200 and len(r.json()) == 500


def test_kb_query_over_2000_characters_is_422(console_node: ConsoleNode) -> None:
    r = httpx.get(f"{console_node.url}/api/kb/search", params={"q": "a" * 2001})
    assert_desk_error(r, 422)

"""Administration pages and the one-time link page of a real demo node, over HTTP."""

from __future__ import annotations

import re

import httpx
from console_kit import ConsoleNode, csrf_of, sign_in

_SECRET = re.compile(r'<code id="secret-value">([^<]+)</code>')


def _shown_once(html: str) -> str:
    found = _SECRET.search(html)
    assert found is not None, html[-2000:]
    return found.group(1).replace("&amp;", "&")


def test_only_administrators_see_the_pages(console_node: ConsoleNode) -> None:
    alice, _ = sign_in(console_node, "alice@desk.example")  # the demo's administrator
    page = alice.get("/console/admin/organisations")
    assert page.status_code == 200 and 'data-org="acme"' in page.text
    assert 'data-app="demo"' in page.text or "acme-chat" in page.text
    assert 'id="nav-admin"' in alice.get("/console/queue").text
    for email in ("bob@desk.example", "dana@acme.example"):
        other, _ = sign_in(console_node, email)
        for path in ("organisations", "people", "keys", "audit"):
            assert other.get(f"/console/admin/{path}").status_code == 403, (email, path)
    anonymous = httpx.Client(base_url=console_node.url)
    r = anonymous.get("/console/admin/people")
    assert r.status_code == 303 and "/console/sign-in" in r.headers["location"]


def test_invite_a_customer_who_then_signs_in(console_node: ConsoleNode) -> None:
    alice, csrf = sign_in(console_node, "alice@desk.example")
    # Without the CSRF token nothing happens.
    r = alice.post("/console/admin/people/customers", data={"id": "zoe"})
    assert r.status_code == 403
    r = alice.post(
        "/console/admin/people/customers",
        data={
            "csrf": csrf,
            "id": "zoe",
            "organisation_id": "acme",
            "name": "Zoe",
            "email": "zoe@acme.example",
        },
    )
    assert r.status_code == 200, r.text[-2000:]
    link = _shown_once(r.text)
    assert "/console/welcome?token=" in link
    # The same e-mail again is a documented refusal, shown on the page.
    again = alice.post(
        "/console/admin/people/customers",
        data={
            "csrf": csrf,
            "id": "zoe2",
            "organisation_id": "acme",
            "name": "Zoe",
            "email": "ZOE@acme.example",
        },
    )
    assert again.status_code == 409 and "admin.duplicate_email" in again.text
    zoe = httpx.Client(base_url=console_node.url, timeout=10)
    path = link.split(console_node.url, 1)[-1] if link.startswith("http") else link
    path = "/console/" + path.split("/console/", 1)[1]
    welcome = zoe.get(path)
    assert welcome.status_code == 200 and "zoe@acme.example" in welcome.text
    token = path.split("token=", 1)[1]
    weak = zoe.post(
        "/console/welcome",
        data={
            "csrf": csrf_of(welcome.text),
            "token": token,
            "password": "short",
            "password2": "short",
        },
    )
    assert weak.status_code == 422 and "12 characters" in weak.text
    good = "a long and fine passphrase"
    done = zoe.post(
        "/console/welcome",
        data={"csrf": csrf_of(weak.text), "token": token, "password": good, "password2": good},
    )
    assert done.status_code == 303, done.text[-1000:]
    portal = zoe.get(done.headers["location"], follow_redirects=True)
    assert "Zoe" in portal.text and "/console/portal" in str(portal.url)
    # The link works once.
    assert httpx.get(console_node.url + path).status_code == 410
    # The audit log names alice, the console's client address and the action.
    audit = alice.get("/console/admin/audit").text
    assert "customer.invited" in audit and "agent:alice" in audit and "127.0.0.1" in audit
    assert "customer.password_set" in audit


def test_keys_issued_in_the_console_work_and_revoke(console_node: ConsoleNode) -> None:
    alice, csrf = sign_in(console_node, "alice@desk.example")
    r = alice.post(
        "/console/admin/keys",
        data={"csrf": csrf, "name": "portal-bot", "scope": "customer", "owner_id": "dana"},
    )
    assert r.status_code == 200, r.text[-2000:]
    key = _shown_once(r.text)
    h = {"Authorization": f"Bearer {key}"}
    assert httpx.get(console_node.url + "/api/desk/tickets", headers=h).status_code == 200
    key_id = re.search(r"API key (k[0-9a-f]+)", r.text)
    assert key_id is not None
    revoked = alice.post("/console/admin/keys/revoke", data={"csrf": csrf, "key": key_id.group(1)})
    assert revoked.status_code == 303
    assert httpx.get(console_node.url + "/api/desk/tickets", headers=h).status_code == 401


def _demo_key(node: ConsoleNode, who: str) -> str:
    keys = re.findall(rf"desk key\s+{re.escape(who)}\s+(\S+)", node.log.read_text())
    assert keys, node.log.read_text()[-2000:]
    return keys[-1]


def test_tenancy_in_the_console_and_the_data_apis(console_node: ConsoleNode) -> None:
    dana, csrf = sign_in(console_node, "dana@acme.example")
    form = {"csrf": csrf, "subject": "Lost messages", "priority": "P2", "app_id": "globex-iot"}
    r = dana.post("/console/portal/new", data=form)
    assert r.status_code == 422 and "has no app" in r.text
    r = dana.post("/console/portal/new", data={**form, "app_id": "acme-chat"})
    assert r.status_code == 303
    # Quality and diagnosis data: a customer's desk key gets neither their own app's
    # nor another tenant's (agents and the app's own secret do).
    h = {"Authorization": f"Bearer {_demo_key(console_node, 'customer:dana')}"}
    for app in ("acme-chat", "globex-iot"):
        q = httpx.get(f"{console_node.url}/api/quality/apps/{app}/series", headers=h)
        assert q.status_code in (401, 403), q.text
    body = {"app": "globex-iot", "from": "-1h", "to": "now"}
    d = httpx.post(f"{console_node.url}/api/diagnosis/", json=body, headers=h)
    assert d.status_code == 403 and d.json()["error"]["code"] == "auth.forbidden"

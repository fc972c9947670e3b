"""Server-side rules of the console over real HTTP: CSRF, authorisation, escaping, tokens."""

from __future__ import annotations

import re
from contextlib import closing

import httpx
import jwt
import pytest
from console_kit import ConsoleNode, csrf_of, sign_in


def _new_ticket(client: httpx.Client, csrf: str, **fields: str) -> httpx.Response:
    data = {"csrf": csrf, "subject": "Console test", "priority": "P2", **fields}
    return client.post("/console/portal/new", data=data)


def test_pages_need_a_session_and_keep_the_page_to_return_to(console_node: ConsoleNode) -> None:
    with httpx.Client(base_url=console_node.url) as anonymous:
        r = anonymous.get("/console/tickets/1")
        assert r.status_code == 303
        assert r.headers["location"].startswith("/console/sign-in?next=/console/tickets/1")
        assert anonymous.get("/").headers["location"] == "/console/"


def test_sign_in_checks_password_and_csrf_and_sets_safe_cookies(console_node: ConsoleNode) -> None:
    with httpx.Client(base_url=console_node.url) as c:
        page = c.get("/console/sign-in")
        token = csrf_of(page.text)
        wrong = c.post(
            "/console/sign-in",
            data={"csrf": token, "email": "alice@desk.example", "password": "nope-nope"},
        )
        assert wrong.status_code == 401 and "Wrong e-mail or password" in wrong.text
        no_csrf = c.post(
            "/console/sign-in",
            data={"email": "alice@desk.example", "password": "demo-password"},
        )
        assert no_csrf.status_code == 403
        token = csrf_of(c.get("/console/sign-in").text)
        ok = c.post(
            "/console/sign-in",
            data={
                "csrf": token,
                "email": "ALICE@desk.example ",
                "password": "demo-password",
                "next": "https://evil.example/",
            },
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/console/"  # no open redirect
        cookie = next(
            v for k, v in ok.headers.multi_items() if k == "set-cookie" and "rd_console" in v
        )
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_csrf_missing_or_wrong_is_refused(console_node: ConsoleNode) -> None:
    client, csrf = sign_in(console_node, "alice@desk.example")
    with closing(client):
        for data in ({"body": "hi"}, {"body": "hi", "csrf": "forged"}):
            r = client.post("/console/tickets/2/comments", data=data)
            assert r.status_code == 403
        assert client.post("/console/live-token").status_code == 403
        r = client.post("/console/tickets/2/comments", data={"body": "ok", "csrf": csrf})
        assert r.status_code == 303


def test_customer_sees_only_their_organisation(console_node: ConsoleNode) -> None:
    client, csrf = sign_in(console_node, "frank@globex.example")
    with closing(client):
        portal = client.get("/console/portal").text
        assert "History paging is slow" in portal and "Messages not delivered" not in portal
        assert client.get("/console/tickets/1").status_code == 404  # acme's ticket
        r = client.post("/console/tickets/1/comments", data={"body": "x", "csrf": csrf})
        assert r.status_code == 404
        live = client.post("/console/live-token?ticket=1", headers={"X-CSRF-Token": csrf})
        assert live.status_code == 404
        assert client.get("/console/queue").status_code == 403
        assert client.get("/console/reports/sla").status_code == 403
        assert client.get("/console/reports/sla.csv").status_code == 403


def test_customer_cannot_write_internal_notes_or_change_properties(
    console_node: ConsoleNode,
) -> None:
    client, csrf = sign_in(console_node, "dana@acme.example")
    with closing(client):
        r = client.post(
            "/console/tickets/2/comments",
            data={"body": "secret", "visibility": "internal", "csrf": csrf},
        )
        assert r.status_code == 403
        r = client.post("/console/tickets/2/properties", data={"priority": "P0", "csrf": csrf})
        assert r.status_code == 403
        page = client.get("/console/tickets/2").text
        assert "Jitter disabled" not in page  # bob's internal note


def test_agent_only_pages_refuse_agents_in_the_portal(console_node: ConsoleNode) -> None:
    client, _ = sign_in(console_node, "bob@desk.example")
    with closing(client):
        assert client.get("/console/portal").status_code == 403
        assert client.get("/console/queue").status_code == 200


def test_comment_html_is_escaped(console_node: ConsoleNode) -> None:
    client, csrf = sign_in(console_node, "dana@acme.example")
    with closing(client):
        evil = "<script>alert(1)</script>"
        r = client.post("/console/tickets/2/comments", data={"body": evil, "csrf": csrf})
        assert r.status_code == 303
        page = client.get("/console/tickets/2")
        assert evil not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        csp = page.headers["content-security-policy"]
        assert (
            "script-src 'self'" in csp
            and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        )


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"subject": "  "}, "subject", "Give the ticket a subject"),
        ({"priority": "P9"}, "priority", "Unknown priority"),
        (
            {"window_start": "2026-01-05T10:00", "window_end": "2026-01-05T09:00"},
            "window_end",
            "ends before it starts",
        ),
        ({"window_start": "2026-01-05T10:00"}, "window_end", "or neither"),
        ({"subject": "s" * 201}, "subject", "at most 200"),
        ({"description": "d" * 20_001}, "description", "at most 20000"),
    ],
)
def test_new_ticket_form_errors_are_inline(
    console_node: ConsoleNode, fields: dict[str, str], field: str, message: str
) -> None:
    client, csrf = sign_in(console_node, "dana@acme.example")
    with closing(client):
        r = _new_ticket(client, csrf, **fields)
        assert r.status_code == 422
        found = re.search(rf'id="error-{field}">([^<]*)<', r.text)
        assert found is not None and message in found.group(1), r.text[-2000:]


def test_new_ticket_lands_on_its_page(console_node: ConsoleNode) -> None:
    client, csrf = sign_in(console_node, "dana@acme.example")
    with closing(client):
        r = _new_ticket(
            client,
            csrf,
            subject="Delivery gap",
            app_id="acme-chat",
            region="eu-west",
            window_start="2026-01-05T09:00",
            window_end="2026-01-05T10:00",
        )
        assert r.status_code == 303 and "/console/tickets/" in r.headers["location"]
        page = client.get(r.headers["location"]).text
        assert "2026-01-05 09:00 UTC – 2026-01-05 10:00 UTC" in page


def test_live_token_grants_only_the_pages_channels(console_node: ConsoleNode) -> None:
    agent, csrf = sign_in(console_node, "alice@desk.example")
    with closing(agent):
        body = agent.post("/console/live-token?ticket=1", headers={"X-CSRF-Token": csrf}).json()
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert claims["app"] == "desk" and claims["sub"] == "agent.alice"
        assert claims["ch"] == {
            "desk-queue": "member",
            "desk-t-1": "member",
            "desk-ta-1": "member",  # agents only: who is viewing, who is typing
            "desk-war-1": "member",
        }
        # Agents may ask for other agents' presence (collision detection), nobody else's.
        assert claims["peers"] == ["agent.bob", "agent.carol"]
        assert claims["exp"] - claims["iat"] == 600
    customer, csrf = sign_in(console_node, "dana@acme.example")
    with closing(customer):
        body = customer.post("/console/live-token?ticket=3", headers={"X-CSRF-Token": csrf}).json()
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert claims["sub"] == "customer.dana" and claims["ch"] == {"desk-t-3": "member"}
        assert claims["peers"] == []
        portal = customer.post("/console/live-token?portal=1", headers={"X-CSRF-Token": csrf})
        claims = jwt.decode(portal.json()["token"], options={"verify_signature": False})
        assert claims["ch"] == {"desk-org-acme": "member"}


def test_sla_report_csv_download(console_node: ConsoleNode) -> None:
    client, _ = sign_in(console_node, "alice@desk.example")
    with closing(client):
        page = client.get("/console/reports/sla")
        assert page.status_code == 200 and 'id="attainment"' in page.text
        bad = client.get("/console/reports/sla?from=2026-02-01&to=2026-01-01")
        assert bad.status_code == 422 and "ends before it starts" in bad.text
        csv = client.get("/console/reports/sla.csv?table=breaches")
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert "attachment" in csv.headers["content-disposition"]


def test_console_attachments_stay_in_their_organisation(console_node: ConsoleNode) -> None:
    dana, csrf = sign_in(console_node, "dana@acme.example")
    frank, _ = sign_in(console_node, "frank@globex.example")
    with closing(dana), closing(frank):
        r = dana.post(
            "/console/tickets/2/attachments",
            data={"csrf": csrf},
            files={"file": ("client.log", b"reconnect 4011\n", "text/plain")},
        )
        assert r.status_code == 303, r.text
        page = dana.get(r.headers["location"]).text
        found = re.search(r'href="(/console/attachments/\d+)">client\.log<', page)
        assert found is not None, page[-3000:]
        got = dana.get(found.group(1))
        assert got.status_code == 200 and got.content == b"reconnect 4011\n"
        assert got.headers["content-disposition"].startswith("attachment;")
        assert got.headers["content-security-policy"].startswith("sandbox")
        assert frank.get(found.group(1)).status_code == 404
        refused = dana.post(
            "/console/tickets/2/attachments",
            data={"csrf": csrf},
            files={"file": ("page.html", b"<script>x</script>", "text/html")},
        )
        assert refused.status_code == 415 and "not accepted" in refused.text


def test_article_pages_are_public_rendered_and_sanitised(console_node: ConsoleNode) -> None:
    anonymous = httpx.Client(base_url=console_node.url, timeout=10)
    with closing(anonymous):
        page = anonymous.get("/console/kb/message-delay")
        assert page.status_code == 200
        assert "<h1>Messages arrive late</h1>" in page.text and "<script>alert" not in page.text
        assert anonymous.get("/console/kb/no-such-article").status_code == 404
        listing = anonymous.get("/console/kb?q=delayed")
        assert listing.status_code == 200 and "/console/kb/message-delay" in listing.text
        assert anonymous.get("/favicon.ico", follow_redirects=True).status_code == 200

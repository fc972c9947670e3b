"""SLA policy pages of the console over real HTTP (docs/console.md, "SLA policies"):
list, one version in words, a new version from the JSON editor, refused texts storing
nothing, re-applying a version on a ticket with a readable log line, customers refused.

The node is shared by the module; every test reads the versions it starts from instead of
assuming an order.
"""

from __future__ import annotations

import html
import json
import re
from contextlib import closing
from typing import Any

import httpx
from console_kit import ConsoleNode, sign_in

LIST = "/console/sla/policies"


def _versions(client: httpx.Client, policy_id: str = "default") -> list[int]:
    page = client.get(LIST)
    assert page.status_code == 200, page.text
    row = page.text.split(f'data-policy="{policy_id}"', 1)[1].split("</tr>", 1)[0]
    return sorted(int(v) for v in re.findall(r'data-version="(\d+)"', row))


def _editor_text(client: httpx.Client) -> str:
    page = client.get(f"{LIST}/default/edit")
    assert page.status_code == 200, page.text
    found = re.search(r'<textarea name="policy"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert found is not None
    return html.unescape(found.group(1))


def _store(client: httpx.Client, csrf: str, text: str) -> httpx.Response:
    return client.post(f"{LIST}/default/versions", data={"csrf": csrf, "policy": text})


def _cells(page: str, priority: str, metric: str) -> dict[str, str]:
    row = page.split(f'data-priority="{priority}" data-metric="{metric}"', 1)[1]
    row = row.split("</tr>", 1)[0]
    return {
        name: html.unescape(re.sub(r"<[^>]+>", "", value)).strip()
        for name, value in re.findall(r'<td class="(\w+)">(.*?)</td>', row, re.S)
    }


def _contract(draft: dict[str, Any]) -> dict[str, Any]:
    # P3 as support contracts write it: resolved by the end of the 5th business day, a
    # same-day cut-off at 15:00 with at least 2 business hours, and first response running
    # while the ticket waits on the customer.
    draft["name"] = "Contract 2027"
    draft["targets"]["P3"]["resolution"] = {
        "calendar": "business",
        "kind": "end_of_nth_business_day",
        "n": 5,
        "cutoff": "15:00",
        "min_seconds": 7200,
    }
    draft["metric_pause_statuses"] = {"first_response": []}
    return draft


def test_list_and_version_page_in_words(console_node: ConsoleNode) -> None:
    client, _ = sign_in(console_node, "alice@desk.example")
    with closing(client):
        assert 'id="nav-policies"' in client.get("/console/queue").text
        versions = _versions(client)
        assert versions[0] == 1
        page = client.get(f"{LIST}/default/versions/1")
        assert page.status_code == 200
        assert "Default SLA" in page.text
        assert _cells(page.text, "P0", "first_response") == {
            "kind": "duration",
            "value": "15 min",
            "cutoff": "—",
            "minimum": "—",
            "pauses": "pending",
            "calendar": "24x7 (always open)",
        }
        p1 = _cells(page.text, "P1", "resolution")
        assert p1["kind"] == "end of business day"
        assert p1["value"] == "end of the business day it starts"
        assert p1["calendar"] == "business (Europe/London)"
        assert _cells(page.text, "P3", "resolution")["value"] == "5 business days of open time"
        assert client.get(f"{LIST}/default/versions/999").status_code == 404
        assert client.get(f"{LIST}/gold/versions/1").status_code == 404
        assert client.get(f"{LIST}/gold/edit").status_code == 404


def test_adding_a_valid_version_from_the_prefilled_editor(console_node: ConsoleNode) -> None:
    client, csrf = sign_in(console_node, "alice@desk.example")
    with closing(client):
        before = _versions(client)
        draft = json.loads(_editor_text(client))
        assert "id" not in draft and "version" not in draft
        assert draft["targets"]["P0"]["first_response"] == {"kind": "duration", "seconds": 900.0}
        r = _store(client, csrf, json.dumps(_contract(draft), indent=2))
        assert r.status_code == 303, r.text
        new = before[-1] + 1
        assert r.headers["location"] == f"{LIST}/default/versions/{new}?done=version"
        page = client.get(r.headers["location"])
        assert page.status_code == 200 and 'id="policy-stored"' in page.text
        assert "Contract 2027" in page.text
        p3 = _cells(page.text, "P3", "resolution")
        assert p3 == {
            "kind": "end of the n-th business day",
            "value": "end of the 5th business day after the starting one",
            "cutoff": "15:00 local",
            "minimum": "2 h",
            "pauses": "pending",
            "calendar": "business (Europe/London)",
        }
        first = _cells(page.text, "P3", "first_response")
        assert first["pauses"] == "none (never paused) (own list)"
        assert _versions(client) == [*before, new]
        # the editor now starts from the new version
        assert json.loads(_editor_text(client))["name"] == "Contract 2027"


def test_refused_texts_show_code_and_message_and_store_nothing(
    console_node: ConsoleNode,
) -> None:
    client, csrf = sign_in(console_node, "bob@desk.example")
    with closing(client):
        before = _versions(client)
        good = json.loads(_editor_text(client))
        no_n = json.loads(json.dumps(good))
        no_n["targets"]["P1"]["resolution"] = {
            "calendar": "business",
            "kind": "end_of_nth_business_day",
        }
        mars = json.loads(json.dumps(good))
        mars["targets"]["P2"]["resolution"]["calendar"] = "mars"
        no_p3 = json.loads(json.dumps(good))
        del no_p3["targets"]["P3"]
        bad_pause = {**good, "metric_pause_statuses": {"resolution": ["solved"]}}
        cases = [
            ("{", "request.invalid"),
            ("", "request.invalid"),
            (json.dumps({"name": "x", "targets": 5}), "request.invalid"),
            (json.dumps({**good, "name": "n" * 201}), "request.too_long"),
            (json.dumps({**good, "id": "other"}), "request.invalid"),
            (json.dumps(no_n), "policy.bad_target"),
            (json.dumps(mars), "policy.unknown_calendar"),
            (json.dumps(no_p3), "policy.missing_priority"),
            (json.dumps(bad_pause), "policy.bad_pause_status"),
            (json.dumps({**good, "warn_fraction": 0}), "policy.bad_warn_fraction"),
        ]
        for text, code in cases:
            r = _store(client, csrf, text)
            assert r.status_code == 422, (code, r.status_code)
            error = re.search(r'id="policy-error"[^>]*>(.*?)</p>', r.text, re.S)
            assert error is not None, code
            assert f'<code class="code">{code}</code>' in error.group(1), error.group(1)
            # what was typed comes back, escaped, for correction
            kept = re.search(r'<textarea name="policy"[^>]*>(.*?)</textarea>', r.text, re.S)
            assert kept is not None and html.unescape(kept.group(1)) == text
        # an injected tag in the text is shown as text
        evil = '{"name": "</textarea><script>alert(1)</script>"'
        r = _store(client, csrf, evil)
        assert r.status_code == 422 and "<script>alert(1)</script>" not in r.text
        # without the session's CSRF token nothing is even looked at
        r = client.post(f"{LIST}/default/versions", data={"policy": json.dumps(good)})
        assert r.status_code == 403
        assert _versions(client) == before


def test_reapplying_a_version_on_a_ticket_logs_it_in_words(console_node: ConsoleNode) -> None:
    client, csrf = sign_in(console_node, "alice@desk.example")
    with closing(client):
        draft = json.loads(_editor_text(client))
        draft["name"] = "Re-apply test"
        assert _store(client, csrf, json.dumps(draft)).status_code == 303
        latest = _versions(client)[-1]
        page = client.get("/console/tickets/2").text
        current = re.search(r'id="ticket-policy"><a href="[^"]+">default v(\d+)</a>', page)
        assert current is not None and int(current.group(1)) < latest
        old = int(current.group(1))
        assert f'<option value="{old}:default" selected>' in page
        url = "/console/tickets/2/sla-policy"
        r = client.post(url, data={"csrf": csrf, "policy_version": f"{latest}:default"})
        assert r.status_code == 303
        assert r.headers["location"] == "/console/tickets/2?done=policy"
        page = client.get("/console/tickets/2").text
        assert f'id="ticket-policy"><a href="/console/sla/policies/default/versions/{latest}">' in (
            page
        )
        assert f"default v{latest}</small>" in page  # the SLA clocks now run under it
        log = page.split('id="event-log"', 1)[1].split("</table>", 1)[0]
        line = (
            "<td>SLA policy applied</td><td>Alice Ng</td>"  # people by name
            f"<td>from default v{old} to default v{latest}</td>"
        )
        assert line in log
        assert "policy_id" not in log and "{" not in log  # no raw dict text
        # bad choices are refused inline and change nothing
        for value, status, message in (
            ("", 422, "Choose a policy version."),
            ("default", 422, "Choose a policy version."),
            ("999:default", 422, "sla.unknown_policy: no SLA policy &#39;default&#39; version 999"),
        ):
            r = client.post(url, data={"csrf": csrf, "policy_version": value})
            assert r.status_code == status and message in r.text, (value, r.status_code)
        assert client.post(url, data={"policy_version": f"{old}:default"}).status_code == 403
        r = client.post(
            "/console/tickets/99999/sla-policy",
            data={"csrf": csrf, "policy_version": f"{old}:default"},
        )
        assert r.status_code == 404
        log = (
            client.get("/console/tickets/2")
            .text.split('id="event-log"', 1)[1]
            .split("</table>", 1)[0]
        )
        assert log.count("SLA policy applied") == 1
        # the customer sees neither the control nor the audit line
        dana, _ = sign_in(console_node, "dana@acme.example")
        with closing(dana):
            theirs = dana.get("/console/tickets/2").text
            assert 'id="policy-apply-form"' not in theirs and 'id="ticket-policy"' not in theirs
            assert "SLA policy applied" not in theirs
            assert 'id="nav-policies"' not in theirs


def test_customers_never_reach_policy_pages_or_the_control(console_node: ConsoleNode) -> None:
    agent, _ = sign_in(console_node, "carol@desk.example")
    with closing(agent):
        before = _versions(agent)
        draft = _editor_text(agent)
    for email in ("dana@acme.example", "frank@globex.example"):
        client, csrf = sign_in(console_node, email)
        with closing(client):
            for path in (LIST, f"{LIST}/default/versions/1", f"{LIST}/default/edit"):
                r = client.get(path)
                assert r.status_code == 403 and "support agents" in r.text, (email, path)
            r = _store(client, csrf, draft)
            assert r.status_code == 403
            r = client.post(
                "/console/tickets/2/sla-policy", data={"csrf": csrf, "policy_version": "1:default"}
            )
            assert r.status_code == 403
    with httpx.Client(base_url=console_node.url) as anonymous:
        r = anonymous.get(f"{LIST}/default/versions/1")
        assert r.status_code == 303
        assert r.headers["location"].startswith("/console/sign-in?next=/console/sla/policies")
        r = anonymous.post(f"{LIST}/default/versions", data={"policy": draft})
        assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
    agent, _ = sign_in(console_node, "carol@desk.example")
    with closing(agent):
        assert _versions(agent) == before


def test_a_version_stored_meanwhile_is_not_silently_overwritten(
    console_node: ConsoleNode,
) -> None:
    alice, alice_csrf = sign_in(console_node, "alice@desk.example")
    bob, bob_csrf = sign_in(console_node, "bob@desk.example")
    with closing(alice), closing(bob):
        editor = alice.get(f"{LIST}/default/edit").text
        based = re.search(r'name="based_on" value="(\d+)"', editor)
        assert based is not None
        text = _editor_text(alice).replace('"pending"', '"on_hold"', 1)
        theirs = json.loads(_editor_text(bob))
        theirs["name"] = "Bob's edit"
        assert _store(bob, bob_csrf, json.dumps(theirs)).status_code == 303
        before = _versions(alice)
        # a refusal for another reason first: the conflict is still caught afterwards
        bad = {"csrf": alice_csrf, "policy": "{", "based_on": based.group(1)}
        r = alice.post(f"{LIST}/default/versions", data=bad)
        assert r.status_code == 422
        assert f'name="based_on" value="{based.group(1)}"' in r.text
        data = {"csrf": alice_csrf, "policy": text, "based_on": based.group(1)}
        r = alice.post(f"{LIST}/default/versions", data=data)
        assert r.status_code == 409
        assert '<code class="code">sla.version_conflict</code>' in r.text
        assert _versions(alice) == before
        # the page now starts from bob's version and keeps alice's text for a second try
        again = re.search(r'name="based_on" value="(\d+)"', r.text)
        assert again is not None and int(again.group(1)) == before[-1]
        data["based_on"] = again.group(1)
        assert alice.post(f"{LIST}/default/versions", data=data).status_code == 303
        assert _versions(alice) == [*before, before[-1] + 1]

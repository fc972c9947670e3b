"""A signed-in person's own e-mail preferences on the console (``/console/notifications``),
against a real node: the same table the desk API (``/api/desk/me/notifications``) and the
mail notifier read."""

from __future__ import annotations

import re

from console_kit import ConsoleNode, sign_in

from relaydesk.desk.mail import MAIL_KINDS
from relaydesk.web.console._workspace import MAIL_KIND_LABELS


def _selected(html: str) -> dict[str, str]:
    found = re.findall(r'<select name="(\w+)" id="pref-\w+">(.*?)</select>', html, re.S)
    return {
        kind: re.findall(r'<option value="(\w+)" selected>', options)[0] for kind, options in found
    }


def test_each_person_sets_their_own_mail_preferences(console_node: ConsoleNode) -> None:
    assert tuple(MAIL_KIND_LABELS) == MAIL_KINDS  # every kind is on the page
    dana, csrf = sign_in(console_node, "dana@acme.example")
    page = dana.get("/console/notifications")
    assert page.status_code == 200 and 'id="nav-notifications"' in page.text
    assert _selected(page.text) == {
        "reply": "instant",
        "assignment": "instant",
        "escalation": "instant",
        "at_risk": "digest",
        "mention": "instant",
    }
    saved = dana.post(
        "/console/notifications",
        data={"csrf": csrf, "reply": "digest", "mention": "off", "at_risk": "digest"},
    )
    assert saved.status_code == 303, saved.text
    page = dana.get(saved.headers["location"])
    assert 'id="notifications-saved"' in page.text
    got = _selected(page.text)
    assert (got["reply"], got["mention"], got["assignment"]) == ("digest", "off", "instant")

    # Refused: a value that is no delivery, and a form without the session's CSRF token.
    bad = dana.post("/console/notifications", data={"csrf": csrf, "reply": "hourly"})
    assert bad.status_code == 422
    forged = dana.post("/console/notifications", data={"csrf": "x", "reply": "off"})
    assert forged.status_code == 403
    assert _selected(dana.get("/console/notifications").text)["reply"] == "digest"

    # Another person's are their own.
    bob, _ = sign_in(console_node, "bob@desk.example")
    assert _selected(bob.get("/console/notifications").text)["reply"] == "instant"

"""Pure rules of the workspace (no I/O): SLA badges, mentions, macro text, uploads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from relaydesk.desk import workspace
from relaydesk.desk.tickets.model import Ticket
from relaydesk.desk.workspace.rules import (
    AttachmentRefused,
    check_upload,
    clean_filename,
    content_disposition,
    mentioned_agents,
    render_macro,
    sla_badge,
)

NOW = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


def _ticket(**kw: object) -> Ticket:
    base = dict(
        id=1, organisation_id="acme", requester_id="dana", assignee_id=None, subject="s",
        description="", priority="P1", status="open", skills=(), tags=(), app_id=None,
        region=None, window_start=None, window_end=None, policy_id="default",
        policy_version=1, created_at=NOW, updated_at=NOW, solved_at=None, closed_at=None,
        acknowledged_at=None, first_response_at=None, sla_state="active",
        next_breach_at=None, due_at=NOW + timedelta(minutes=30),
    )  # fmt: skip
    base.update(kw)
    return msgspec.convert(base, Ticket)


def test_public_names_are_pinned() -> None:
    assert set(workspace.__all__) == {
        "Attachment", "BulkResult", "Link", "Macro", "Mention", "MentionHook", "Page", "Row",
        "SavedView", "WorkspaceService", "mentioned_agents", "sla_badge",
    }  # fmt: skip
    for name in workspace.__all__:
        assert hasattr(workspace, name)


def test_sla_badge_from_warning_to_breach() -> None:
    t = _ticket()
    warn = NOW + timedelta(minutes=20)
    assert sla_badge(t, warn, NOW) == "active"
    assert sla_badge(t, warn, warn) == "at_risk"
    assert sla_badge(t, warn, NOW + timedelta(minutes=30)) == "breached"
    assert sla_badge(_ticket(sla_state="paused"), warn, warn) == "paused"
    assert sla_badge(_ticket(sla_state="breached"), None, NOW) == "breached"
    assert (
        sla_badge(_ticket(status="solved", sla_state="achieved"), None, NOW + timedelta(days=1))
        == "achieved"
    )


def test_mentions_are_known_agents_only() -> None:
    agents = ["bob", "carol.d", "alice"]
    body = "@Bob please look; cc @carol.d. (not mail@alice.example, not @nobody, @bob again)"
    assert mentioned_agents(body, agents) == ["bob", "carol.d"]


def test_macro_placeholders() -> None:
    assert render_macro(
        "Hi {requester}, #{ticket} {unknown}", {"requester": "Dana", "ticket": "7"}
    ) == ("Hi Dana, #7 {unknown}")


def test_upload_rules() -> None:
    assert check_upload("doctor.JSON", b"{}", 100) == ("doctor.JSON", "application/json")
    assert clean_filename("C:\\Users\\x\\..\\evil\u202e.txt") == "evil.txt"
    assert len(clean_filename("a" * 300 + ".log")) == 120 and clean_filename(
        "a" * 300 + ".log"
    ).endswith(".log")
    for name, data, code in (
        ("x.txt", b"x" * 101, "attachment.too_large"),
        ("x.svg", b"<svg/>", "attachment.type_not_allowed"),
        ("x.png", b"GIF89a", "attachment.type_not_allowed"),
        ("x", b"abc", "attachment.bad_name"),
    ):
        with pytest.raises(AttachmentRefused) as err:
            check_upload(name, data, 100)
        assert err.value.code == code
    assert content_disposition("shot.png", "image/png").startswith('inline; filename="shot.png"')
    assert content_disposition('ré"port.pdf', "application/pdf") == (
        "attachment; filename=\"r__port.pdf\"; filename*=UTF-8''r%C3%A9%22port.pdf"
    )

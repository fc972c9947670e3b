"""Attach a doctor report to a desk ticket as a public customer comment.

Speaks the desk's HTTP API (``POST /api/desk/tickets/{id}/comments`` with
``Authorization: Bearer <api key>`` and ``{"body", "public"}``, see
``relaydesk.web.desk_api``); errors come back as ``{"error": {"code", "message"}}``.
Blocking stdlib HTTP: the CLI calls it once, after the async run is over.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from relaydesk.doctor.report import DoctorReport, report_markdown


class AttachError(Exception):
    """The desk did not take the comment; the message says why."""


def attach_report(
    desk_url: str, api_key: str, ticket_id: int, report: DoctorReport, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Post ``report`` on ticket ``ticket_id``; returns the created comment as JSON."""
    if ticket_id <= 0:
        raise AttachError(f"invalid ticket id {ticket_id}")
    url = f"{desk_url.rstrip('/')}/api/desk/tickets/{ticket_id}/comments"
    body = json.dumps({"body": report_markdown(report), "public": True}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            created: dict[str, Any] = json.loads(response.read() or b"{}")
            return created
    except urllib.error.HTTPError as exc:
        detail = exc.read(4096).decode(errors="replace")
        try:
            error = json.loads(detail)["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            pass
        raise AttachError(f"desk answered HTTP {exc.code} for {url}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AttachError(f"cannot reach the desk at {url}: {reason}") from None

"""Attach a doctor report to a desk ticket: before it is filed (inside the ticket's
description, so the automatic acknowledgement already uses it) or afterwards (a public
customer comment).

Speaks the desk's HTTP API (``POST /api/desk/tickets`` and
``POST /api/desk/tickets/{id}/comments`` with ``Authorization: Bearer <api key>``, see
``relaydesk.web.desk_api``); errors come back as ``{"error": {"code", "message"}}``.
Blocking stdlib HTTP: the CLI calls it once, after the async run is over.

The report travels as the Markdown of ``report_markdown`` (a table for people, the
report as fenced JSON for the desk), which the acknowledger reads back with
``relaydesk.desk.diagnosis.client_evidence.reports_in_text`` (docs/doctor.md §attach).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from relaydesk.doctor.report import DoctorReport, report_markdown

#: The desk's limit for a description or a comment (``desk.tickets.model.MAX_TEXT``).
MAX_TICKET_TEXT: Final = 20_000


class AttachError(Exception):
    """The desk did not take the report, or the report cannot be read; says why."""


def load_report(path: Path | str) -> DoctorReport:
    """A report written by ``relaydesk doctor --json`` (raises :class:`AttachError`)."""
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=DoctorReport)
    except OSError as exc:
        raise AttachError(f"cannot read the doctor report {path}: {exc.strerror}") from None
    except msgspec.ValidationError as exc:
        raise AttachError(
            f"{path} is not a doctor report (relaydesk doctor --json): {exc}"
        ) from None
    except msgspec.DecodeError as exc:
        raise AttachError(f"{path} is not JSON: {exc}") from None


def with_report(description: str, report: DoctorReport) -> str:
    """``description`` followed by the report, within the desk's text limit (the
    report's per-check data is dropped first if it would not fit)."""
    head = description.rstrip() + "\n\n" if description.strip() else ""
    room = MAX_TICKET_TEXT - len(head) - 50
    if room < 500:
        raise AttachError("the description leaves no room for the doctor report")
    return head + report_markdown(report, limit=room)


def _post(url: str, api_key: str, payload: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
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


def attach_report(
    desk_url: str, api_key: str, ticket_id: int, report: DoctorReport, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Post ``report`` on ticket ``ticket_id``; returns the created comment as JSON."""
    if ticket_id <= 0:
        raise AttachError(f"invalid ticket id {ticket_id}")
    url = f"{desk_url.rstrip('/')}/api/desk/tickets/{ticket_id}/comments"
    return _post(url, api_key, {"body": report_markdown(report), "public": True}, timeout)


def create_ticket_with_report(
    desk_url: str,
    api_key: str,
    ticket: Mapping[str, Any],
    report: DoctorReport,
    *,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """File a ticket (the fields of ``POST /api/desk/tickets``) with ``report`` in its
    description, so the automatic acknowledgement diagnoses with the device's own
    evidence; returns the created ticket as JSON."""
    fields = dict(ticket)
    fields["description"] = with_report(str(fields.get("description") or ""), report)
    return _post(f"{desk_url.rstrip('/')}/api/desk/tickets", api_key, fields, timeout)

"""Form parsing for the console: every field checked, every problem an inline message.

Pure functions from the submitted fields (and ``now`` where needed) to either a value
for the ticket service or a ``{field: message}`` map the template shows next to each
field.  The service validates again; these checks exist so that a person sees *which*
field is wrong, in words, without losing what they typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import msgspec

from relaydesk.desk.tickets.model import (
    MAX_SUBJECT,
    MAX_TEXT,
    PRIORITIES,
    STATUSES,
    NewTicket,
)

#: Longest app id or region label accepted (the ticket model's limit).
MAX_LABEL: Final = 64

Errors = dict[str, str]


def _field(form: Mapping[str, str], name: str) -> str:
    return (form.get(name) or "").strip()


def parse_local_utc(text: str) -> datetime | None:
    """A ``datetime-local`` value (``YYYY-MM-DDTHH:MM[:SS]``) read as UTC; ``None`` if bad."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_new_ticket(form: Mapping[str, str]) -> tuple[NewTicket | None, Errors]:
    """A customer's new-ticket form: subject, description, priority, app, region, window."""
    errors: Errors = {}
    subject = _field(form, "subject")
    description = (form.get("description") or "").strip()
    priority = _field(form, "priority") or "P2"
    app_id = _field(form, "app_id") or None
    region = _field(form, "region") or None
    if not subject:
        errors["subject"] = "Give the ticket a subject."
    elif len(subject) > MAX_SUBJECT:
        errors["subject"] = f"The subject is {len(subject)} characters; at most {MAX_SUBJECT}."
    if len(description) > MAX_TEXT:
        errors["description"] = (
            f"The description is {len(description)} characters; at most {MAX_TEXT}."
        )
    if priority not in PRIORITIES:
        errors["priority"] = f"Unknown priority; choose one of {', '.join(PRIORITIES)}."
    for name, value in (("app_id", app_id), ("region", region)):
        if value is not None and len(value) > MAX_LABEL:
            errors[name] = f"At most {MAX_LABEL} characters."
    start_text, end_text = _field(form, "window_start"), _field(form, "window_end")
    start = parse_local_utc(start_text) if start_text else None
    end = parse_local_utc(end_text) if end_text else None
    if start_text and start is None:
        errors["window_start"] = "Not a date and time."
    if end_text and end is None:
        errors["window_end"] = "Not a date and time."
    if "window_start" not in errors and "window_end" not in errors:
        if bool(start_text) != bool(end_text):
            errors["window_end"] = "Give both the start and the end of the time window, or neither."
        elif start is not None and end is not None and end <= start:
            errors["window_end"] = "The time window ends before it starts."
    if errors:
        return None, errors
    fields: dict[str, object] = {
        "subject": subject,
        "description": description,
        "priority": priority,
        "app_id": app_id,
        "region": region,
        "window_start": start,
        "window_end": end,
    }
    try:
        return msgspec.convert(fields, NewTicket), {}
    except msgspec.ValidationError as exc:  # pragma: no cover - the checks above cover it
        return None, {"subject": str(exc)}


def parse_comment(form: Mapping[str, str]) -> tuple[tuple[str, bool] | None, Errors]:
    """A reply or internal note: ``(body, public)``."""
    body = (form.get("body") or "").strip()
    public = (form.get("visibility") or "public") != "internal"
    if not body:
        return None, {"body": "Write something first."}
    if len(body) > MAX_TEXT:
        return None, {"body": f"The text is {len(body)} characters; at most {MAX_TEXT}."}
    return (body, public), {}


class PropertyChange(msgspec.Struct, frozen=True):
    """What the agent's properties form asks to change (``None``: leave as is)."""

    status: str | None
    priority: str | None
    assignee: str | None
    unassign: bool


def parse_properties(
    form: Mapping[str, str], agent_ids: set[str]
) -> tuple[PropertyChange | None, Errors]:
    """Status, priority and assignee selects of the ticket page."""
    errors: Errors = {}
    status = _field(form, "status") or None
    priority = _field(form, "priority") or None
    assignee = _field(form, "assignee") or None
    if status is not None and status not in STATUSES:
        errors["status"] = f"Unknown status; choose one of {', '.join(STATUSES)}."
    if priority is not None and priority not in PRIORITIES:
        errors["priority"] = f"Unknown priority; choose one of {', '.join(PRIORITIES)}."
    unassign = assignee == "-"
    if assignee is not None and not unassign and assignee not in agent_ids:
        errors["assignee"] = "Unknown agent."
    if errors:
        return None, errors
    return PropertyChange(
        status=status, priority=priority, assignee=None if unassign else assignee, unassign=unassign
    ), {}

"""Stable error codes of the desk (one enum, STYLE rule 2) and the exception carrying them.

Codes are dotted strings (``ticket.invalid_transition``) that never change meaning once
released; the HTTP status travels with each code so the API layer needs no mapping of its
own.  SLA configuration errors keep the engine's own codes (``calendar.overlap``...).
"""

from __future__ import annotations

import enum


class DeskErrorCode(enum.StrEnum):
    """Every error the desk reports to a caller."""

    AUTH_MISSING = "auth.missing_key"
    AUTH_INVALID = "auth.invalid_key"
    FORBIDDEN = "auth.forbidden"
    REQUEST_INVALID = "request.invalid"
    TOO_LONG = "request.too_long"
    TICKET_NOT_FOUND = "ticket.not_found"
    UNKNOWN_PRIORITY = "ticket.unknown_priority"
    UNKNOWN_STATUS = "ticket.unknown_status"
    INVALID_TRANSITION = "ticket.invalid_transition"
    TICKET_CLOSED = "ticket.closed"
    INVALID_WINDOW = "ticket.invalid_window"
    UNKNOWN_REQUESTER = "ticket.unknown_requester"
    UNKNOWN_AGENT = "ticket.unknown_agent"
    #: The ticket names an app that does not belong to its organisation (tenancy).
    UNKNOWN_APP = "ticket.unknown_app"
    UNKNOWN_ORGANISATION = "desk.unknown_organisation"
    UNKNOWN_PLAN = "desk.unknown_plan"
    UNKNOWN_POLICY = "sla.unknown_policy"
    SLA_CONFIG = "sla.config"
    SLA_VERSION_CONFLICT = "sla.version_conflict"
    SLA_BUSY = "sla.busy"
    SLA_TIMEOUT = "sla.timeout"
    REPORT_INVALID_WINDOW = "report.invalid_window"
    REPORT_UNKNOWN_FORMAT = "report.unknown_format"

    @property
    def http_status(self) -> int:
        """The HTTP status the API answers with for this code."""
        return _STATUS.get(self, 422)


_STATUS: dict[DeskErrorCode, int] = {
    DeskErrorCode.AUTH_MISSING: 401,
    DeskErrorCode.AUTH_INVALID: 401,
    DeskErrorCode.FORBIDDEN: 403,
    DeskErrorCode.TICKET_NOT_FOUND: 404,
    DeskErrorCode.INVALID_TRANSITION: 409,
    DeskErrorCode.TICKET_CLOSED: 409,
    DeskErrorCode.SLA_VERSION_CONFLICT: 409,
    DeskErrorCode.SLA_BUSY: 503,
    DeskErrorCode.SLA_TIMEOUT: 503,
}


class DeskError(Exception):
    """A request the desk refuses; nothing was written.

    ``code`` is a :class:`DeskErrorCode` or, for SLA configuration errors, the engine's
    code; ``status`` is the HTTP status to answer with.
    """

    def __init__(self, code: DeskErrorCode | str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        if status is None:
            status = code.http_status if isinstance(code, DeskErrorCode) else 422
        self.status = status

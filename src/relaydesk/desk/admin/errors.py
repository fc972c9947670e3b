"""Stable error codes of administration (docs/desk.md "Administration").

Raised as :class:`~relaydesk.desk.tickets.errors.DeskError` so every face (REST, CLI,
console) reports them the way the desk reports its own: a dotted code that never changes
meaning, a readable message and the HTTP status carried with the code.
"""

from __future__ import annotations

import enum

from relaydesk.desk.tickets.errors import DeskError


class AdminErrorCode(enum.StrEnum):
    """Every error administration reports to a caller."""

    INVALID = "admin.invalid"
    ALREADY_INITIALISED = "admin.already_initialised"
    UNKNOWN_ORGANISATION = "admin.unknown_organisation"
    ORGANISATION_EXISTS = "admin.organisation_exists"
    ORGANISATION_DISABLED = "admin.organisation_disabled"
    UNKNOWN_PLAN = "admin.unknown_plan"
    UNKNOWN_POLICY = "admin.unknown_policy"
    UNKNOWN_APP = "admin.unknown_app"
    APP_EXISTS = "admin.app_exists"
    APP_ATTACHED_ELSEWHERE = "admin.app_attached_elsewhere"
    APP_DISABLED = "admin.app_disabled"
    UNKNOWN_PERSON = "admin.unknown_person"
    PERSON_EXISTS = "admin.person_exists"
    PERSON_DISABLED = "admin.person_disabled"
    DUPLICATE_EMAIL = "admin.duplicate_email"
    WEAK_PASSWORD = "admin.weak_password"
    LINK_INVALID = "admin.link_invalid"
    LINK_EXPIRED = "admin.link_expired"
    LINK_USED = "admin.link_used"
    UNKNOWN_KEY = "admin.unknown_key"
    KEY_REVOKED = "admin.key_revoked"
    LAST_ADMIN = "admin.last_admin"
    UNKNOWN_WEBHOOK = "admin.unknown_webhook"
    AUTH_REVOKED = "auth.revoked_key"
    NOT_ADMIN = "auth.not_admin"

    @property
    def http_status(self) -> int:
        """The HTTP status the API answers with for this code."""
        return _STATUS.get(self, 422)


_STATUS: dict[AdminErrorCode, int] = {
    AdminErrorCode.ALREADY_INITIALISED: 409,
    AdminErrorCode.UNKNOWN_ORGANISATION: 404,
    AdminErrorCode.ORGANISATION_EXISTS: 409,
    AdminErrorCode.ORGANISATION_DISABLED: 409,
    AdminErrorCode.UNKNOWN_PLAN: 404,
    AdminErrorCode.UNKNOWN_POLICY: 404,
    AdminErrorCode.UNKNOWN_APP: 404,
    AdminErrorCode.APP_EXISTS: 409,
    AdminErrorCode.APP_ATTACHED_ELSEWHERE: 409,
    AdminErrorCode.APP_DISABLED: 409,
    AdminErrorCode.UNKNOWN_PERSON: 404,
    AdminErrorCode.PERSON_EXISTS: 409,
    AdminErrorCode.PERSON_DISABLED: 409,
    AdminErrorCode.DUPLICATE_EMAIL: 409,
    AdminErrorCode.LINK_INVALID: 410,
    AdminErrorCode.LINK_EXPIRED: 410,
    AdminErrorCode.LINK_USED: 410,
    AdminErrorCode.UNKNOWN_KEY: 404,
    AdminErrorCode.KEY_REVOKED: 409,
    AdminErrorCode.LAST_ADMIN: 409,
    AdminErrorCode.UNKNOWN_WEBHOOK: 404,
    AdminErrorCode.AUTH_REVOKED: 401,
    AdminErrorCode.NOT_ADMIN: 403,
}


def refuse(code: AdminErrorCode, message: str) -> DeskError:
    """The exception to raise for ``code`` (nothing of the operation is written)."""
    return DeskError(str(code), message, code.http_status)

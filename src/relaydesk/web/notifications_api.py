"""A signed-in person's own e-mail preferences: ``GET``/``PUT /api/desk/me/notifications``.

Beside the desk API, with its keys, error body and codes (``web/desk_api.py``).  Agents
and customers alike read and replace their own :class:`~relaydesk.desk.mail.MailPreferences`
(docs/desk.md "E-mail notifications"); nobody else's.  The preferences are stored whether
or not ``[mail] smtp_host`` is set, so they are in place when mail is switched on.
"""

from __future__ import annotations

from litestar import Router, get, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import JSONBody

from relaydesk.desk.mail import MailPreferences
from relaydesk.desk.mail.preferences import PersonalPreferences
from relaydesk.desk.tickets.errors import DeskError
from relaydesk.desk.tickets.model import Principal
from relaydesk.desk.tickets.service import TicketService
from relaydesk.server.security_schemes import DESK_KEY
from relaydesk.web.desk_api import (
    _ALWAYS,
    _BODY,
    PREFIX,
    _authenticator,
    _desk_error,
    _http_error,
    _validation_error,
    error_responses,
)


def notifications_router(prefs: PersonalPreferences, tickets: TicketService) -> Router:
    """``/api/desk/me/notifications`` over ``prefs``, authenticated by ``tickets``."""

    @get(
        "/me/notifications",
        summary="Which e-mails I get, per kind: instant, digest or off",
        responses=error_responses(*_ALWAYS),
    )
    async def my_notifications(principal: NamedDependency[Principal]) -> MailPreferences:
        return await prefs.get(principal.kind, principal.id)

    @put(
        "/me/notifications",
        status_code=200,
        summary="Replace my e-mail preferences (omitted kinds take their defaults)",
        responses=error_responses(*_BODY),
    )
    async def set_my_notifications(
        principal: NamedDependency[Principal], data: JSONBody[MailPreferences]
    ) -> MailPreferences:
        await prefs.put(principal.kind, principal.id, data)
        return data

    return Router(
        path=PREFIX,
        route_handlers=[my_notifications, set_my_notifications],
        dependencies={"principal": Provide(_authenticator(tickets))},
        security=[{DESK_KEY: []}],
        exception_handlers={
            DeskError: _desk_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
        },
        tags=["desk"],
    )

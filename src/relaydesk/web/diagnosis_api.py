"""``POST /api/diagnosis``: run the diagnosis for an app and window (docs/diagnosis.md).

Agents only (``Authorization: Bearer <desk API key>`` of an agent): a diagnosis exposes
per-node telemetry, device ids and conversation ids of an app, which the desk does not yet
map to customer organisations.  Customers see diagnoses through the automated
acknowledgement on their tickets.  Errors use the desk's shape
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from litestar import Request, Response, Router, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import JSONBody

from relaydesk.desk.diagnosis.model import Diagnosis
from relaydesk.desk.diagnosis.service import DiagnosisError, DiagnosisRequest, DiagnosisService
from relaydesk.desk.tickets.model import Principal
from relaydesk.server.security_schemes import DESK_KEY
from relaydesk.web.desk_api import ErrorBody, ErrorResponse, error_responses

PATH: Final = "/api/diagnosis"

Authenticate = Callable[[str], Awaitable[Principal | None]]


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> Response[ErrorResponse]:
    body = ErrorResponse(error=ErrorBody(code=code, message=message))
    return Response(body, status_code=status)


def _refused(_r: Request[Any, Any, Any], exc: _Refused) -> Response[ErrorResponse]:
    return _error(exc.status, exc.code, exc.message)


def _bad_window(_r: Request[Any, Any, Any], exc: DiagnosisError) -> Response[ErrorResponse]:
    return _error(exc.status, exc.code, str(exc))  # invalid_window 400, no_data 404


def _validation(_r: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorResponse]:
    return _error(422, "request.invalid", str(exc.detail))


def _http(_r: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    return _error(exc.status_code, f"http.{exc.status_code}", str(exc.detail))


def _agent_dependency(authenticate: Authenticate) -> Callable[..., Any]:
    async def agent(request: Request[Any, Any, Any]) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise _Refused(401, "auth.missing_key", "send Authorization: Bearer <api key>")
        scheme, _, key = header.partition(" ")
        found = await authenticate(key.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            raise _Refused(401, "auth.invalid_key", "unknown or revoked API key")
        if found.kind != "agent":
            raise _Refused(403, "auth.forbidden", "only agents may run a diagnosis")
        return found

    return agent


def diagnosis_router(service: DiagnosisService, authenticate: Authenticate) -> Router:
    """The ``/api/diagnosis`` router; ``authenticate`` is ``TicketService.authenticate``."""

    @post(
        "/",
        status_code=200,
        summary="Diagnose an app over a time window (agents)",
        responses=error_responses(400, 401, 403, 404, 413, 422),
    )
    async def run(agent: NamedDependency[Principal], data: JSONBody[DiagnosisRequest]) -> Diagnosis:
        """Ranked findings with layer, evidence, confidence, action and article links."""
        return await service.run(data)

    return Router(
        path=PATH,
        route_handlers=[run],
        dependencies={"agent": Provide(_agent_dependency(authenticate))},
        security=[{DESK_KEY: []}],
        exception_handlers={
            _Refused: _refused,
            DiagnosisError: _bad_window,
            ValidationException: _validation,
            HTTPException: _http,
        },
        tags=["diagnosis"],
    )

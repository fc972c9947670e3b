"""Answers for requests that reach no router: an unknown path or an unsupported method.

Litestar answers those at the application level, before any router's exception
handlers, in its own ``{"status_code", "detail"}`` shape.  Under an API prefix the
client expects that API's documented error body instead (docs/desk.md, "Errors"):
the messaging family (``/v1``, ``/api/quality``) with a numeric protocol code and its
name, the desk family (``/api/desk``, ``/api/kb``, ``/api/diagnosis``) with a dotted
string code.  Anything else keeps the framework's shape.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException

from relaydesk.server.http import http_error_handler
from relaydesk.web.desk_api import ErrorBody, ErrorResponse

MESSAGING_PREFIXES: Final = ("/v1/", "/api/quality/")
DESK_PREFIXES: Final = ("/api/desk/", "/api/kb/", "/api/diagnosis")


def unrouted_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """App-level handler of ``HTTPException``: the API family's error body by path prefix."""
    path = request.url.path
    if path.startswith(MESSAGING_PREFIXES):
        return http_error_handler(request, exc)
    if path.startswith(DESK_PREFIXES):
        body = ErrorResponse(
            error=ErrorBody(code=f"http.{exc.status_code}", message=str(exc.detail))
        )
        return Response(body, status_code=exc.status_code, headers=exc.headers)
    return Response(
        {"status_code": exc.status_code, "detail": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )

"""The knowledge-base API under ``/api/kb`` (docs/knowledge-base.md).

Reading is open: without an ``Authorization`` header a caller is anonymous and sees the
``public`` articles (the same text ships in the repository); a desk API key
(``Authorization: Bearer rdk_...``) identifies a customer (public articles) or an agent
(public and ``internal`` articles).  A header that is present but wrong is refused (401),
so a misconfigured integration notices instead of silently seeing less.  Errors use the
desk family's shape ``{"error": {"code", "message"}}`` (``ErrorResponse``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Request, Response, Router, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromPath, QueryParameter

from relaydesk.desk.knowledge.model import Article, ArticleSummary, SearchResult
from relaydesk.desk.knowledge.service import KnowledgeService
from relaydesk.desk.tickets.model import Principal
from relaydesk.server.security_schemes import DESK_KEY
from relaydesk.web.desk_api import ErrorBody, ErrorResponse, error_responses

PREFIX: Final = "/api/kb"
#: Longer queries are cut by the service anyway; this only refuses absurd URLs.
MAX_QUERY_PARAM: Final = 2000

Authenticate = Callable[[str], Awaitable[Principal | None]]


class Viewer(msgspec.Struct, frozen=True):
    """Who is reading: a desk principal, or nobody (anonymous)."""

    principal: Principal | None


class ArticleList(msgspec.Struct, frozen=True):
    """Every article the caller may read."""

    articles: list[ArticleSummary]


class _KbFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> Response[ErrorResponse]:
    return Response(ErrorResponse(error=ErrorBody(code=code, message=message)), status_code=status)


def _failure(_r: Request[Any, Any, Any], exc: _KbFailure) -> Response[ErrorResponse]:
    return _error(exc.status, exc.code, exc.message)


def _validation(_r: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorResponse]:
    return _error(422, "request.invalid", str(exc.detail))


def _http(_r: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    return _error(exc.status_code, f"http.{exc.status_code}", str(exc.detail))


def _viewer_dependency(authenticate: Authenticate | None) -> Callable[..., Any]:
    async def viewer(request: Request[Any, Any, Any]) -> Viewer:
        header = request.headers.get("authorization")
        if not header:
            return Viewer(principal=None)
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _KbFailure(401, "auth.invalid_key", "expected Authorization: Bearer <api key>")
        found = None if authenticate is None else await authenticate(key.strip())
        if found is None:
            raise _KbFailure(401, "auth.invalid_key", "unknown or revoked API key")
        return Viewer(principal=found)

    return viewer


def knowledge_router(service: KnowledgeService, authenticate: Authenticate | None = None) -> Router:
    """The ``/api/kb`` router.  ``authenticate`` maps a desk API key to its principal
    (``TicketService.authenticate``); without it every caller is anonymous."""

    @get(
        "/search",
        summary="Search the knowledge base (bm25 ranking, highlighted)",
        responses=error_responses(400, 401, 422),
    )
    async def search(
        viewer: NamedDependency[Viewer],
        q: Annotated[str, QueryParameter(max_length=MAX_QUERY_PARAM, description="words")],
        kind: Annotated[
            Literal["doc", "faq", "checklist"] | None, QueryParameter(description="filter")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=50)] = 10,
    ) -> SearchResult:
        """Every word must match (falls back to any word); FTS syntax is not interpreted."""
        return await service.search(q, viewer.principal, kind=kind, limit=limit)

    @get(
        "/suggest",
        summary="Articles for a ticket subject as it is typed",
        responses=error_responses(400, 401, 422),
    )
    async def suggest(
        viewer: NamedDependency[Viewer],
        q: Annotated[str, QueryParameter(max_length=MAX_QUERY_PARAM)],
        limit: Annotated[int, QueryParameter(ge=1, le=20)] = 5,
    ) -> SearchResult:
        """Any word may match; the last word counts as a prefix unless followed by a space."""
        return await service.suggest(q, viewer.principal, limit=limit)

    @get(
        "/articles",
        summary="List the articles the caller may read",
        responses=error_responses(400, 401),
    )
    async def list_articles(viewer: NamedDependency[Viewer]) -> ArticleList:
        return ArticleList(articles=await service.articles(viewer.principal))

    @get(
        "/articles/{slug:str}",
        summary="One article (Markdown body)",
        responses=error_responses(400, 401, 404, 422),
    )
    async def article(viewer: NamedDependency[Viewer], slug: FromPath[str]) -> Article:
        found = await service.article(slug, viewer.principal)
        if found is None:
            raise _KbFailure(404, "kb.not_found", f"no article {slug!r}")
        return found

    return Router(
        path=PREFIX,
        route_handlers=[search, suggest, list_articles, article],
        dependencies={"viewer": Provide(_viewer_dependency(authenticate))},
        # Anonymous callers read the public articles; a desk key may show more.
        security=[{}, {DESK_KEY: []}],
        exception_handlers={
            _KbFailure: _failure,
            ValidationException: _validation,
            HTTPException: _http,
        },
        tags=["knowledge base"],
    )

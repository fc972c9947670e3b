"""The agent workspace's REST API, beside the desk API under ``/api/desk`` (docs/desk.md).

Same keys, same error body and codes as ``web/desk_api.py``; handlers parse and
authorise, :class:`~relaydesk.desk.workspace.WorkspaceService` holds the rules.
Attachment downloads are served with the type chosen from the allow-list at upload (never
the uploader's claim), ``Content-Disposition`` (inline only for images), ``nosniff`` and a
``sandbox`` Content-Security-Policy, so an upload can never run as a page of this origin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Request, Router, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter
from litestar.response import File
from msgspec import Meta

from relaydesk.desk.sla import SlaConfigError
from relaydesk.desk.tickets.errors import DeskError
from relaydesk.desk.tickets.model import Principal, Priority, Status, Ticket
from relaydesk.desk.workspace import (
    Attachment,
    BulkResult,
    Link,
    Macro,
    Page,
    SavedView,
    WorkspaceService,
)
from relaydesk.desk.workspace.rules import content_disposition
from relaydesk.server.security_schemes import DESK_KEY
from relaydesk.storage.limits import MAX_ID_PARAM
from relaydesk.storage.workspace import SORTS, ViewQuery
from relaydesk.web.desk_api import (
    _ALWAYS,
    _BODY,
    PREFIX,
    TicketId,
    _authenticator,
    _desk_error,
    _http_error,
    _parse_instant,
    _sla_error,
    _validation_error,
    error_responses,
)

ViewName = Literal["all", "mine", "unassigned", "at_risk", "breached", "mentions", "closed"]
SortKey = Literal["due", "priority", "updated", "created", "id", "status", "subject"]
AnyId = Annotated[int, Parameter(ge=1, le=MAX_ID_PARAM, description="an id")]
#: Multipart and header overhead allowed on top of the attachment limit.
_UPLOAD_SLACK: Final = 64 * 1024


class ViewSummary(msgspec.Struct, frozen=True):
    """Ticket counts per view now, and the agent's saved filters."""

    counts: dict[str, int]
    saved: list[SavedView]


class SaveViewRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A saved filter: a name and the list's query string (``view=at_risk&priority=P1``)."""

    name: Annotated[str, Meta(min_length=1, max_length=60)]
    query: Annotated[str, Meta(max_length=1000)]


class MacroRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A macro: text with ``{ticket}``, ``{subject}``, ``{requester}``, ``{agent}``,
    ``{organisation}`` placeholders, and optional changes applied after it."""

    name: Annotated[str, Meta(min_length=1, max_length=80)]
    body: Annotated[str, Meta(max_length=20_000)] = ""
    public: bool = True
    status: Status | None = None
    priority: Priority | None = None
    assignee_id: Annotated[str, Meta(max_length=64)] | None = None


class MacroList(msgspec.Struct, frozen=True):
    """Every macro by name."""

    macros: list[Macro]


class BulkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One change for many tickets (each ticket succeeds or fails on its own)."""

    ticket_ids: Annotated[
        list[Annotated[int, Meta(ge=1, le=MAX_ID_PARAM)]], Meta(min_length=1, max_length=200)
    ]
    status: Status | None = None
    priority: Priority | None = None
    assignee_id: Annotated[str, Meta(max_length=64)] | None = None
    unassign: bool = False
    macro_id: Annotated[int, Meta(ge=1, le=MAX_ID_PARAM)] | None = None


class BulkResponse(msgspec.Struct, frozen=True):
    """A result per ticket."""

    results: list[BulkResult]


class MergeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Merge the ticket in the path into ``into`` (same organisation)."""

    into: Annotated[int, Meta(ge=1, le=MAX_ID_PARAM)]


class LinkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Relate the ticket in the path to ``other``."""

    other: Annotated[int, Meta(ge=1, le=MAX_ID_PARAM)]


class LinkList(msgspec.Struct, frozen=True):
    """A ticket's links."""

    links: list[Link]


class AttachmentList(msgspec.Struct, frozen=True):
    """A ticket's attachments the caller may see."""

    attachments: list[Attachment]


class RatingRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The customer's satisfaction rating of a solved ticket."""

    rating: Literal["good", "bad"]
    comment: Annotated[str, Meta(max_length=2000)] = ""


class Rating(msgspec.Struct, frozen=True):
    """A ticket's rating (``rating`` null: not rated)."""

    rating: Literal["good", "bad"] | None
    comment: str = ""
    at: datetime | None = None


class CsatReport(msgspec.Struct, frozen=True):
    """Ratings given in a window; ``score_pct`` = good / all rated."""

    good: int
    bad: int
    score_pct: float | None


def workspace_router(service: WorkspaceService) -> Router:
    """Search, views, macros, bulk, merge, links, attachments and ratings."""

    @get("/search", summary="Full-text ticket search", responses=error_responses(*_ALWAYS))
    async def search(
        principal: NamedDependency[Principal],
        q: Annotated[str, QueryParameter(max_length=500, description="words to find")],
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 25,
        offset: Annotated[int, QueryParameter(ge=0, le=100_000)] = 0,
    ) -> Page:
        return await service.search(principal, q, limit=limit, offset=offset)

    @get(
        "/views",
        summary="View counts and saved filters (agents)",
        responses=error_responses(*_ALWAYS, 403),
    )
    async def views(principal: NamedDependency[Principal]) -> ViewSummary:
        return ViewSummary(
            counts=await service.counts(principal), saved=await service.saved_views(principal)
        )

    @get(
        "/views/{view:str}",
        summary="A view's tickets, filtered, sorted and paged",
        responses=error_responses(*_ALWAYS, 403),
    )
    async def view(
        principal: NamedDependency[Principal],
        view: FromPath[ViewName],
        organisation: FromQuery[Annotated[str, Meta(max_length=64)] | None] = None,
        status: FromQuery[Status | None] = None,
        priority: FromQuery[Priority | None] = None,
        assignee: FromQuery[Annotated[str, Meta(max_length=64)] | None] = None,
        tag: FromQuery[Annotated[str, Meta(max_length=64)] | None] = None,
        sort: FromQuery[SortKey] = "due",
        order: FromQuery[Literal["asc", "desc"]] = "asc",
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 25,
        offset: Annotated[int, QueryParameter(ge=0, le=100_000)] = 0,
    ) -> Page:
        assert sort in SORTS
        return await service.view(
            principal,
            ViewQuery(
                view=view,
                organisation_id=organisation,
                status=status,
                priority=priority,
                assignee_id=assignee,
                tag=tag,
                sort=sort,
                descending=order == "desc",
                limit=limit,
                offset=offset,
            ),
        )

    @post(
        "/views/saved",
        status_code=201,
        summary="Save a filter (agents)",
        responses=error_responses(*_BODY, 403),
    )
    async def save_view(
        principal: NamedDependency[Principal], data: JSONBody[SaveViewRequest]
    ) -> SavedView:
        return await service.save_view(principal, data.name, data.query)

    @delete(
        "/views/saved/{view_id:str}",
        status_code=204,
        summary="Delete a saved filter (agents)",
        responses=error_responses(*_ALWAYS, 403, 404),
    )
    async def delete_view(principal: NamedDependency[Principal], view_id: AnyId) -> None:
        await service.delete_view(principal, view_id)

    @get("/macros", summary="Macros (agents)", responses=error_responses(*_ALWAYS, 403))
    async def macros(principal: NamedDependency[Principal]) -> MacroList:
        return MacroList(macros=await service.macros(principal))

    @post(
        "/macros",
        status_code=201,
        summary="Create or replace a macro by name (agents)",
        responses=error_responses(*_BODY, 403),
    )
    async def put_macro(
        principal: NamedDependency[Principal], data: JSONBody[MacroRequest]
    ) -> Macro:
        return await service.put_macro(
            principal,
            Macro(
                id=0,
                name=data.name,
                body=data.body,
                public=data.public,
                status=data.status,
                priority=data.priority,
                assignee_id=data.assignee_id,
            ),
        )

    @post(
        "/tickets/{ticket_id:str}/macros/{macro_id:str}",
        status_code=200,
        summary="Apply a macro to a ticket (agents)",
        responses=error_responses(*_ALWAYS, 403, 404, 409),
    )
    async def apply_macro(
        principal: NamedDependency[Principal], ticket_id: TicketId, macro_id: AnyId
    ) -> Ticket:
        return await service.apply_macro(principal, ticket_id, macro_id)

    @post(
        "/bulk",
        status_code=200,
        summary="Change many tickets at once (agents)",
        responses=error_responses(*_BODY, 403),
    )
    async def bulk(
        principal: NamedDependency[Principal], data: JSONBody[BulkRequest]
    ) -> BulkResponse:
        return BulkResponse(
            results=await service.bulk(
                principal,
                data.ticket_ids,
                status=data.status,
                priority=data.priority,
                assignee_id=data.assignee_id,
                unassign=data.unassign,
                macro_id=data.macro_id,
            )
        )

    @post(
        "/tickets/{ticket_id:str}/merge",
        status_code=200,
        summary="Merge this ticket into another (agents)",
        responses=error_responses(*_BODY, 403, 404, 409),
    )
    async def merge(
        principal: NamedDependency[Principal], ticket_id: TicketId, data: JSONBody[MergeRequest]
    ) -> Ticket:
        return await service.merge(principal, ticket_id, data.into)

    @get(
        "/tickets/{ticket_id:str}/links",
        summary="A ticket's links (merged, related)",
        responses=error_responses(*_ALWAYS, 404),
    )
    async def links(principal: NamedDependency[Principal], ticket_id: TicketId) -> LinkList:
        return LinkList(links=await service.links(principal, ticket_id))

    @post(
        "/tickets/{ticket_id:str}/links",
        status_code=201,
        summary="Relate two tickets (agents)",
        responses=error_responses(*_BODY, 403, 404),
    )
    async def add_link(
        principal: NamedDependency[Principal], ticket_id: TicketId, data: JSONBody[LinkRequest]
    ) -> LinkList:
        return LinkList(links=await service.link(principal, ticket_id, data.other))

    @post(
        "/tickets/{ticket_id:str}/attachments",
        status_code=201,
        summary="Attach a file (raw body; name in ?filename=)",
        description=(
            "The body is the file's bytes.  Allowed extensions: txt, log, csv, json, png, jpg,"
            " jpeg, gif, webp, pdf, zip, gz; at most `[desk] attachment_max_bytes`."
        ),
        responses=error_responses(*_BODY, 403, 404, 409, 415),
        request_max_body_size=service.max_attachment_bytes + _UPLOAD_SLACK,
    )
    async def attach(
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        ticket_id: TicketId,
        filename: Annotated[str, QueryParameter(min_length=1, max_length=255)],
        public: FromQuery[bool] = True,
    ) -> Attachment:
        data = await _read_limited(request, service.max_attachment_bytes)
        return await service.attach(principal, ticket_id, filename, data, public=public)

    @get(
        "/tickets/{ticket_id:str}/attachments",
        summary="A ticket's attachments",
        responses=error_responses(*_ALWAYS, 404),
    )
    async def attachments(
        principal: NamedDependency[Principal], ticket_id: TicketId
    ) -> AttachmentList:
        return AttachmentList(attachments=await service.attachments(principal, ticket_id))

    @get(
        "/attachments/{attachment_id:str}",
        summary="Download an attachment",
        responses=error_responses(*_ALWAYS, 404),
        media_type="application/octet-stream",
    )
    async def download(principal: NamedDependency[Principal], attachment_id: AnyId) -> File:
        meta, path = await service.attachment(principal, attachment_id)
        return attachment_response(meta, path)

    @put(
        "/tickets/{ticket_id:str}/rating",
        summary="Rate a solved ticket (customers)",
        responses=error_responses(*_BODY, 403, 404, 409),
    )
    async def rate(
        principal: NamedDependency[Principal], ticket_id: TicketId, data: JSONBody[RatingRequest]
    ) -> Rating:
        await service.rate(principal, ticket_id, data.rating, data.comment)
        return await _rating(principal, ticket_id)

    @get(
        "/tickets/{ticket_id:str}/rating",
        summary="A ticket's satisfaction rating",
        responses=error_responses(*_ALWAYS, 404),
    )
    async def rating(principal: NamedDependency[Principal], ticket_id: TicketId) -> Rating:
        return await _rating(principal, ticket_id)

    async def _rating(principal: Principal, ticket_id: int) -> Rating:
        got = await service.rating(principal, ticket_id)
        if got is None:
            return Rating(rating=None)
        return Rating(rating=got["rating"], comment=got["comment"], at=got["at"])

    @get(
        "/reports/csat",
        summary="Satisfaction ratings in a window (agents)",
        responses=error_responses(*_ALWAYS, 403),
    )
    async def csat(
        principal: NamedDependency[Principal],
        from_: Annotated[str, QueryParameter(name="from", max_length=40)],
        to: Annotated[str, QueryParameter(max_length=40)],
    ) -> CsatReport:
        if principal.kind != "agent":
            raise DeskError("auth.forbidden", "only agents read reports", 403)
        lo, hi = _parse_instant("from", from_), _parse_instant("to", to)
        if hi <= lo:
            raise DeskError("report.invalid_window", "the window ends before it starts")
        got = await service.csat(lo, hi)
        return CsatReport(good=got["good"], bad=got["bad"], score_pct=got["score_pct"])

    return Router(
        path=PREFIX,
        route_handlers=[
            search,
            views,
            view,
            save_view,
            delete_view,
            macros,
            put_macro,
            apply_macro,
            bulk,
            merge,
            links,
            add_link,
            attach,
            attachments,
            download,
            rate,
            rating,
            csat,
        ],
        dependencies={"principal": Provide(_authenticator(service.tickets))},
        security=[{DESK_KEY: []}],
        exception_handlers={
            DeskError: _desk_error,
            SlaConfigError: _sla_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
        },
        tags=["desk workspace"],
    )


async def _read_limited(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The body, refused with 413 ``attachment.too_large`` as soon as it passes ``limit``
    (a declared Content-Length is checked before anything is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + _UPLOAD_SLACK:
        raise DeskError("attachment.too_large", f"attachment over the limit of {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DeskError(
                "attachment.too_large", f"attachment over the limit of {limit} bytes", 413
            )
        chunks.append(chunk)
    return b"".join(chunks)


def attachment_response(meta: Attachment, path: Any) -> File:
    """The download response of an attachment (API and console share it)."""
    return File(
        path=path,
        media_type=meta.content_type,
        content_disposition_type="attachment",
        headers={
            "Content-Disposition": content_disposition(meta.filename, meta.content_type),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )

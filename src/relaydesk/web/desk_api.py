"""The desk's REST API under ``/api/desk`` (Litestar; OpenAPI from the msgspec types).

Handlers parse and authorise; :class:`~relaydesk.desk.tickets.service.TicketService`
holds the rules.  Every caller presents ``Authorization: Bearer <api key>``; keys belong to
an agent or to a customer contact.  Every 4xx answer has the body
``{"error": {"code": "...", "message": "..."}}`` with a stable code (see
``DeskErrorCode`` and the SLA engine's codes); Litestar's own validation errors are
translated to the same shape with status 422.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from litestar import Request, Response, Router, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter, RawBody
from msgspec import Meta

from relaydesk.desk.reports import REPORT_TABLES, SlaReport, report_csv, report_tx
from relaydesk.desk.sla import (
    Calendar,
    Explanation,
    PriorityTargets,
    SlaCase,
    SlaConfigError,
    SlaPolicy,
    TicketSla,
    explain_case,
)
from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import (
    MAX_TEXT,
    Channel,
    Comment,
    NewTicket,
    Principal,
    Priority,
    Status,
    Ticket,
    TicketFilter,
)
from relaydesk.desk.tickets.service import QueueEntry, TicketDetail, TicketService
from relaydesk.server.security_schemes import DESK_KEY
from relaydesk.storage.engine import Tx
from relaydesk.storage.limits import MAX_ID_PARAM

T = TypeVar("T")

PREFIX: Final = "/api/desk"
#: SLA explain is CPU-bound pure Python: it runs on worker threads, at most this many at
#: once (the machine has two cores), so the event loop keeps serving (issue 10).
EXPLAIN_CONCURRENCY: Final = 2
#: An explanation not ready within this budget (waiting for a slot included) is answered
#: with 503 ``sla.timeout``/``sla.busy``; the engine's input bounds (docs/sla.md, "Limits")
#: keep the worst case at a few seconds, so the abandoned thread ends soon after.
EXPLAIN_BUDGET_S: Final = 10.0

#: A ticket id in a path: bounded so that no id reaches storage that it cannot hold.  The
#: route declares it ``{ticket_id:str}`` so that msgspec, not ``int()``, reads it: ASCII
#: digits only (``int()`` takes '١٢' as 12).
TicketId = Annotated[int, Parameter(ge=1, le=MAX_ID_PARAM, description="a ticket id")]
#: A policy version in a path, read the same way.
PolicyVersion = Annotated[int, Parameter(ge=1, le=MAX_ID_PARAM, description="a policy version")]


# -- request and response bodies ---------------------------------------------------------------


class CommentRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A comment; ``public=False`` makes an internal note (agents only)."""

    body: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT)]
    public: bool = True
    channel: Channel = "ticket"


class StatusRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A status change along the transition table."""

    status: Status


class PriorityRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A priority change; SLA targets are recomputed from creation."""

    priority: Priority


class AssigneeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Assign to an agent, or unassign with ``null``."""

    assignee_id: str | None


class ApplyPolicyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Re-apply a policy version to a ticket; omitted fields default to the latest version
    of the organisation's plan policy."""

    policy_id: str | None = None
    version: Annotated[int, Meta(ge=1)] | None = None


class PolicyDraft(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A new policy version's content; the id comes from the path, the version is assigned."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    targets: dict[str, PriorityTargets]
    pause_statuses: tuple[str, ...] = ("pending",)
    metric_pause_statuses: dict[str, tuple[str, ...]] = {}
    reopen_mode: Literal["resume", "new_cycle"] = "resume"
    warn_fraction: float = 0.75

    def to_policy(self, policy_id: str) -> SlaPolicy:
        """The policy this draft describes under ``policy_id`` (the service assigns the
        version); raises :class:`SlaConfigError` as the engine validates it.  Shared with the
        console's policy editor so both accept and refuse the same documents."""
        return SlaPolicy(
            id=policy_id,
            version=1,
            name=self.name,
            targets=self.targets,
            pause_statuses=self.pause_statuses,
            metric_pause_statuses=self.metric_pause_statuses,
            reopen_mode=self.reopen_mode,
            warn_fraction=self.warn_fraction,
        )


class PolicyList(msgspec.Struct, frozen=True):
    """The latest version of every SLA policy."""

    policies: list[SlaPolicy]


class TicketList(msgspec.Struct, frozen=True):
    """A page of tickets, newest first; pass ``next_before`` as ``before`` for the next."""

    tickets: list[Ticket]
    next_before: int | None


class QueueResponse(msgspec.Struct, frozen=True):
    """The agent queue: active tickets by next target, overdue (negative) first."""

    now: datetime
    entries: list[QueueEntry]


class ErrorBody(msgspec.Struct, frozen=True):
    """A stable dotted machine code (``ticket.not_found``) and a readable message."""

    code: str
    message: str


class ErrorResponse(msgspec.Struct, frozen=True):
    """The body of every 4xx answer of the desk APIs (desk, knowledge base, diagnosis)."""

    error: ErrorBody


_ERROR_DESCRIPTIONS: Final = {
    400: "The body cannot be read: malformed JSON or nested too deeply (`http.400`)",
    401: "No API key, a malformed header, or an unknown or revoked key",
    403: "The key's principal may not do this (`auth.forbidden`)",
    404: "Not found, or not visible to this principal",
    409: "The ticket's state does not allow it",
    413: "The body is over `[http] max_body_bytes` (`http.413`), or an attachment over"
    " `[desk] attachment_max_bytes` (`attachment.too_large`)",
    415: "The attachment's type is not accepted (`attachment.type_not_allowed`)",
    422: "A parameter or field fails validation; `code` names the rule",
    503: "No SLA worker slot free, or no answer within the budget (`sla.busy`, `sla.timeout`)",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a desk-family handler really answers."""
    return {
        status: ResponseSpec(
            ErrorResponse, description=_ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in statuses
    }


#: Every handler: an unreadable request, the key, validation.
_ALWAYS = (400, 401, 422)
#: Handlers that read a body.
_BODY = (*_ALWAYS, 413)


# -- errors ------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> Response[ErrorResponse]:
    return Response(ErrorResponse(error=ErrorBody(code=code, message=message)), status_code=status)


def _desk_error(_request: Request[Any, Any, Any], exc: DeskError) -> Response[ErrorResponse]:
    return _error(exc.status, exc.code, exc.message)


def _sla_error(_request: Request[Any, Any, Any], exc: SlaConfigError) -> Response[ErrorResponse]:
    return _error(422, exc.code, exc.message)


def _validation_code(field: str, message: str) -> str:
    if "length" in message and ("<=" in message or "at most" in message):
        return DeskErrorCode.TOO_LONG
    if field.endswith("priority"):
        return DeskErrorCode.UNKNOWN_PRIORITY
    if field.endswith("status"):
        return DeskErrorCode.UNKNOWN_STATUS
    return DeskErrorCode.REQUEST_INVALID


def _validation_error(
    _request: Request[Any, Any, Any], exc: ValidationException
) -> Response[ErrorResponse]:
    details = exc.extra if isinstance(exc.extra, list) else []
    field, message = "", str(exc.detail)
    for item in details:
        if isinstance(item, dict):
            field = str(item.get("key") or "")
            message = str(item.get("message") or message)
            if "`$." in message:
                field = message.rsplit("`$.", 1)[1].rstrip("`")
            break
    text = f"{field}: {message}" if field else message
    return _error(422, _validation_code(field, message), text)


def _http_error(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    return _error(exc.status_code, f"http.{exc.status_code}", str(exc.detail))


# -- helpers -----------------------------------------------------------------------------------


def _agent_only(principal: NamedDependency[Principal], what: str) -> None:
    if principal.kind != "agent":
        raise DeskError(DeskErrorCode.FORBIDDEN, f"only agents may {what}")


def _parse_instant(label: str, text: str) -> datetime:
    """A report bound: ``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 instant with offset."""
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DeskError(
            DeskErrorCode.REQUEST_INVALID, f"{label}: expected YYYY-MM-DD or ISO 8601, got {text!r}"
        ) from exc
    if dt.utcoffset() is None:
        raise DeskError(DeskErrorCode.REQUEST_INVALID, f"{label} needs a time zone offset")
    return dt.astimezone(UTC)


def _authenticator(service: TicketService) -> Callable[..., Any]:
    async def principal(request: Request[Any, Any, Any]) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise DeskError(
                DeskErrorCode.AUTH_MISSING, "send the header Authorization: Bearer <api key>"
            )
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise DeskError(DeskErrorCode.AUTH_INVALID, "expected Authorization: Bearer <api key>")
        found = await service.authenticate(key.strip())
        if found is None:
            raise DeskError(DeskErrorCode.AUTH_INVALID, "unknown or revoked API key")
        return found

    return principal


class _ThreadSlots:
    """Run CPU-bound calls on worker threads, at most ``size`` at once, within a budget.

    A slot is freed when its thread finishes, not when the caller gives up, so abandoned
    work can never pile up threads; the caller gets 503 ``sla.busy`` (no slot in time) or
    ``sla.timeout`` (no answer in time).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        # One semaphore per event loop (a router may outlive a test client's loop).
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    async def run(self, fn: Callable[[bytes], T], arg: bytes, budget_s: float) -> T:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            self._slots = {lp: sem for lp, sem in self._slots.items() if not lp.is_closed()}
            slots = self._slots[loop] = asyncio.Semaphore(self._size)
        deadline = loop.time() + budget_s
        try:
            await asyncio.wait_for(slots.acquire(), budget_s)
        except TimeoutError:
            raise DeskError(DeskErrorCode.SLA_BUSY, "the SLA engine is busy; retry") from None
        future = loop.run_in_executor(None, fn, arg)

        def done(f: asyncio.Future[T]) -> None:
            slots.release()
            if not f.cancelled():
                f.exception()  # retrieved, so an abandoned failure is not logged as lost

        future.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise DeskError(DeskErrorCode.SLA_TIMEOUT, f"no answer within {budget_s:g} s") from None


# -- the router --------------------------------------------------------------------------------


def desk_router(service: TicketService) -> Router:
    """The ``/api/desk`` router over ``service``."""

    @post(
        "/tickets", status_code=201, summary="Open a ticket", responses=error_responses(*_BODY, 403)
    )
    async def create_ticket(
        principal: NamedDependency[Principal], data: JSONBody[NewTicket]
    ) -> Ticket:
        return await service.create_ticket(principal, data)

    @get("/tickets", summary="List and filter tickets", responses=error_responses(*_ALWAYS))
    async def list_tickets(
        principal: NamedDependency[Principal],
        status: FromQuery[Status | None] = None,
        priority: FromQuery[Priority | None] = None,
        assignee: FromQuery[str | None] = None,
        organisation: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        active: FromQuery[bool] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        before: Annotated[
            int | None, QueryParameter(ge=1, le=MAX_ID_PARAM, description="a ticket id")
        ] = None,
    ) -> TicketList:
        f = TicketFilter(
            status=status,
            priority=priority,
            assignee_id=assignee,
            organisation_id=organisation,
            tag=tag,
            active_only=active,
            limit=limit,
            before_id=before,
        )
        tickets = await service.list_tickets(principal, f)
        return TicketList(
            tickets=tickets, next_before=tickets[-1].id if len(tickets) == limit else None
        )

    @get(
        "/tickets/{ticket_id:str}",
        summary="A ticket with its comments and event log",
        responses=error_responses(*_ALWAYS, 404),
    )
    async def get_ticket(
        principal: NamedDependency[Principal], ticket_id: TicketId
    ) -> TicketDetail:
        return await service.detail(principal, ticket_id)

    @post(
        "/tickets/{ticket_id:str}/comments",
        status_code=201,
        summary="Comment on a ticket",
        responses=error_responses(*_BODY, 403, 404, 409),
    )
    async def comment(
        principal: NamedDependency[Principal],
        ticket_id: TicketId,
        data: JSONBody[CommentRequest],
    ) -> Comment:
        return await service.add_comment(
            principal, ticket_id, data.body, public=data.public, channel=data.channel
        )

    @put(
        "/tickets/{ticket_id:str}/status",
        summary="Change the status (agents; customers: solved, or open to re-open)",
        responses=error_responses(*_BODY, 403, 404, 409),
    )
    async def change_status(
        principal: NamedDependency[Principal],
        ticket_id: TicketId,
        data: JSONBody[StatusRequest],
    ) -> Ticket:
        if principal.kind == "customer" and data.status in ("solved", "open"):
            action: Literal["solve", "reopen"] = "solve" if data.status == "solved" else "reopen"
            return await service.customer_status(principal, ticket_id, action)
        return await service.change_status(principal, ticket_id, data.status)

    @put(
        "/tickets/{ticket_id:str}/priority",
        summary="Change the priority (agents)",
        responses=error_responses(*_BODY, 403, 404, 409),
    )
    async def change_priority(
        principal: NamedDependency[Principal],
        ticket_id: TicketId,
        data: JSONBody[PriorityRequest],
    ) -> Ticket:
        return await service.change_priority(principal, ticket_id, data.priority)

    @put(
        "/tickets/{ticket_id:str}/assignee",
        summary="Assign or unassign (agents)",
        responses=error_responses(*_BODY, 403, 404, 409),
    )
    async def change_assignee(
        principal: NamedDependency[Principal],
        ticket_id: TicketId,
        data: JSONBody[AssigneeRequest],
    ) -> Ticket:
        return await service.assign(principal, ticket_id, data.assignee_id)

    @get(
        "/tickets/{ticket_id:str}/sla",
        summary="SLA status of a ticket, computed now",
        responses=error_responses(*_ALWAYS, 404),
    )
    async def ticket_sla(principal: NamedDependency[Principal], ticket_id: TicketId) -> TicketSla:
        return await service.sla_status(principal, ticket_id)

    @get(
        "/queue",
        summary="The agent queue sorted by next breach (agents)",
        responses=error_responses(*_ALWAYS, 403),
    )
    async def queue(
        principal: NamedDependency[Principal],
        assignee: FromQuery[str | None] = None,
        organisation: FromQuery[str | None] = None,
        mine: FromQuery[bool] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> QueueResponse:
        _agent_only(principal, "read the queue")
        entries = await service.queue(
            principal,
            limit=limit,
            assignee_id=principal.id if mine else assignee,
            organisation_id=organisation,
        )
        return QueueResponse(now=service.now(), entries=entries)

    explain_slots = _ThreadSlots(EXPLAIN_CONCURRENCY)

    @post(
        "/sla/explain",
        status_code=200,
        summary="Explain an SLA case (docs/sla.md)",
        responses=error_responses(*_BODY, 503),
    )
    async def explain(
        principal: NamedDependency[Principal],
        body: RawBody,
    ) -> Explanation:
        """The body is an SLA case file (docs/sla.md, "Case files"), plain or wrapped as
        ``{"case": ..., "expect": ...}``; computed off the event loop within a time budget."""
        return await explain_slots.run(explain_case, body, EXPLAIN_BUDGET_S)

    @get(
        "/sla/policies",
        summary="The latest version of every SLA policy (agents)",
        responses=error_responses(*_ALWAYS, 403),
    )
    async def list_policies(principal: NamedDependency[Principal]) -> PolicyList:
        _agent_only(principal, "read SLA policies")
        return PolicyList(policies=await service.policies())

    @get(
        "/sla/policies/{policy_id:str}/versions/{version:str}",
        summary="One version of an SLA policy (agents)",
        responses=error_responses(*_ALWAYS, 403),
    )
    async def get_policy(
        principal: NamedDependency[Principal], policy_id: FromPath[str], version: PolicyVersion
    ) -> SlaPolicy:
        _agent_only(principal, "read SLA policies")
        return await service.policy_version(policy_id, version)

    @post(
        "/sla/policies/{policy_id:str}/versions",
        status_code=201,
        summary="Store a new version of an SLA policy (agents)",
        responses=error_responses(*_BODY, 403, 409),
    )
    async def add_policy_version(
        principal: NamedDependency[Principal],
        policy_id: FromPath[str],
        data: JSONBody[PolicyDraft],
    ) -> SlaPolicy:
        """The body is a policy without ``id``/``version`` (docs/sla.md, "Policies"); the
        version is the next free one.  New tickets take it; existing ones keep theirs."""
        return await service.add_policy_version(principal, data.to_policy(policy_id))

    @put(
        "/tickets/{ticket_id:str}/sla/policy",
        summary="Re-apply an SLA policy version (agents)",
        responses=error_responses(*_BODY, 403, 404, 409),
    )
    async def apply_policy(
        principal: NamedDependency[Principal],
        ticket_id: TicketId,
        data: JSONBody[ApplyPolicyRequest],
    ) -> Ticket:
        return await service.apply_policy(principal, ticket_id, data.policy_id, data.version)

    @get(
        "/tickets/{ticket_id:str}/sla/case",
        summary="The ticket as an SLA case file",
        responses=error_responses(*_ALWAYS, 404),
    )
    async def ticket_case(principal: NamedDependency[Principal], ticket_id: TicketId) -> SlaCase:
        return await service.sla_case(principal, ticket_id)

    @put(
        "/sla/calendars/{name:str}",
        summary="Create or replace a business-hours calendar",
        responses=error_responses(*_BODY, 403),
    )
    async def put_calendar(
        principal: NamedDependency[Principal],
        name: FromPath[str],
        body: RawBody,
    ) -> Calendar:
        """The body is a calendar document (docs/sla.md, "Calendars")."""
        _agent_only(principal, "change calendars")
        if not 1 <= len(name) <= 64 or not name.isprintable() or name != name.strip():
            raise DeskError(
                DeskErrorCode.REQUEST_INVALID, "calendar name: 1-64 printable characters"
            )
        return await service.put_calendar(name, body)

    @get(
        "/reports/sla",
        summary="SLA report: attainment, percentiles, breaches (agents)",
        responses=error_responses(*_ALWAYS, 403),
    )
    async def sla_report(
        principal: NamedDependency[Principal],
        start: Annotated[str, QueryParameter(name="from", description="YYYY-MM-DD or ISO 8601")],
        end: Annotated[str, QueryParameter(name="to", description="exclusive; YYYY-MM-DD or ISO")],
        format: FromQuery[str] = "json",
        table: FromQuery[str] = "attainment",
    ) -> Response[Any]:
        _agent_only(principal, "read reports")
        lo, hi = _parse_instant("from", start), _parse_instant("to", end)
        if hi <= lo:
            raise DeskError(
                DeskErrorCode.REPORT_INVALID_WINDOW,
                f"report window ends ({hi.isoformat()}) before it starts ({lo.isoformat()})",
            )
        if format not in ("json", "csv"):
            raise DeskError(DeskErrorCode.REPORT_UNKNOWN_FORMAT, "format must be json or csv")
        if table not in REPORT_TABLES:
            raise DeskError(
                DeskErrorCode.REPORT_UNKNOWN_FORMAT, f"table must be one of {REPORT_TABLES}"
            )

        def run(tx: Tx) -> SlaReport:
            return report_tx(service.store, tx, lo, hi)

        report = await service.read(run)
        if format == "csv":
            return Response(
                report_csv(report, table),
                media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="sla-{table}.csv"'},
            )
        return Response(report)

    return Router(
        path=PREFIX,
        route_handlers=[
            create_ticket,
            list_tickets,
            get_ticket,
            comment,
            change_status,
            change_priority,
            change_assignee,
            ticket_sla,
            queue,
            explain,
            list_policies,
            get_policy,
            add_policy_version,
            apply_policy,
            ticket_case,
            put_calendar,
            sla_report,
        ],
        dependencies={"principal": Provide(_authenticator(service))},
        security=[{DESK_KEY: []}],
        exception_handlers={
            DeskError: _desk_error,
            SlaConfigError: _sla_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
        },
        tags=["desk"],
    )

"""Quality API under ``/api/quality`` and Prometheus ``/metrics`` (docs/telemetry.md §API).

Handlers parse and authorise; ``QualityService`` does the reading.  Every call
presents ``Authorization: Bearer <key>``: the app's secret (scoped to that app
only) or the operator key (``[telemetry] operator_key``, every app).  A missing
or malformed header answers 401, a key that does not open the app 403 (the
same for an app that does not exist, so ids cannot be probed), bad parameters
400 — all in the messaging API's error shape (``server/http.py``).

``/metrics`` is unauthenticated, like most Prometheus targets: it carries only
node-level aggregates labelled by node and region (no app, user or client label).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from relaydesk.clock import Clock
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.server.http import MESSAGING_ERROR_HANDLERS, error_responses
from relaydesk.server.security_schemes import APP_SECRET, OPERATOR_KEY
from relaydesk.storage.telemetry import ConnectionRow, TraceRow
from relaydesk.telemetry import Point, SeriesQuery, SeriesResult, Telemetry
from relaydesk.telemetry.metrics import CONTENT_TYPE
from relaydesk.telemetry.query import GroupBy, WorstBy
from relaydesk.telemetry.times import parse_time

PREFIX = "/api/quality"
MAX_POINTS = 20_000  # buckets per series one request may ask for
MAX_RANGE_MS = 400 * 86_400_000


#: Bucket width in seconds: whole minutes, one minute to one day.
Step = Annotated[
    int,
    QueryParameter(
        ge=60, le=86_400, multiple_of=60, description="bucket width in seconds (whole minutes)"
    ),
]


class FlushResult(msgspec.Struct, frozen=True):
    rows: int


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_ARGUMENT, message)


def quality_router(
    telemetry: Telemetry,
    secret_for: Callable[[str], str | None],
    operator_key: str,
    clock: Clock,
) -> Router:
    """The ``/api/quality`` router of one node."""
    service = telemetry.quality

    def credential(request: Request[Any, Any, Any]) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ProtocolError(ErrorCode.TOKEN_INVALID, "missing Authorization: Bearer <key>")
        return value.strip()

    def is_operator(given: str) -> bool:
        return bool(operator_key) and hmac.compare_digest(given.encode(), operator_key.encode())

    def authorise(request: Request[Any, Any, Any], app: str) -> None:
        given = credential(request)
        if is_operator(given):
            if secret_for(app) is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no app {app!r}")
            return
        expected = secret_for(app)
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not authorised for app {app!r}")

    def query(
        app: str,
        from_: str | None,
        to: str | None,
        step_s: int,
        region: str | None,
        node: str | None,
        client_region: str | None,
        group_by: GroupBy,
    ) -> SeriesQuery:
        now_ms = int(clock.time() * 1000)
        try:
            to_ms = parse_time(to, now_ms) if to else now_ms
            from_ms = parse_time(from_, now_ms) if from_ else to_ms - 3_600_000
        except ValueError as exc:
            raise _bad(str(exc)) from None
        from_ms -= from_ms % 60_000
        if to_ms <= from_ms:
            raise _bad("'to' must be after 'from'")
        if to_ms - from_ms > MAX_RANGE_MS:
            raise _bad("the time range is longer than 400 days")
        if (to_ms - from_ms) // (step_s * 1000) > MAX_POINTS:
            raise _bad(f"more than {MAX_POINTS} points; use a larger step")
        for name, value in (("region", region), ("node", node), ("client_region", client_region)):
            if value is not None and not 0 < len(value) <= 256:
                raise _bad(f"{name} must be 1 to 256 characters")
        return SeriesQuery(app, from_ms, to_ms, step_s, region, node, client_region, group_by)

    @get("/apps/{app:str}/series", responses=error_responses(400, 401, 403, 404))
    async def series(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        from_: Annotated[str | None, QueryParameter(name="from")] = None,
        to: FromQuery[str | None] = None,
        step: Step = 60,
        region: FromQuery[str | None] = None,
        node: FromQuery[str | None] = None,
        client_region: FromQuery[str | None] = None,
        group: FromQuery[GroupBy] = "node",
    ) -> SeriesResult:
        """Minute-by-minute (or coarser) quality of ``app``, one series per group.

        ``group`` is ``node`` (per region and node, the default), ``region``,
        ``client_region`` or ``none``; ``region``/``node``/``client_region``
        filter; ``from``/``to`` take ``now``, ``-1h``, epoch or ISO 8601.
        """
        authorise(request, app)
        return await service.series(query(app, from_, to, step, region, node, client_region, group))

    @get("/apps/{app:str}/worst", responses=error_responses(400, 401, 403, 404))
    async def worst(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        from_: Annotated[str | None, QueryParameter(name="from")] = None,
        to: FromQuery[str | None] = None,
        region: FromQuery[str | None] = None,
        node: FromQuery[str | None] = None,
        client_region: FromQuery[str | None] = None,
        group: FromQuery[GroupBy] = "node",
        by: FromQuery[WorstBy] = "delivery_success",
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 10,
    ) -> list[Point]:
        """The worst minutes of ``app`` by ``by`` (e.g. delivery_success, client_ack_p95)."""
        authorise(request, app)
        q = query(app, from_, to, 60, region, node, client_region, group)
        return await service.worst(q, by, limit)

    @get("/apps/{app:str}/traces", responses=error_responses(400, 401, 403, 404))
    async def traces(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        from_: Annotated[str | None, QueryParameter(name="from")] = None,
        to: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=5000)] = 100,
    ) -> list[TraceRow]:
        """Sampled message traces (one row per recipient connection), oldest first."""
        authorise(request, app)
        q = query(app, from_, to, 60, None, None, None, "node")
        return await service.traces(app, q.from_ms, q.to_ms, limit)

    @get("/apps/{app:str}/connections", responses=error_responses(400, 401, 403, 404))
    async def connections(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        from_: Annotated[str | None, QueryParameter(name="from")] = None,
        to: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=5000)] = 100,
    ) -> list[ConnectionRow]:
        """Connection history: closed connections with their disconnect reason."""
        authorise(request, app)
        q = query(app, from_, to, 60, None, None, None, "node")
        return await service.connections(app, q.from_ms, q.to_ms, limit)

    @post(
        "/flush",
        status_code=200,
        responses=error_responses(401, 403),
        security=[{OPERATOR_KEY: []}],
    )
    async def flush(request: Request[Any, Any, Any]) -> FlushResult:
        """Write what the recorder holds now (operator key only; tests and tooling)."""
        if not is_operator(credential(request)):
            raise ProtocolError(ErrorCode.FORBIDDEN, "the operator key is required")
        return FlushResult(rows=await telemetry.flush())

    return Router(
        path=PREFIX,
        route_handlers=[series, worst, traces, connections, flush],
        exception_handlers=MESSAGING_ERROR_HANDLERS,
        security=[{APP_SECRET: []}, {OPERATOR_KEY: []}],
        tags=["quality"],
    )


def metrics_router(telemetry: Telemetry) -> Router:
    """``GET /metrics`` in the Prometheus text format."""

    @get("/metrics", include_in_schema=False)
    async def metrics() -> Response[bytes]:
        return Response(telemetry.metrics.render(), media_type=CONTENT_TYPE)

    return Router(path="/", route_handlers=[metrics], tags=["ops"])

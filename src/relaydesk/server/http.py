"""HTTP API of the messaging core (docs/protocol.md §8): ops and server-side calls.

Server-side calls authenticate with the app secret (``Authorization: Bearer
<secret>``, compared in constant time) and are scoped to the app in the path, so
one tenant's secret never reaches another tenant's data.  History also accepts a
user token, with membership checked.
"""

from __future__ import annotations

import base64
import hmac
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.types import ExceptionHandlersMap
from msgspec import Meta

from relaydesk.protocol.addresses import check_scope, resolve
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import ClientMsgId, Event, Name
from relaydesk.protocol.tokens import verify_token
from relaydesk.server.security_schemes import APP_SECRET, USER_TOKEN
from relaydesk.storage.limits import MAX_ID_PARAM

if TYPE_CHECKING:
    from relaydesk.server.app import RelaydeskServer
    from relaydesk.server.routing.hub import Hub
    from relaydesk.storage.messages import MessageStore

_STATUS = {
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOKEN_INVALID: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_WRONG_APP: 401,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.DUPLICATE_ID_MISMATCH: 409,
    ErrorCode.REVISION_CONFLICT: 409,
    ErrorCode.LOCK_HELD: 409,
    ErrorCode.LOCK_NOT_HELD: 409,
    ErrorCode.METADATA_TOO_LARGE: 413,
    ErrorCode.INTERNAL: 500,
}


class ApiError(msgspec.Struct, frozen=True, omit_defaults=True):
    """A protocol error code (docs/protocol.md §7), its name and a readable message;
    ``rev``: the current revision, with REVISION_CONFLICT only."""

    code: int
    name: str
    message: str
    rev: int | None = None


class ApiErrorBody(msgspec.Struct, frozen=True):
    """The body of every 4xx/5xx answer of the messaging and quality APIs."""

    error: ApiError


_ERROR_DESCRIPTIONS: Final = {
    400: "A parameter or the body is invalid, or the body cannot be read (INVALID_ARGUMENT)",
    401: "No credentials, a malformed header, or a bad user token (TOKEN_*)",
    403: "The credentials do not open this app or conversation (FORBIDDEN)",
    404: "No such app, conversation or channel (NOT_FOUND)",
    409: "The client message id was used before with another payload (DUPLICATE_ID_MISMATCH)",
    413: "The message body or the request body is over its limit (MESSAGE_TOO_LARGE)",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a messaging-family handler really answers."""
    return {
        status: ResponseSpec(
            ApiErrorBody, description=_ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in statuses
    }


def error_response(code: ErrorCode, message: str, rev: int | None = None) -> Response[ApiErrorBody]:
    return Response(
        ApiErrorBody(ApiError(int(code), code.name, message, rev)),
        status_code=_STATUS.get(code, 400),
    )


def protocol_error_handler(_: Request[Any, Any, Any], exc: ProtocolError) -> Response[ApiErrorBody]:
    return error_response(exc.code, exc.message, exc.rev)


def validation_error_handler(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[ApiErrorBody]:
    """A parameter or body that fails its declared type or bounds: 400 INVALID_ARGUMENT."""
    details = exc.extra if isinstance(exc.extra, list) else []
    for item in details:
        if isinstance(item, dict) and item.get("key"):
            return error_response(
                ErrorCode.INVALID_ARGUMENT, f"{item['key']}: {item.get('message') or exc.detail}"
            )
    return error_response(ErrorCode.INVALID_ARGUMENT, str(exc.detail))


#: Framework refusals (malformed JSON, body too large, no such route...) in this API's codes.
_CODE_OF_STATUS = {
    401: ErrorCode.TOKEN_INVALID,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.MESSAGE_TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}


def http_error_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ApiErrorBody]:
    code = _CODE_OF_STATUS.get(exc.status_code, ErrorCode.INVALID_ARGUMENT)
    if exc.status_code >= 500:
        code = ErrorCode.INTERNAL
    return Response(
        ApiErrorBody(ApiError(int(code), code.name, str(exc.detail))),
        status_code=exc.status_code,
        headers=exc.headers,
    )


#: The messaging API's handlers for everything a request can be refused with.
MESSAGING_ERROR_HANDLERS: ExceptionHandlersMap = {
    ProtocolError: protocol_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
}


class BoundedRequest(Request[Any, Any, Any]):
    """Every request of the node: JSON and MessagePack bodies decode with a depth bound.

    msgspec decodes recursively and stops at the interpreter's recursion limit with a
    ``RecursionError``, which is not a decoding error to the framework (it answered 500
    before authentication).  Here it is a client error like any malformed body: 400 in
    the API's own error shape.  The size of every body is bounded by the application's
    ``request_max_body_size`` (``[http] max_body_bytes``).
    """

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise ClientException(detail=_TOO_DEEP) from None

    async def msgpack(self) -> Any:
        try:
            return await super().msgpack()
        except RecursionError:
            raise ClientException(detail=_TOO_DEEP) from None


_TOO_DEEP = "the body nests arrays or objects too deeply"


class PublishRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Publish as ``sender`` to ``to``; ``text`` or base64 ``body_b64``, not both."""

    sender: Name
    to: Annotated[str, Meta(min_length=3, max_length=140)]
    id: ClientMsgId
    text: str | None = None
    body_b64: str | None = None


class PublishResponse(msgspec.Struct, frozen=True):
    conv: str
    seq: int
    pos: int
    ts: int


class MemberRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user: Name
    role: Annotated[str, Meta(pattern="^(owner|member)$")] = "member"


class ChannelRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    public: bool = False


class HistoryResponse(msgspec.Struct, frozen=True):
    conv: str
    items: list[Event]
    more: bool


class PresenceItem(msgspec.Struct, frozen=True):
    user: str
    online: bool
    devices: int
    since: int


def bearer(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise ProtocolError(ErrorCode.TOKEN_INVALID, "missing Authorization: Bearer credentials")
    return value.strip()


def messaging_router(hub: Hub, store: MessageStore, max_body: int) -> Router:
    def require_secret(request: Request[Any, Any, Any], app: str) -> None:
        given = bearer(request).encode()
        # Any secret in force verifies (both during a rotation's overlap, docs/desk.md).
        if not any(hmac.compare_digest(given, s.encode()) for s in hub.token_secrets(app) or ()):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not authorised for app {app!r}")

    @post(
        "/apps/{app:str}/publish",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 409, 413),
    )
    async def publish(
        request: Request[Any, Any, Any], app: FromPath[str], data: JSONBody[PublishRequest]
    ) -> Any:
        """Server-side publish (backends, bots); membership is not required."""
        require_secret(request, app)
        if (data.text is None) == (data.body_b64 is None):
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, "give exactly one of text, body_b64")
        try:
            body = (
                data.text.encode()
                if data.text is not None
                else base64.b64decode(data.body_b64 or "", validate=True)
            )
        except ValueError:
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, "body_b64 is not base64") from None
        if len(body) > max_body:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"body over {max_body} bytes")
        event = await hub.post(app, data.sender, data.to, body, data.id)
        return PublishResponse(conv=event.conv, seq=event.seq, pos=event.pos, ts=event.ts)

    @get(
        "/apps/{app:str}/history",
        responses=error_responses(400, 401, 403, 404),
        security=[{APP_SECRET: []}, {USER_TOKEN: []}],
    )
    async def history(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        conv: FromQuery[str],
        before: Annotated[int | None, QueryParameter(ge=0, le=MAX_ID_PARAM)] = None,
        after: Annotated[int | None, QueryParameter(ge=0, le=MAX_ID_PARAM)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> HistoryResponse:
        """A page of a conversation, for the app (secret) or a member (user token)."""
        credential = bearer(request)
        user: str | None = None
        if credential.count(".") == 2:
            claims = verify_token(
                credential, hub.token_secrets, now=hub.clock.time(), expected_app=app
            )
            user = claims.sub
        else:
            require_secret(request, app)
        conversation = resolve(conv, user or "_admin")
        if user is not None:
            check_scope(claims, conversation)  # a confined token (§2.2)
        items, more = await hub.history(app, user, conversation, before, after, limit)
        return HistoryResponse(conv=conversation.id, items=items, more=more)

    @post(
        "/apps/{app:str}/channels/{channel:str}",
        status_code=200,
        responses=error_responses(400, 401, 403, 413),
    )
    async def channel(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        channel: FromPath[str],
        data: JSONBody[ChannelRequest],
    ) -> dict[str, Any]:
        """Create a channel or change whether anyone in the app may join it."""
        require_secret(request, app)
        await hub.set_public(app, channel, data.public)
        return {"channel": channel, "public": data.public}

    @post(
        "/apps/{app:str}/channels/{channel:str}/members",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 413),
    )
    async def add_member(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        channel: FromPath[str],
        data: JSONBody[MemberRequest],
    ) -> dict[str, Any]:
        require_secret(request, app)
        role = await hub.add_member(app, channel, data.user, data.role)
        return {"channel": channel, "user": data.user, "role": role}

    @get("/apps/{app:str}/presence", responses=error_responses(400, 401, 403))
    async def presence(
        request: Request[Any, Any, Any], app: FromPath[str], users: FromQuery[str]
    ) -> list[PresenceItem]:
        require_secret(request, app)
        names = [u for u in users.split(",") if u][:500]
        return [
            PresenceItem(p.user, p.online, p.devices, p.since) for p in hub.presence(app, names)
        ]

    return Router(
        path="/v1",
        route_handlers=[publish, history, channel, add_member, presence],
        exception_handlers=MESSAGING_ERROR_HANDLERS,
        security=[{APP_SECRET: []}],
        tags=["messaging"],
    )


def _catchup_times(times: list[float | None], logging_in: int = 0) -> dict[str, Any]:
    """Catch-up figures of the welcomed connections (``times``: welcome -> synced, None
    while catching up); ``logging_in``: connections not welcomed yet, counted apart (a
    storm's slow handshakes are not slow catch-up)."""
    done = sorted(t for t in times if t is not None)
    if not done:
        return {"synced": 0, "catching_up": len(times), "logging_in": logging_in}
    return {
        "synced": len(done),
        "catching_up": len(times) - len(done),
        "logging_in": logging_in,
        "synced_p50_ms": round(done[len(done) // 2] * 1000, 1),
        "synced_max_ms": round(done[-1] * 1000, 1),
    }


def ops_router(server: RelaydeskServer) -> Router:
    @get("/healthz", include_in_schema=True)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "node": server.settings.server.node_id}

    @get("/readyz")
    async def readyz() -> Response[dict[str, Any]]:
        """Readiness: storage open and background tasks running."""
        ready = server.ready
        body = {
            "ready": ready,
            "node": server.settings.server.node_id,
            "region": server.settings.server.region,
            "connections": len(server.gateway.connections),
            # Whether this node runs the desk's background jobs (lease or forced).
            "desk_jobs": server.runs_desk_jobs,
            # Live connections that overflowed their queue and were served from storage.
            "slow_consumer_resyncs": sum(c.resyncs for c in server.gateway.connections),
            # Catch-up pages served from the hub's recent events vs read per device,
            # and how long the connected devices took from welcome to synced.
            "catchup": {
                "memory_pages": server.hub.stats["catchup_reads"],
                "storage_pages": server.hub.stats["catchup_storage_reads"],
                **_catchup_times(
                    [c.catchup_s for c in server.gateway.connections if c.active],
                    sum(1 for c in server.gateway.connections if not c.active),
                ),
            },
        }
        if server.hub.bus is not None:
            body["cluster"] = dict(server.hub.cluster_stats)
        return Response(body, status_code=200 if ready else 503)

    return Router(path="/", route_handlers=[healthz, readyz], tags=["ops"])

"""HTTP API of the messaging core (docs/protocol.md §8): ops and server-side calls.

Server-side calls authenticate with the app secret (``Authorization: Bearer
<secret>``, compared in constant time) and are scoped to the app in the path, so
one tenant's secret never reaches another tenant's data.  History also accepts a
user token, with membership checked.
"""

from __future__ import annotations

import base64
import hmac
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from msgspec import Meta

from relaydesk.protocol.addresses import check_scope, resolve
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import ClientMsgId, Event, Name
from relaydesk.protocol.tokens import verify_token

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
    ErrorCode.INTERNAL: 500,
}


class ApiError(msgspec.Struct, frozen=True):
    code: int
    name: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    error: ApiError


def error_response(code: ErrorCode, message: str) -> Response[ErrorBody]:
    return Response(
        ErrorBody(ApiError(int(code), code.name, message)), status_code=_STATUS.get(code, 400)
    )


def protocol_error_handler(_: Request[Any, Any, Any], exc: ProtocolError) -> Response[ErrorBody]:
    return error_response(exc.code, exc.message)


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


def _bearer(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise ProtocolError(ErrorCode.TOKEN_INVALID, "missing Authorization: Bearer credentials")
    return value.strip()


def messaging_router(hub: Hub, store: MessageStore, max_body: int) -> Router:
    def require_secret(request: Request[Any, Any, Any], app: str) -> None:
        expected = hub.secret_for(app)
        given = _bearer(request)
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not authorised for app {app!r}")

    @post("/apps/{app:str}/publish", status_code=200)
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

    @get("/apps/{app:str}/history")
    async def history(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        conv: FromQuery[str],
        before: FromQuery[int | None] = None,
        after: FromQuery[int | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> HistoryResponse:
        """A page of a conversation, for the app (secret) or a member (user token)."""
        credential = _bearer(request)
        user: str | None = None
        if credential.count(".") == 2:
            claims = verify_token(
                credential, hub.secret_for, now=hub.clock.time(), expected_app=app
            )
            user = claims.sub
        else:
            require_secret(request, app)
        conversation = resolve(conv, user or "_admin")
        if user is not None:
            check_scope(claims, conversation)  # a confined token (§2.2)
        items, more = await hub.history(app, user, conversation, before, after, limit)
        return HistoryResponse(conv=conversation.id, items=items, more=more)

    @post("/apps/{app:str}/channels/{channel:str}", status_code=200)
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

    @post("/apps/{app:str}/channels/{channel:str}/members", status_code=200)
    async def add_member(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        channel: FromPath[str],
        data: JSONBody[MemberRequest],
    ) -> dict[str, Any]:
        require_secret(request, app)
        role = await hub.add_member(app, channel, data.user, data.role)
        return {"channel": channel, "user": data.user, "role": role}

    @get("/apps/{app:str}/presence")
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
        exception_handlers={ProtocolError: protocol_error_handler},
        tags=["messaging"],
    )


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
            "fanned_pos": server.hub.fanned_pos,
            # Live connections that overflowed their queue and were served from storage.
            "slow_consumer_resyncs": sum(c.stats["resyncs"] for c in server.gateway.connections),
        }
        if server.hub.bus is not None:
            body["cluster"] = dict(server.hub.cluster_stats)
        return Response(body, status_code=200 if ready else 503)

    return Router(path="/", route_handlers=[healthz, readyz], tags=["ops"])

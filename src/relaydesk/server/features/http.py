"""HTTP API of the Agora-style features (README "HTTP API", docs/protocol.md §5.11-§5.13).

Same conventions as the messaging API (``server/http.py``): the app secret as a
bearer credential for backends, a user token where a user may read, errors in the
``{"error": {...}}`` shape with the codes of §7.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Router, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import MetaEntry, MetaItem, Name
from relaydesk.protocol.tokens import verify_token
from relaydesk.server.features.metadata import MetadataService
from relaydesk.server.http import MESSAGING_ERROR_HANDLERS, ApiErrorBody, bearer
from relaydesk.server.routing.hub import Hub
from relaydesk.server.security_schemes import APP_SECRET, USER_TOKEN

_DESCRIPTIONS = {
    400: "A parameter or the body is invalid (INVALID_ARGUMENT)",
    401: "No credentials, a malformed header, or a bad user token (TOKEN_*)",
    403: "The credentials do not open this app or object (FORBIDDEN)",
    404: "An item to update does not exist (NOT_FOUND)",
    409: "A compare-and-set lost (REVISION_CONFLICT, with the current `rev`), or the"
    " write names a lock the actor does not hold (LOCK_NOT_HELD)",
    413: "A value or the item count is over its limit (METADATA_TOO_LARGE), or the request"
    " body is over the HTTP limit (MESSAGE_TOO_LARGE)",
}


def _responses(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        s: ResponseSpec(ApiErrorBody, description=_DESCRIPTIONS[s], generate_examples=False)
        for s in statuses
    }


class MetadataRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A change: ``op`` set/update/remove, items with optional per-item ``rev``
    (-1 no check, 0 must not exist), ``major`` -1 or the object's current revision;
    ``actor`` is recorded as the items' author (empty: the backend)."""

    op: Literal["set", "update", "remove"]
    items: Annotated[list[MetaEntry], Meta(max_length=128)] = []
    major: Annotated[int, Meta(ge=-1, le=2**53)] = -1
    actor: Annotated[str, Meta(max_length=64, pattern=r"^[A-Za-z0-9_.@-]*$")] = ""
    lock: Annotated[str, Meta(max_length=64)] = ""


class MetadataResponse(msgspec.Struct, frozen=True):
    scope: str
    target: str
    major: int
    items: list[MetaItem]


class MetadataWritten(msgspec.Struct, frozen=True):
    major: int
    pos: int


def features_router(hub: Hub, metadata: MetadataService) -> Router:
    def require_secret(request: Request[Any, Any, Any], app: str) -> None:
        given = bearer(request).encode()
        if not any(hmac.compare_digest(given, s.encode()) for s in hub.token_secrets(app) or ()):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not authorised for app {app!r}")

    async def read(
        request: Request[Any, Any, Any], app: str, scope: str, target: str
    ) -> MetadataResponse:
        credential = bearer(request)
        reader: str | None = None
        if credential.count(".") == 2:
            claims = verify_token(
                credential, hub.token_secrets, now=hub.clock.time(), expected_app=app
            )
            reader = claims.sub
            if scope == "user" and claims.confined and not claims.may_see(target):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not see {target!r}")
            if scope == "channel" and claims.confined and target not in claims.ch:
                raise ProtocolError(ErrorCode.FORBIDDEN, f"not granted channel {target!r}")
        else:
            require_secret(request, app)
        major, items = await metadata.read(app, reader, scope, target)
        return MetadataResponse(scope=scope, target=target, major=major, items=items)

    async def write(
        request: Request[Any, Any, Any], app: str, scope: str, target: str, data: MetadataRequest
    ) -> MetadataWritten:
        require_secret(request, app)
        event = await metadata.change(
            app,
            data.actor,
            scope,
            target,
            data.op,
            data.items,
            major=data.major,
            lock=data.lock,
            privileged=True,
        )
        return MetadataWritten(major=event.seq, pos=event.pos)

    @get(
        "/apps/{app:str}/channels/{channel:str}/metadata",
        responses=_responses(400, 401, 403),
        security=[{APP_SECRET: []}, {USER_TOKEN: []}],
    )
    async def get_channel_metadata(
        request: Request[Any, Any, Any], app: FromPath[str], channel: FromPath[Name]
    ) -> MetadataResponse:
        """A channel's metadata, for the app (secret) or a member (user token)."""
        return await read(request, app, "channel", channel)

    @post(
        "/apps/{app:str}/channels/{channel:str}/metadata",
        status_code=200,
        responses=_responses(400, 401, 403, 404, 409, 413),
    )
    async def change_channel_metadata(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        channel: FromPath[Name],
        data: JSONBody[MetadataRequest],
    ) -> MetadataWritten:
        """Set, update or remove a channel's items as the app's backend; its members
        receive the change event in feed order."""
        return await write(request, app, "channel", channel, data)

    @get(
        "/apps/{app:str}/users/{user:str}/metadata",
        responses=_responses(400, 401, 403),
        security=[{APP_SECRET: []}, {USER_TOKEN: []}],
    )
    async def get_user_metadata(
        request: Request[Any, Any, Any], app: FromPath[str], user: FromPath[Name]
    ) -> MetadataResponse:
        """A user's metadata, for the app (secret) or any user of the app (user token)."""
        return await read(request, app, "user", user)

    @post(
        "/apps/{app:str}/users/{user:str}/metadata",
        status_code=200,
        responses=_responses(400, 401, 403, 404, 409, 413),
    )
    async def change_user_metadata(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        user: FromPath[Name],
        data: JSONBody[MetadataRequest],
    ) -> MetadataWritten:
        """Set, update or remove a user's items as the app's backend; the user's devices
        receive the change event in feed order."""
        return await write(request, app, "user", user, data)

    return Router(
        path="/v1",
        route_handlers=[
            get_channel_metadata,
            change_channel_metadata,
            get_user_metadata,
            change_user_metadata,
        ],
        exception_handlers=MESSAGING_ERROR_HANDLERS,
        security=[{APP_SECRET: []}],
        tags=["messaging"],
    )

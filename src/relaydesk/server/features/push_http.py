"""HTTP API of the offline push webhook (docs/protocol.md "Offline push webhook").

Backends with the app secret (the /v1 app admin API): configure the app's webhook,
read the dead-letter list, set a user's mute and do-not-disturb conversations.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, delete, get, put
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta

from relaydesk.clock import millis
from relaydesk.config import WebhookUrlSetting
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Name
from relaydesk.server.features.push import PushService
from relaydesk.server.http import MESSAGING_ERROR_HANDLERS, bearer, error_responses
from relaydesk.server.security_schemes import APP_SECRET
from relaydesk.storage.push import (
    DeadLetter,
    PushConfig,
    dead_letters_tx,
    delete_config_tx,
    put_config_tx,
    set_mutes_tx,
)


class PushConfigRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The app's push webhook: where, the signing secret (16+ characters), whether a
    preview of plaintext messages may be sent, and the batching window."""

    url: Annotated[WebhookUrlSetting, Meta(min_length=8)]
    secret: Annotated[str, Meta(min_length=16, max_length=200)]
    preview: bool = False
    batch_ms: Annotated[int, Meta(ge=0, le=60_000)] = 1000


class PushConfigView(msgspec.Struct, frozen=True):
    app: str
    url: str
    preview: bool
    batch_ms: int
    stats: dict[str, int]


_NAME = r"[A-Za-z0-9_.@-]{1,64}"
#: A conversation id as events carry it (docs/protocol.md §2.3).
ConvId = Annotated[str, Meta(max_length=140, pattern=rf"^(dm:{_NAME}:{_NAME}|ch:{_NAME})$")]


class MuteRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``muted``: no push for this user at all; ``dnd``: conversation ids (``dm:a:b``,
    ``ch:room``) with do-not-disturb.  Replaces the user's previous settings."""

    muted: bool = False
    dnd: Annotated[list[ConvId], Meta(max_length=1000)] = []


class MuteView(msgspec.Struct, frozen=True):
    user: str
    muted: bool
    dnd: list[str]


def push_router(push: PushService) -> Router:
    hub = push.hub

    def require_secret(request: Request[Any, Any, Any], app: str) -> None:
        given = bearer(request).encode()
        if not any(hmac.compare_digest(given, s.encode()) for s in hub.token_secrets(app) or ()):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not authorised for app {app!r}")

    def view(config: PushConfig) -> PushConfigView:
        return PushConfigView(
            app=config.app,
            url=config.url,
            preview=config.preview,
            batch_ms=config.batch_ms,
            stats=dict(push.stats),
        )

    @put("/apps/{app:str}/push", status_code=200, responses=error_responses(400, 401, 403))
    async def set_push(
        request: Request[Any, Any, Any], app: FromPath[str], data: JSONBody[PushConfigRequest]
    ) -> PushConfigView:
        """Configure (or replace) the app's offline push webhook."""
        require_secret(request, app)
        config = PushConfig(app, data.url, data.secret, data.preview, data.batch_ms)
        now = millis(hub.clock)
        await hub.db.write(lambda tx: put_config_tx(tx, config, now))
        await push.reload()
        return view(config)

    @get("/apps/{app:str}/push", responses=error_responses(401, 403, 404))
    async def get_push(request: Request[Any, Any, Any], app: FromPath[str]) -> PushConfigView:
        """The app's push webhook (never its secret) and this node's push counters."""
        require_secret(request, app)
        await push.reload()
        config = push.config(app)
        if config is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"app {app!r} has no push webhook")
        return view(config)

    @delete("/apps/{app:str}/push", status_code=200, responses=error_responses(401, 403))
    async def delete_push(request: Request[Any, Any, Any], app: FromPath[str]) -> dict[str, bool]:
        """Turn the app's push webhook off."""
        require_secret(request, app)
        removed = await hub.db.write(lambda tx: delete_config_tx(tx, app))
        await push.reload()
        return {"removed": removed}

    @get("/apps/{app:str}/push/dead-letters", responses=error_responses(400, 401, 403))
    async def dead_letters(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[DeadLetter]:
        """Batches that exhausted their retries, newest first (body as sent)."""
        require_secret(request, app)
        return await hub.db.read(lambda tx: dead_letters_tx(tx, app, limit))

    @put(
        "/apps/{app:str}/users/{user:str}/push",
        status_code=200,
        responses=error_responses(400, 401, 403),
    )
    async def set_mutes(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        user: FromPath[Name],
        data: JSONBody[MuteRequest],
    ) -> MuteView:
        """Set a user's mute and do-not-disturb conversations."""
        require_secret(request, app)
        await hub.db.write(lambda tx: set_mutes_tx(tx, app, user, data.muted, data.dnd))
        return MuteView(user=user, muted=data.muted, dnd=sorted(set(data.dnd)))

    return Router(
        path="/v1",
        route_handlers=[set_push, get_push, delete_push, dead_letters, set_mutes],
        exception_handlers=MESSAGING_ERROR_HANDLERS,
        security=[{APP_SECRET: []}],
        tags=["messaging"],
    )

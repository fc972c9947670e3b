"""Node registry, edge directory and draining over HTTP (docs/operations.md, docs/protocol.md §8).

- ``GET /v1/apps/{app}/edges?region=…``: the ranked node list for a client of ``app``
  in ``region``, with the reason for every place.  A client presents its own token
  (``Authorization: Bearer <token>``) or the app's backend its secret; the answer is
  the same for every user of the app, so a token of any user of the app will do.
- ``GET /v1/nodes``: every registered node with its load and drain flag.
- ``POST /v1/nodes/{node}/drain`` and ``…/undrain``: move clients off a node and back.
Both node calls take the operator key (``[telemetry] operator_key``).  Errors have the
messaging API's shape (``server/http.py``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta

from relaydesk.clock import Clock
from relaydesk.edges import EdgeRanking
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.tokens import verify_token
from relaydesk.server.directory import Directory
from relaydesk.server.http import MESSAGING_ERROR_HANDLERS, bearer, error_responses
from relaydesk.server.security_schemes import APP_SECRET, OPERATOR_KEY, USER_TOKEN


class EdgeItem(msgspec.Struct, frozen=True):
    node: str
    url: str
    region: str
    healthy: bool
    cost_ms: float
    why: list[str]


class ExcludedItem(msgspec.Struct, frozen=True):
    node: str
    why: str


class EdgesResponse(msgspec.Struct, frozen=True):
    app: str
    region: str
    edges: list[EdgeItem]
    excluded: list[ExcludedItem]


class NodeItem(msgspec.Struct, frozen=True):
    node: str
    region: str
    url: str
    draining: bool
    drain_reason: str
    alive: bool
    heartbeat_ms: int
    started_ms: int
    connections: int
    capacity: int
    cpu: float


class DrainRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(max_length=500)] = ""


def edges_response(app: str, ranking: EdgeRanking) -> EdgesResponse:
    return EdgesResponse(
        app=app,
        region=ranking.region,
        edges=[
            EdgeItem(e.node_id, e.url, e.region, e.healthy, e.cost_ms, list(e.reasons))
            for e in ranking.edges
        ],
        excluded=[ExcludedItem(node, why) for node, why in ranking.excluded],
    )


def edges_router(
    directory: Directory,
    secret_for: Callable[[str], str | None],
    operator_key: str,
    clock: Clock,
) -> Router:
    registry = directory.registry

    def require_operator(request: Request[Any, Any, Any]) -> None:
        given = bearer(request)
        if not operator_key or not hmac.compare_digest(given.encode(), operator_key.encode()):
            raise ProtocolError(ErrorCode.FORBIDDEN, "the operator key is required")

    def require_app_credential(request: Request[Any, Any, Any], app: str) -> None:
        given = bearer(request)
        if given.count(".") == 2:
            verify_token(given, secret_for, now=clock.time(), expected_app=app)
            return
        expected = secret_for(app)
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not authorised for app {app!r}")

    @get(
        "/apps/{app:str}/edges",
        responses=error_responses(400, 401, 403),
        security=[{USER_TOKEN: []}, {APP_SECRET: []}],
    )
    async def edges(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        region: Annotated[
            str,
            QueryParameter(
                description="the client's region label", pattern=r"^[A-Za-z0-9_.-]{1,64}$"
            ),
        ],
    ) -> EdgesResponse:
        """Nodes for a client of ``app`` in ``region``, best first, with reasons."""
        require_app_credential(request, app)
        return edges_response(app, await directory.rank(app, region))

    @get("/nodes", responses=error_responses(401, 403), security=[{OPERATOR_KEY: []}])
    async def nodes(request: Request[Any, Any, Any]) -> list[NodeItem]:
        """Every registered node, its load and whether it is draining (operator key)."""
        require_operator(request)
        now = clock.time()
        expiry = directory.policy.heartbeat_expiry_s
        return [
            NodeItem(
                node=r.node_id,
                region=r.region,
                url=r.public_url,
                draining=r.draining,
                drain_reason=r.drain_reason,
                alive=now - r.heartbeat_ms / 1000 <= expiry,
                heartbeat_ms=r.heartbeat_ms,
                started_ms=r.started_ms,
                connections=r.connections,
                capacity=r.capacity,
                cpu=r.cpu,
            )
            for r in await registry.nodes()
        ]

    async def change(
        request: Request[Any, Any, Any], node: str, draining: bool, reason: str
    ) -> dict[str, Any]:
        address = request.client.host if request.client else "unknown"
        try:
            row = await registry.set_draining(node, draining, reason, address=address)
        except LookupError:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no node {node!r}") from None
        return {"node": row.node_id, "draining": row.draining, "reason": row.drain_reason}

    @post(
        "/nodes/{node:str}/drain",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 413),
        security=[{OPERATOR_KEY: []}],
    )
    async def drain(
        request: Request[Any, Any, Any], node: FromPath[str], data: JSONBody[DrainRequest]
    ) -> dict[str, Any]:
        """Stop new logins on ``node`` and move its clients to other nodes."""
        require_operator(request)
        return await change(request, node, True, data.reason or "drained by the operator")

    @post(
        "/nodes/{node:str}/undrain",
        status_code=200,
        responses=error_responses(401, 403, 404),
        security=[{OPERATOR_KEY: []}],
    )
    async def undrain(request: Request[Any, Any, Any], node: FromPath[str]) -> dict[str, Any]:
        """Let ``node`` take logins again."""
        require_operator(request)
        return await change(request, node, False, "")

    return Router(
        path="/v1",
        route_handlers=[edges, nodes, drain, undrain],
        exception_handlers=MESSAGING_ERROR_HANDLERS,
        tags=["edges"],
    )

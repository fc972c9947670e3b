"""The console's node controls: the registry on the network-quality page, and the
Drain / Undrain buttons that carry out a diagnosis' "drain edge-b" (docs/operations.md
"Draining a node").  Agents only; every change is in the audit log as the agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from litestar import Request, post
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect

from relaydesk.server.cluster.registry import NodeRegistry

if TYPE_CHECKING:
    from relaydesk.web.console._routes import Console

#: Longest drain reason kept (the registry and the audit log show it).
MAX_REASON = 200


class NodeLine(msgspec.Struct, frozen=True):
    """One registry row as the quality page shows it."""

    node: str
    region: str
    url: str
    draining: bool
    reason: str
    alive: bool
    connections: int
    capacity: int
    cpu: float


async def node_lines(registry: NodeRegistry, now: float, expiry_s: float) -> list[NodeLine]:
    return [
        NodeLine(
            node=r.node_id,
            region=r.region,
            url=r.public_url,
            draining=r.draining,
            reason=r.drain_reason,
            alive=now - r.heartbeat_ms / 1000 <= expiry_s,
            connections=r.connections,
            capacity=r.capacity,
            cpu=r.cpu,
        )
        for r in await registry.nodes()
    ]


def node_handlers(console: Console, registry: NodeRegistry, prefix: str) -> list[HTTPRouteHandler]:
    """``POST {prefix}/nodes/{node}/drain`` and ``…/undrain`` (CSRF-checked forms)."""

    async def change(request: Request[Any, Any, Any], node: str, draining: bool) -> Redirect:
        session = await console.agent(request)
        fields = await console.form(request, session)
        reason = " ".join(fields.get("reason", "").split())[:MAX_REASON]
        if draining and not reason:
            reason = f"drained from the console by {session.principal.id}"
        address = request.client.host if request.client else "unknown"
        try:
            await registry.set_draining(
                node,
                draining,
                reason,
                who=f"agent:{session.principal.id}",
                address=address,
            )
        except LookupError:
            raise NotFoundException(detail=f"no node {node!r}") from None
        back = fields.get("back", "")
        if not back.startswith(prefix + "/quality"):
            back = prefix + "/quality"  # never redirect off the console
        done = "drained" if draining else "undrained"
        sep = "&" if "?" in back else "?"
        return Redirect(f"{back}{sep}done={done}&changed={quote(node)}", status_code=303)

    @post(prefix + "/nodes/{node:str}/drain", include_in_schema=False)
    async def drain(request: Request[Any, Any, Any], node: FromPath[str]) -> Redirect:
        return await change(request, node, True)

    @post(prefix + "/nodes/{node:str}/undrain", include_in_schema=False)
    async def undrain(request: Request[Any, Any, Any], node: FromPath[str]) -> Redirect:
        return await change(request, node, False)

    return [drain, undrain]

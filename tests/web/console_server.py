"""Run a full relaydesk node with the web console mounted (until app.py mounts it).

``python tests/web/console_server.py --port P --data-dir D`` serves exactly what
``relaydesk serve --demo`` serves plus ``console_router``: the gateway on ``/v1/ws``, the
desk API and the console on one port.  Once the composition root mounts the console
itself this script only starts the stock server.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn
from litestar import Litestar

from relaydesk.config import load_settings
from relaydesk.server.app import RelaydeskServer
from relaydesk.server.http import messaging_router, ops_router
from relaydesk.web.console import console_router


def build(settings_overrides: dict[str, Any]) -> RelaydeskServer:
    """A demo node whose HTTP side includes the console."""
    settings = load_settings(None, settings_overrides, environ={})
    node = RelaydeskServer(settings)
    if "/console/sign-in" not in {route.path for route in node.http.routes}:
        node.http = Litestar(
            route_handlers=[
                ops_router(node),
                messaging_router(node.hub, node.store, settings.gateway.max_body),
                node.desk.router,
                console_router(node.desk, node.hub, settings, node.clock),
            ],
            lifespan=[node._lifespan],
            debug=False,
        )
    return node


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")
    node = build(
        {
            "server": {"port": args.port, "data_dir": args.data_dir},
            "demo": True,
            # Fast escalation ticks keep the live tests' SLA states fresh.
            "desk": {"escalation_interval_s": 1.0},
        }
    )
    uvicorn.Server(
        uvicorn.Config(
            node,
            host="127.0.0.1",
            port=args.port,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            ws_ping_interval=None,
            lifespan="on",
            log_level="warning",
            access_log=False,
        )
    ).run()


if __name__ == "__main__":
    main()

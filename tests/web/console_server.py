"""Run a full relaydesk node with the web console mounted, telemetry included.

``python tests/web/console_server.py --port P --data-dir D`` serves what
``relaydesk serve --demo`` serves: the gateway on ``/v1/ws`` and every HTTP router of
the composition root on one port — with the console given the node's telemetry (its
Network quality page reads the query service in-process).  The HTTP side is composed
here, mirroring ``server/app.py``, so that the console gets ``telemetry=`` whether or
not the composition root passes it yet.
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
from relaydesk.web.diagnosis_api import diagnosis_router
from relaydesk.web.knowledge_api import knowledge_router
from relaydesk.web.quality_api import metrics_router, quality_router


def build(settings_overrides: dict[str, Any]) -> RelaydeskServer:
    """A demo node whose HTTP side includes the console, with telemetry."""
    settings = load_settings(None, settings_overrides, environ={})
    node = RelaydeskServer(settings)
    node.http = Litestar(
        route_handlers=[
            ops_router(node),
            messaging_router(node.hub, node.store, settings.gateway.max_body),
            node.desk.router,
            quality_router(
                node.telemetry, node.hub.secret_for, settings.telemetry.operator_key, node.clock
            ),
            metrics_router(node.telemetry),
            console_router(node.desk, node.hub, settings, node.clock, telemetry=node.telemetry),
            knowledge_router(node.knowledge, node.desk.tickets.authenticate),
            diagnosis_router(node.diagnosis, node.desk.tickets.authenticate),
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
            # Quality data reaches the Network quality page within a second.
            "telemetry": {"flush_interval_s": 1.0},
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

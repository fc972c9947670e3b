"""Run a full relaydesk node with the web console mounted, telemetry included.

``python tests/web/console_server.py --port P --data-dir D`` serves what
``relaydesk serve --demo`` serves (the composition root itself), with faster
escalation ticks and telemetry flushes so that the browser tests see changes quickly.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn

from relaydesk.config import load_settings
from relaydesk.server.app import RelaydeskServer
from relaydesk.server.listener import listener_config


def build(settings_overrides: dict[str, Any]) -> RelaydeskServer:
    """A demo node, exactly as ``relaydesk serve`` composes it."""
    return RelaydeskServer(load_settings(None, settings_overrides, environ={}))


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
    # The listener of `relaydesk serve` itself, with its connection limits.
    uvicorn.Server(listener_config(node, node.settings, log_level="warning")).run()


if __name__ == "__main__":
    main()

"""The web console: agent queue, ticket pages, customer portal, SLA report, network quality,
live updates.

Mount ``console_router(desk, hub, settings, clock, telemetry=...)`` beside the desk API
(without ``telemetry`` the Network quality page says telemetry is disabled); see
``docs/console.md``.
"""

from relaydesk.web.console._routes import console_router

__all__ = ["console_router"]

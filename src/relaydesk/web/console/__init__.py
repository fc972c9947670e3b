"""The web console: agent queue, ticket pages, customer portal, SLA report, live updates.

Mount ``console_router(desk, hub, settings, clock)`` beside the desk API; see
``docs/console.md``.
"""

from relaydesk.web.console._routes import console_router

__all__ = ["console_router"]

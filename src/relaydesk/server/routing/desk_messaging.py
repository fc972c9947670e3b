"""The desk's ``Messaging`` port implemented over the hub (war rooms, on-call pages)."""

from __future__ import annotations

from collections.abc import Sequence

from relaydesk.server.routing.hub import Hub


class HubMessaging:
    """Posts as server-side publishes; creates the desk's messaging app on first use."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def _ensure_app(self, app: str) -> None:
        if self._hub.secret_for(app) is None:
            await self._hub.ensure_app(app)

    async def post(self, app: str, sender: str, to: str, body: bytes, client_id: str) -> None:
        await self._ensure_app(app)
        await self._hub.post(app, sender, to, body, client_id)

    async def ensure_channel(self, app: str, channel: str, members: Sequence[str]) -> str:
        await self._ensure_app(app)
        return await self._hub.ensure_channel(app, channel, members)

"""Notices (warnings, breaches, pages) and the pluggable notifiers that deliver them.

A notifier is anything with a ``name``, ``accepts(notice)`` and ``async send(notice)``
that raises on failure.  Delivery is at-least-once per notifier (the scheduler retries
until ``send`` returns); each notifier passes the notice key as the idempotency key of
its transport (``Idempotency-Key`` header, messaging ``client_id``), so a retry after a
crash between sending and recording is recognisable by the receiver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Literal, Protocol

import httpx
import msgspec

from relaydesk.desk.ports import Messaging

NoticeKind = Literal["warning", "breach", "page"]
PageReason = Literal["urgent", "warning", "breach"]


class Notice(msgspec.Struct, frozen=True):
    """What a notifier sends: the webhook JSON body, and the messaging payload."""

    key: str
    kind: NoticeKind
    reason: PageReason | None
    ticket_id: int
    priority: str
    subject: str
    organisation_id: str
    metric: str | None
    target_at: datetime | None
    due_at: datetime
    agent_id: str | None
    text: str


class Notifier(Protocol):
    """A channel through which notices leave the desk."""

    @property
    def name(self) -> str:
        """Stable name recorded with each delivery (changing it re-sends pending ones)."""
        ...

    def accepts(self, notice: Notice) -> bool:
        """Whether this notifier delivers ``notice`` at all."""
        ...

    async def send(self, notice: Notice) -> None:
        """Deliver ``notice``; raise on any failure so the scheduler retries."""
        ...


class NotifierError(Exception):
    """A notifier could not deliver; the scheduler will retry."""


class WebhookNotifier:
    """POSTs every notice as JSON to one URL (pages, warnings and breaches)."""

    name = "webhook"

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout_s)

    def accepts(self, notice: Notice) -> bool:
        """Every notice goes to the webhook."""
        return True

    async def send(self, notice: Notice) -> None:
        """POST the notice; any non-2xx answer or transport error is a failure."""
        try:
            response = await self._client.post(
                self._url,
                content=msgspec.json.encode(notice),
                headers={"Content-Type": "application/json", "Idempotency-Key": notice.key},
            )
        except httpx.HTTPError as exc:
            raise NotifierError(f"webhook {self._url}: {exc!r}") from exc
        if not response.is_success:
            raise NotifierError(f"webhook {self._url} answered {response.status_code}")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


#: Channel that carries pages when nobody is on call.
ONCALL_CHANNEL = "desk-oncall"
#: Sender of desk messages on the messaging side.
DESK_SENDER = "desk-bot"


class ChannelNotifier:
    """Pages over relaydesk itself: to the paged agent, else to the on-call channel."""

    name = "channel"

    def __init__(
        self,
        messaging: Messaging,
        app: str,
        oncall_members: Callable[[], Awaitable[Sequence[str]]],
    ) -> None:
        self._messaging = messaging
        self._app = app
        self._members = oncall_members

    def accepts(self, notice: Notice) -> bool:
        """Only pages go to people's devices; warnings and breaches do not."""
        return notice.kind == "page"

    async def send(self, notice: Notice) -> None:
        """Post the page; the notice key is the message's idempotent client id."""
        body = msgspec.json.encode({"type": "desk.page", "notice": notice})
        if notice.agent_id is not None:
            to = f"user:{notice.agent_id}"
        else:
            members = await self._members()
            await self._messaging.ensure_channel(self._app, ONCALL_CHANNEL, [DESK_SENDER, *members])
            to = f"channel:{ONCALL_CHANNEL}"
        await self._messaging.post(self._app, DESK_SENDER, to, body, notice.key)

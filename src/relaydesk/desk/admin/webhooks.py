"""Signed webhooks for paging and ticket events (docs/desk.md "Signed webhooks").

Theory of operation
-------------------
An administrator registers endpoints (URL, the event types it wants, a secret shown
once).  Events enter an outbox, ``admin_webhook_deliveries``, one row per endpoint and
event, keyed by ``(endpoint, event id)`` so a replayed event is recorded once:

* SLA notices (``page``, ``warning``, ``breach``) through :class:`SignedWebhookNotifier`,
  one more notifier of the escalation scheduler (which already records each notice
  exactly once and retries the enqueue until it commits);
* ticket changes (``ticket.created``, ``ticket.comment``, ``ticket.note``,
  ``ticket.status``, ``ticket.priority``, ``ticket.assignee``) through
  :class:`TicketEvents`, a ticket listener called after each commit.

The :class:`WebhookDispatcher` (on the node that runs the desk's background jobs) posts
due rows.  Each POST carries the JSON body and

``Relaydesk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``

(Stripe's scheme: the timestamp is signed with the body, so a receiver that refuses old
timestamps also refuses replays), plus ``Relaydesk-Event``, ``Relaydesk-Delivery`` and
``Idempotency-Key`` (the event id).  A 2xx answer marks the row delivered; anything else
is retried with exponential back-off (``base_s * 2**attempts``, capped) until
``max_attempts``, then the row is marked failed.  Each row keeps the attempt count, the
last status and the first 500 characters of the last answer: the delivery log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import httpx
import msgspec
from msgspec import Meta

from relaydesk.clock import Clock, millis
from relaydesk.desk.admin.errors import AdminErrorCode, refuse
from relaydesk.desk.admin.model import Actor, Name
from relaydesk.desk.escalation.notifiers import Notice, NotifierError
from relaydesk.desk.tickets.service import TicketChange
from relaydesk.storage.admin import AdminStore, DeliveryRow, EndpointRow
from relaydesk.storage.desk import from_ms
from relaydesk.storage.engine import Database, Tx
from relaydesk.webhooks import SIGNATURE_HEADER, TOLERANCE_S, backoff_s, sign, verify

log = logging.getLogger("relaydesk.desk.webhooks")

# The signature and the retry schedule live in relaydesk.webhooks (the messaging
# server's offline push uses them too); re-exported here for the desk's callers.
__all__ = [
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "TOLERANCE_S",
    "DeliveryView",
    "EndpointSecret",
    "EndpointView",
    "EventType",
    "NewEndpoint",
    "SignedWebhookNotifier",
    "TicketEvents",
    "WebhookDispatcher",
    "Webhooks",
    "sign",
    "verify",
]

EventType = Literal[
    "page",
    "warning",
    "breach",
    "ticket.created",
    "ticket.comment",
    "ticket.note",
    "ticket.status",
    "ticket.priority",
    "ticket.assignee",
]
EVENT_TYPES: Final[tuple[str, ...]] = (
    "page",
    "warning",
    "breach",
    "ticket.created",
    "ticket.comment",
    "ticket.note",
    "ticket.status",
    "ticket.priority",
    "ticket.assignee",
)
#: Characters of the last answer kept in the delivery log.
_KEEP_RESPONSE: Final = 500
#: Rows one dispatcher pass sends (the rest wait for the next pass).
_BATCH: Final = 100

WebhookUrl = Annotated[str, Meta(max_length=2000, pattern=r"^https?://[^\s]+$")]


class NewEndpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Register an endpoint for some event types (its secret is shown once)."""

    name: Name
    url: WebhookUrl
    events: Annotated[tuple[EventType, ...], Meta(min_length=1, max_length=len(EVENT_TYPES))]


class EndpointView(msgspec.Struct, frozen=True):
    """An endpoint (never its secret)."""

    id: str
    name: str
    url: str
    events: tuple[str, ...]
    created_at: datetime
    disabled: bool


class EndpointSecret(msgspec.Struct, frozen=True):
    """A new endpoint with its signing secret, shown this once."""

    endpoint: EndpointView
    secret: str


class DeliveryView(msgspec.Struct, frozen=True):
    """One event to one endpoint: the delivery log's row."""

    id: int
    endpoint_id: str
    event_id: str
    event: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status: int | None
    last_response: str | None
    last_error: str | None


def _endpoint_view(row: EndpointRow) -> EndpointView:
    return EndpointView(
        id=row.id,
        name=row.name,
        url=row.url,
        events=row.events,
        created_at=from_ms(row.created_at),
        disabled=row.disabled_at is not None,
    )


def _delivery_view(row: DeliveryRow) -> DeliveryView:
    state: Literal["pending", "delivered", "failed"] = (
        "delivered" if row.delivered_at is not None else "failed" if row.failed else "pending"
    )
    return DeliveryView(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event=row.event,
        state=state,
        attempts=row.attempts,
        created_at=from_ms(row.created_at),
        next_attempt_at=None if state != "pending" else from_ms(row.next_attempt_at),
        delivered_at=None if row.delivered_at is None else from_ms(row.delivered_at),
        last_status=row.last_status,
        last_response=row.last_response,
        last_error=row.last_error,
    )


class Webhooks:
    """Endpoints, the outbox and its delivery log (administration's part)."""

    def __init__(self, db: Database, store: AdminStore, clock: Clock) -> None:
        self._db = db
        self._store = store
        self._clock = clock
        #: Event types some enabled endpoint wants (refreshed by every dispatcher pass
        #: and every endpoint change on this node).
        self.wanted: frozenset[str] = frozenset()

    def refresh_wanted(self, tx: Tx) -> None:
        """Re-read which event types have an enabled endpoint."""
        self.wanted = frozenset(
            e for row in self._store.endpoints(tx) if row.disabled_at is None for e in row.events
        )

    # -- administration -----------------------------------------------------------------------

    def create(self, tx: Tx, actor: Actor, new: NewEndpoint, audit: Any) -> EndpointSecret:
        """Register an endpoint; its secret is returned this once."""
        secret = "whsec_" + secrets.token_urlsafe(32)
        row = EndpointRow(
            id="wh" + secrets.token_hex(6),
            name=new.name,
            url=new.url,
            events=tuple(dict.fromkeys(new.events)),
            secret=secret,
            created_at=millis(self._clock),
            disabled_at=None,
        )
        self._store.insert_endpoint(tx, row)
        audit(tx, actor, "webhook.created", row.id, url=new.url, events=list(row.events))
        self.refresh_wanted(tx)
        return EndpointSecret(endpoint=_endpoint_view(row), secret=secret)

    def endpoints(self, tx: Tx) -> list[EndpointView]:
        """Every endpoint, by creation."""
        return [_endpoint_view(r) for r in self._store.endpoints(tx)]

    def set_disabled(
        self, tx: Tx, actor: Actor, endpoint_id: str, disabled: bool, audit: Any
    ) -> EndpointView:
        """Disable (pending deliveries stay, nothing new is queued) or enable."""
        if self._store.endpoint(tx, endpoint_id) is None:
            raise refuse(AdminErrorCode.UNKNOWN_WEBHOOK, f"no webhook endpoint {endpoint_id!r}")
        now = millis(self._clock)
        self._store.set_endpoint_disabled(tx, endpoint_id, now if disabled else None)
        audit(tx, actor, "webhook.disabled" if disabled else "webhook.enabled", endpoint_id)
        self.refresh_wanted(tx)
        found = self._store.endpoint(tx, endpoint_id)
        assert found is not None
        return _endpoint_view(found)

    def deliveries(
        self, tx: Tx, *, endpoint_id: str | None = None, limit: int = 50
    ) -> list[DeliveryView]:
        """The delivery log, newest first."""
        return [
            _delivery_view(r)
            for r in self._store.deliveries(tx, endpoint_id=endpoint_id, limit=limit)
        ]

    # -- the outbox ---------------------------------------------------------------------------

    def enqueue_tx(self, tx: Tx, event: str, event_id: str, payload: dict[str, Any]) -> int:
        """Queue ``payload`` for every enabled endpoint that wants ``event`` (once per
        endpoint and event id); return how many rows were added."""
        now = millis(self._clock)
        body = msgspec.json.encode(
            {"id": event_id, "type": event, "created_at": now, "data": payload}
        )
        added = 0
        for row in self._store.endpoints(tx):
            if row.disabled_at is None and event in row.events:
                added += self._store.enqueue_delivery(tx, row.id, event_id, event, body, now)
        return added

    async def enqueue(self, event: str, event_id: str, payload: dict[str, Any]) -> int:
        """:meth:`enqueue_tx` in its own write (skipped when no endpoint wants ``event``)."""
        if event not in self.wanted:
            return 0
        return await self._db.write(lambda tx: self.enqueue_tx(tx, event, event_id, payload))


class SignedWebhookNotifier:
    """The escalation scheduler's notifier for signed webhooks: it puts each page,
    warning and breach into the outbox (the dispatcher signs and sends it)."""

    name = "signed-webhooks"

    def __init__(self, hooks: Webhooks) -> None:
        self._hooks = hooks

    def accepts(self, notice: Notice) -> bool:
        """Only notices some enabled endpoint subscribes to."""
        return notice.kind in self._hooks.wanted

    async def send(self, notice: Notice) -> None:
        """Queue the notice (idempotent by its key)."""
        try:
            await self._hooks.enqueue(notice.kind, notice.key, msgspec.to_builtins(notice))
        except Exception as exc:
            raise NotifierError(f"queueing webhook: {exc!r}") from exc


class TicketEvents:
    """Ticket listener: every committed change becomes a ``ticket.*`` event."""

    def __init__(self, hooks: Webhooks) -> None:
        self._hooks = hooks

    async def ticket_changed(self, change: TicketChange) -> None:
        """Queue the change for the endpoints that want it."""
        t = change.ticket
        event = f"ticket.{change.kind}"
        event_id = f"{event}:{t.id}:{int(t.updated_at.timestamp() * 1000)}"
        await self._hooks.enqueue(event, event_id, {"ticket": msgspec.to_builtins(t)})


class WebhookDispatcher:
    """Signs and sends due deliveries; retries with exponential back-off (module docs)."""

    def __init__(
        self,
        db: Database,
        store: AdminStore,
        hooks: Webhooks,
        clock: Clock,
        *,
        interval_s: float = 1.0,
        timeout_s: float = 5.0,
        base_s: float = 2.0,
        max_backoff_s: float = 3600.0,
        max_attempts: int = 12,
    ) -> None:
        self._db = db
        self._store = store
        self._hooks = hooks
        self._clock = clock
        self._interval = interval_s
        self._base = base_s
        self._max_backoff = max_backoff_s
        self._max_attempts = max_attempts
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._task: asyncio.Task[None] | None = None
        self.sent = self.failed = 0
        #: Checked before every send: False (this node may no longer lead, e.g. a lease
        #: about to expire after a long pause) stops the pass.  None: always send.
        self.fence: Callable[[], bool] | None = None

    def backoff_s(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failed ones."""
        return backoff_s(attempts, self._base, self._max_backoff)

    async def run_once(self) -> int:
        """One pass: send every due delivery; return how many were attempted."""
        now = millis(self._clock)

        def load(tx: Tx) -> Sequence[tuple[DeliveryRow, EndpointRow]]:
            self._hooks.refresh_wanted(tx)
            return self._store.due_deliveries(tx, now, _BATCH)

        due = await self._db.read(load)
        attempted = 0
        for row, endpoint in due:
            if self.fence is not None and not self.fence():
                log.warning("webhook pass stopped: this node no longer holds the lease")
                break
            await self._attempt(row, endpoint)
            attempted += 1
        return attempted

    async def _attempt(self, row: DeliveryRow, endpoint: EndpointRow) -> None:
        timestamp = int(self._clock.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(endpoint.secret, timestamp, row.body),
            "Relaydesk-Event": row.event,
            "Relaydesk-Delivery": str(row.id),
            "Idempotency-Key": row.event_id,
            "User-Agent": "relaydesk-webhooks/1",
        }
        status: int | None = None
        text: str | None = None
        error: str | None = None
        try:
            response = await self._client.post(endpoint.url, content=row.body, headers=headers)
            status, text = response.status_code, response.text[:_KEEP_RESPONSE]
            if not response.is_success:
                error = f"answered {status}"
        except httpx.HTTPError as exc:
            error = (str(exc) or repr(exc))[:_KEEP_RESPONSE]
        now = millis(self._clock)
        attempts = row.attempts + 1
        if error is None:
            self.sent += 1
            await self._db.write(
                lambda tx: self._store.delivery_done(tx, row.id, attempts, now, status, text)
            )
            return
        self.failed += 1
        give_up = attempts >= self._max_attempts
        retry_at = now + int(self.backoff_s(attempts) * 1000)
        log.warning("webhook %s to %s failed (%s)", row.id, endpoint.url, error)
        await self._db.write(
            lambda tx: self._store.delivery_failed(
                tx, row.id, attempts, retry_at, status, text, error, give_up=give_up
            )
        )

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad row must not stop the others
                log.exception("webhook pass failed")
            await asyncio.sleep(self._interval)

    async def start(self) -> None:
        """Start the dispatcher task (owned here, cancelled by :meth:`aclose`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="desk-webhooks")

    async def stop(self) -> None:
        """Stop the task (:meth:`start` resumes it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def aclose(self) -> None:
        """Stop the task and close the HTTP client."""
        await self.stop()
        await self._client.aclose()

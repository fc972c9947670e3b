"""Offline push webhook (docs/protocol.md "Offline push webhook").

Theory of operation
-------------------
The hub's writer hands every message it committed on this node to :meth:`PushService.offer`
(in a cluster each message is committed, hence offered, on exactly one node).  ``offer``
never waits: it puts the event on a bounded queue (``settings.push.queue_max``) and a
full queue drops it and counts ``drops`` -- delivery to online devices never waits on
push.  One drain task takes the queue: events of an app with a push URL collect for the
app's batch window, then the recipients (the other party of a direct conversation, the
other members of a channel) with no connected device on any node (the cluster-wide
presence the lock sweeper uses), not muted and without do-not-disturb on that
conversation, become one signed batch.  Each batch is sent by its own task (at most
``SENDS_MAX`` at once, so a hanging receiver holds a task, never the drain): a 2xx
answer ends it, anything else is retried with the shared back-off
(``relaydesk.webhooks.backoff_s``) until ``max_attempts``, then the batch is written to
the dead-letter list the operator reads.  A preview of the body goes out only if the
app allows it, the app is in ``plaintext`` compliance mode and the message is not
encrypted (``enc`` empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any, Final

import httpx
import msgspec

from relaydesk.clock import millis
from relaydesk.config import PushSettings
from relaydesk.protocol.frames import Event
from relaydesk.server.routing.hub import Hub
from relaydesk.storage import Tx
from relaydesk.storage.keys import mode_tx
from relaydesk.storage.push import (
    DeadLetter,
    PushConfig,
    add_dead_letter_tx,
    configs_tx,
    mutes_tx,
)
from relaydesk.webhooks import SIGNATURE_HEADER, backoff_s, sign

log = logging.getLogger("relaydesk.push")

#: Batches being sent (or waiting to retry) at once; past it a new batch waits for a
#: free slot in its own task (the drain keeps draining).
SENDS_MAX: Final = 64
#: Characters of a message body carried as the preview.
PREVIEW_CHARS: Final = 120
#: How often the drain re-reads the push configuration (other nodes' changes).
CONFIG_REFRESH_S: Final = 5.0
#: Notifications per POST at most (a longer window is split).
BATCH_MAX: Final = 500


class Notification(msgspec.Struct, frozen=True, omit_defaults=True):
    """One message waiting for one offline user."""

    user: str
    conv: str
    seq: int
    pos: int
    sender: str = msgspec.field(name="from")
    id: str = ""
    ts: int = 0
    preview: str | None = None


class PushBatch(msgspec.Struct, frozen=True):
    """The body of one push POST."""

    id: str
    app: str
    created_at: int
    notifications: list[Notification]


class PushService:
    """The offline push webhook of every app served by one hub."""

    def __init__(self, hub: Hub, settings: PushSettings) -> None:
        self.hub = hub
        self.settings = settings
        self._queue: asyncio.Queue[tuple[str, Event, str | None]] = asyncio.Queue(
            settings.queue_max
        )
        self._configs: dict[str, PushConfig] = {}
        self._loaded_at = -1e9
        self._client = httpx.AsyncClient(timeout=settings.timeout_s, follow_redirects=False)
        self._slots = asyncio.Semaphore(SENDS_MAX)
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.stats = {
            "offered": 0,
            "drops": 0,
            "batches": 0,
            "sent": 0,
            "failed_attempts": 0,
            "dead_letters": 0,
            "notifications": 0,
        }

    # -- the commit side (never blocks) ---------------------------------------------

    def offer(self, app: str, event: Event, audience: str | None) -> None:
        """A committed event: queue it if it may need a push (called by the hub)."""
        if event.kind != "msg" or app not in self._configs:
            return
        try:
            self._queue.put_nowait((app, event, audience))
            self.stats["offered"] += 1
        except asyncio.QueueFull:
            self.stats["drops"] += 1

    def configured(self, configs: dict[str, PushConfig]) -> None:
        """Adopt the push configuration (read from storage)."""
        self._configs = configs
        self._loaded_at = self.hub.clock.monotonic()

    def config(self, app: str) -> PushConfig | None:
        return self._configs.get(app)

    async def reload(self) -> None:
        self.configured(await self.hub.db.read(configs_tx))

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        await self.reload()
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="push-drain")

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._sends) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    # -- the drain ------------------------------------------------------------------

    async def _drain(self) -> None:
        mono = self.hub.clock.monotonic
        pending: dict[str, list[tuple[Event, str | None]]] = {}
        due: dict[str, float] = {}
        while True:
            wait = max(0.0, min(due.values()) - mono()) if due else CONFIG_REFRESH_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    app, event, audience = await self._queue.get()
                    config = self._configs.get(app)
                    if config is not None:
                        pending.setdefault(app, []).append((event, audience))
                        due.setdefault(app, mono() + config.batch_ms / 1000)
            try:
                if mono() - self._loaded_at >= CONFIG_REFRESH_S:
                    await self.reload()
                now = mono()
                for app in [a for a, at in due.items() if at <= now]:
                    del due[app]
                    events = pending.pop(app, [])
                    config = self._configs.get(app)
                    if config is not None:
                        await self._dispatch(config, events)
            except Exception:  # a storage hiccup must not end the drain
                log.exception("offline push pass failed")

    async def _dispatch(self, config: PushConfig, events: list[tuple[Event, str | None]]) -> None:
        app = config.app
        store = self.hub.store
        channels = {e.conv for e, audience in events if audience is None and e.conv[:3] == "ch:"}

        def read(tx: Tx) -> tuple[str, dict[str, list[str]]]:
            mode, _ = mode_tx(tx, app)
            return mode, {c: sorted(store.members_tx(tx, app, c)) for c in channels}

        mode, members = await self.hub.db.read(read)
        wanted: list[tuple[str, Event]] = []
        for event, audience in events:
            for user in _recipients(event, audience, members):
                wanted.append((user, event))
        offline = {
            p.user for p in self.hub.presence(app, sorted({u for u, _ in wanted})) if not p.online
        }
        wanted = [(u, e) for u, e in wanted if u in offline]
        if not wanted:
            return
        users = sorted({u for u, _ in wanted})
        muted = await self.hub.db.read(lambda tx: mutes_tx(tx, app, users))
        preview_ok = config.preview and mode == "plaintext"
        notes = [
            Notification(
                user=u,
                conv=e.conv,
                seq=e.seq,
                pos=e.pos,
                sender=e.sender,
                id=e.id,
                ts=e.ts,
                preview=_preview(e) if preview_ok and not e.enc else None,
            )
            for u, e in wanted
            if (u, "") not in muted and (u, e.conv) not in muted
        ]
        for start in range(0, len(notes), BATCH_MAX):
            batch = PushBatch(
                id="push_" + secrets.token_hex(8),
                app=app,
                created_at=millis(self.hub.clock),
                notifications=notes[start : start + BATCH_MAX],
            )
            self.stats["batches"] += 1
            self.stats["notifications"] += len(batch.notifications)
            task = asyncio.create_task(self._send(config, batch), name="push-send")
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, config: PushConfig, batch: PushBatch) -> None:
        body = msgspec.json.encode(batch)
        s = self.settings
        error = ""
        async with self._slots:
            for attempt in range(1, s.max_attempts + 1):
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(config.secret, int(self.hub.clock.time()), body),
                    "Relaydesk-Event": "push",
                    "Idempotency-Key": batch.id,
                    "User-Agent": "relaydesk-push/1",
                }
                try:
                    response = await self._client.post(config.url, content=body, headers=headers)
                    if response.is_success:
                        self.stats["sent"] += 1
                        return
                    error = f"answered {response.status_code}"
                except httpx.HTTPError as exc:
                    error = (str(exc) or repr(exc))[:500]
                self.stats["failed_attempts"] += 1
                log.warning(
                    "push %s to %s failed (attempt %d): %s", batch.id, config.url, attempt, error
                )
                if attempt < s.max_attempts:
                    await asyncio.sleep(backoff_s(attempt, s.base_s, s.max_backoff_s))
        letter = DeadLetter(
            id=batch.id,
            app=batch.app,
            created_at=millis(self.hub.clock),
            attempts=s.max_attempts,
            last_error=error,
            body=body.decode(),
        )
        await self.hub.db.write(lambda tx: add_dead_letter_tx(tx, letter))
        self.stats["dead_letters"] += 1


def _recipients(event: Event, audience: str | None, members: dict[str, list[str]]) -> Iterable[str]:
    """Who the message is for, the sender excluded."""
    if audience is not None:
        users: Iterable[str] = [audience]
    elif event.conv.startswith("dm:"):
        _, a, b = event.conv.split(":")
        users = {a, b}
    else:
        users = members.get(event.conv, [])
    return sorted(u for u in users if u != event.sender)


def _preview(event: Event) -> str:
    return event.body.decode("utf-8", "replace")[:PREVIEW_CHARS]


def push_config_view(config: PushConfig) -> dict[str, Any]:
    """A configuration as the APIs show it (never the secret)."""
    return {
        "app": config.app,
        "url": config.url,
        "preview": config.preview,
        "batch_ms": config.batch_ms,
    }

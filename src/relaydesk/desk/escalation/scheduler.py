"""The escalation scheduler: SLA warnings, breaches and on-call pages, exactly once.

Theory of operation
-------------------
Each tick has two phases.

1. **Scan** (one write transaction per batch).  Tickets whose cached ``next_check_at``
   has passed are recomputed with the SLA engine; :func:`due_notices` lists what is due
   (a warning once ``warn_at`` passed, a breach once a target was missed, and for P0/P1
   tickets an ``urgent`` page as soon as the ticket is created or raised to P0/P1).  Each
   notice is *recorded* under a deterministic unique key together with one pending
   delivery row per notifier that accepts it, and a ticket log entry is appended, all in
   the same transaction that moves ``next_check_at`` forward.  A key already recorded is
   skipped, so re-scanning (after a restart, or a second scheduler) adds nothing.
2. **Deliver.**  Pending deliveries are sent one by one; success marks the row sent,
   failure schedules a retry with capped exponential backoff.  Nothing is lost: a notice
   recorded before a crash is still pending after it.  Nothing is repeated: a sent row
   is never sent again, and the only window for a duplicate (crash after the transport
   accepted it, before the row was marked) is covered by the notice key travelling as
   the transport's idempotency key.

For P0/P1 tickets warnings and breaches are pages (``kind="page"``) and go to the on-call
agent chosen at scan time; lower priorities produce ``warning``/``breach`` notices for
the webhook only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Final

import msgspec

from relaydesk.aio import wait_event
from relaydesk.clock import Clock, utc_datetime
from relaydesk.desk.escalation.notifiers import Notice, NoticeKind, Notifier, PageReason
from relaydesk.desk.escalation.routing import choose_on_call
from relaydesk.desk.sla import TicketSla
from relaydesk.desk.tickets.errors import DeskError
from relaydesk.desk.tickets.model import ACTIVE_STATUSES, URGENT_PRIORITIES, Ticket
from relaydesk.desk.tickets.service import TicketService
from relaydesk.storage.desk import DeskStore, NotificationRow, to_ms
from relaydesk.storage.engine import Database, Tx

log = logging.getLogger("relaydesk.desk.escalation")

#: Tickets recomputed per write transaction: keeps each transaction short (the writer
#: thread is shared with message commits) while draining a backlog in a few ticks.
SCAN_BATCH: Final = 500
#: Deliveries attempted per tick; with a 5 s webhook timeout this bounds a tick's length.
DELIVERY_BATCH: Final = 100
#: Upper bound of the retry backoff for a failing notifier.
MAX_BACKOFF_S: Final = 300.0


def due_notices(
    ticket: Ticket, sla: TicketSla, now: datetime, agent_id: str | None
) -> list[Notice]:
    """Notices due for ``ticket`` at ``now`` given its SLA (pure; keys are deterministic)."""
    urgent = ticket.priority in URGENT_PRIORITIES and ticket.status in ACTIVE_STATUSES
    out: list[Notice] = []

    def notice(
        key: str,
        kind: NoticeKind,
        reason: PageReason | None,
        metric: str | None,
        target: datetime | None,
        due: datetime,
        text: str,
    ) -> Notice:
        return Notice(
            key=key,
            kind=kind,
            reason=reason,
            ticket_id=ticket.id,
            priority=ticket.priority,
            subject=ticket.subject,
            organisation_id=ticket.organisation_id,
            metric=metric,
            target_at=target,
            due_at=due,
            agent_id=agent_id if kind == "page" else None,
            text=text,
        )

    label = f"#{ticket.id} {ticket.priority} {ticket.subject!r}"
    if urgent:
        out.append(
            notice(
                f"urgent:{ticket.id}:{ticket.priority}",
                "page",
                "urgent",
                None,
                None,
                ticket.updated_at if ticket.updated_at <= now else now,
                f"{ticket.priority} ticket {label} needs the on-call engineer",
            )
        )
    for m in sla.metrics:
        if m.state == "breached" and m.breached_at is not None and m.breached_at <= now:
            kind: NoticeKind = "page" if urgent else "breach"
            out.append(
                notice(
                    f"breach:{ticket.id}:{m.metric}:{m.cycle}",
                    kind,
                    "breach" if urgent else None,
                    m.metric,
                    m.target_at,
                    m.breached_at,
                    f"SLA {m.metric} breached on {label} (target {_iso(m.target_at)})",
                )
            )
        elif m.state == "active" and m.warn_at is not None and m.warn_at <= now:
            kind = "page" if urgent else "warning"
            out.append(
                notice(
                    f"warning:{ticket.id}:{m.metric}:{m.cycle}:{m.priority}",
                    kind,
                    "warning" if urgent else None,
                    m.metric,
                    m.target_at,
                    m.warn_at,
                    f"SLA {m.metric} on {label} breaches at {_iso(m.target_at)}",
                )
            )
    return out


def _iso(dt: datetime | None) -> str:
    return "-" if dt is None else dt.isoformat()


class SchedulerStats(msgspec.Struct, frozen=True):
    """A snapshot of the scheduler's counters."""

    ticks: int
    scanned: int
    recorded: int
    delivered: int
    failed: int


class EscalationScheduler:
    """Periodically scans for due SLA notices and delivers them through the notifiers."""

    def __init__(
        self,
        db: Database,
        service: TicketService,
        clock: Clock,
        notifiers: Sequence[Notifier],
        *,
        interval_s: float = 5.0,
    ) -> None:
        self._db = db
        self._service = service
        self._store: DeskStore = service.store
        self._clock = clock
        self._notifiers = {n.name: n for n in notifiers}
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ticks = self._scanned = self._recorded = self._delivered = self._failed = 0

    def statistics(self) -> SchedulerStats:
        """Counters since this instance started."""
        return SchedulerStats(
            ticks=self._ticks,
            scanned=self._scanned,
            recorded=self._recorded,
            delivered=self._delivered,
            failed=self._failed,
        )

    # -- phase 1: scan ------------------------------------------------------------------------

    def scan_tx(self, tx: Tx, now: datetime, limit: int = SCAN_BATCH) -> tuple[int, int]:
        """Recompute due tickets and record their notices; return (scanned, recorded)."""
        now_ms = to_ms(now)
        ids = self._store.due_for_check(tx, now_ms, limit)
        if not ids:
            return 0, 0
        agents = self._store.agents(tx)
        recorded = 0
        for ticket_id in ids:
            ticket = self._store.ticket(tx, ticket_id, for_update=True)
            if ticket is None:  # pragma: no cover - tickets are never deleted
                continue
            try:
                sla = self._service.recompute_tx(tx, ticket_id, now, from_scheduler=True)
            except DeskError as exc:
                # A ticket whose policy or calendar became unusable must not stall paging
                # for every other ticket: look again in an hour, and say why.
                log.error("ticket %s: SLA not computable: %s", ticket_id, exc)
                self._store.set_next_check(tx, ticket_id, now_ms + 3_600_000)
                continue
            pagee = choose_on_call(agents, ticket.skills, ticket.assignee_id, now)
            for n in due_notices(ticket, sla, now, pagee):
                names = [name for name, notifier in self._notifiers.items() if notifier.accepts(n)]
                row = NotificationRow(
                    key=n.key,
                    ticket_id=n.ticket_id,
                    kind=n.kind,
                    metric=n.metric,
                    priority=n.priority,
                    agent_id=n.agent_id,
                    due_at=to_ms(n.due_at),
                    payload=msgspec.json.encode(n),
                )
                if self._store.record_notification(tx, row, names, now_ms):
                    recorded += 1
                    kind = {"warning": "sla_warning", "breach": "sla_breach"}.get(n.kind, "page")
                    self._store.append_event(
                        tx,
                        ticket_id,
                        now_ms,
                        kind,
                        "automation",
                        "escalation",
                        {
                            "key": n.key,
                            "metric": n.metric,
                            "reason": n.reason,
                            "agent_id": n.agent_id,
                            "notifiers": names,
                        },
                    )
        return len(ids), recorded

    # -- phase 2: deliver ---------------------------------------------------------------------

    async def deliver(self, now: datetime) -> tuple[int, int]:
        """Send due deliveries; return (delivered, failed)."""
        now_ms = to_ms(now)
        rows = await self._db.read(
            lambda tx: self._store.pending_deliveries(tx, now_ms, DELIVERY_BATCH)
        )
        delivered = failed = 0
        for row in rows:
            notifier = self._notifiers.get(row.notifier)
            error: str | None = None
            if notifier is None:
                error = f"notifier {row.notifier!r} is not configured"
            else:
                try:
                    await notifier.send(msgspec.json.decode(row.payload, type=Notice))
                except Exception as exc:  # any failure means "retry later"
                    error = str(exc) or repr(exc)
            if error is None:
                delivered += 1
                await self._db.write(
                    partial(self._store.mark_sent, key=row.key, notifier=row.notifier, now=now_ms)
                )
            else:
                failed += 1
                backoff = min(self._interval * 2**row.attempts, MAX_BACKOFF_S)
                retry_at = to_ms(now + timedelta(seconds=backoff))
                log.warning("delivery %s via %s failed: %s", row.key, row.notifier, error)
                await self._db.write(
                    partial(
                        self._store.mark_failed,
                        key=row.key,
                        notifier=row.notifier,
                        error=error,
                        next_attempt_at=retry_at,
                    )
                )
        return delivered, failed

    async def tick(self) -> SchedulerStats:
        """One scan-and-deliver pass at the clock's current time."""
        now = utc_datetime(self._clock)
        while True:
            scanned, recorded = await self._db.write(lambda tx: self.scan_tx(tx, now))
            self._scanned += scanned
            self._recorded += recorded
            if scanned < SCAN_BATCH:
                break
        delivered, failed = await self.deliver(now)
        self._delivered += delivered
        self._failed += failed
        self._ticks += 1
        return self.statistics()

    # -- lifecycle ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Run the next tick now instead of at the end of the interval."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad ticket must not stop paging for the others
                log.exception("escalation tick failed")
            self._wake.clear()
            await wait_event(self._wake, self._interval)

    async def start(self) -> None:
        """Start the periodic task (owned here, cancelled by :meth:`aclose`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="desk-escalation")

    async def aclose(self) -> None:
        """Stop the periodic task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

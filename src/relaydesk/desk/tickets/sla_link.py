"""The seam between the ticket log and the pure SLA engine.

``sla_events`` turns the append-only ticket log into the engine's input; ``summarise``
turns the engine's output into what the ticket row caches (queue key, next scheduler
check, per-metric rows for reports).  ``SlaDocuments`` decodes stored policies and
calendars once: policy versions are immutable, calendars are re-read when their
fingerprint changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

import msgspec

from relaydesk.desk.sla import Calendar, SlaEvent, SlaPolicy, TicketSla
from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import SLA_INPUT_KINDS, SlaState, TicketEvent
from relaydesk.storage.desk import DeskStore, SlaRow, SlaSummary, opt_ms, to_ms
from relaydesk.storage.engine import Tx


def sla_events(events: Sequence[TicketEvent]) -> list[SlaEvent]:
    """The engine's view of a ticket log (audit-only events are skipped)."""
    out: list[SlaEvent] = []
    for e in events:
        if e.kind not in SLA_INPUT_KINDS:
            continue
        if e.kind == "created":
            out.append(
                SlaEvent(
                    at=e.at,
                    kind="created",
                    priority=e.data["priority"],
                    status=e.data.get("status", "new"),
                )
            )
        elif e.kind == "priority_changed":
            out.append(SlaEvent(at=e.at, kind="priority_changed", priority=e.data["to"]))
        elif e.kind == "status_changed":
            out.append(SlaEvent(at=e.at, kind="status_changed", status=e.data["to"]))
        else:
            out.append(
                SlaEvent(
                    at=e.at,
                    kind="comment",
                    author_role=e.actor_kind,
                    public=bool(e.data.get("public", True)),
                    channel=e.data.get("channel", "ticket"),
                )
            )
    return out


def overall_state(sla: TicketSla) -> SlaState:
    """One word for the queue: breached beats active beats paused beats achieved."""
    states = {m.state for m in sla.metrics}
    for s in ("breached", "active", "paused", "achieved"):
        if s in states:
            return s
    return "none"


def due_at(sla: TicketSla) -> datetime | None:
    """Earliest target of a metric not yet fulfilled, including targets already missed."""
    targets = [
        m.target_at
        for m in sla.metrics
        if m.fulfilled_at is None and m.target_at is not None and m.state in ("active", "breached")
    ]
    return min(targets) if targets else None


def next_check(sla: TicketSla, now: datetime, *, from_scheduler: bool) -> datetime | None:
    """When the escalation scheduler must look at the ticket again.

    After an event (``from_scheduler=False``) a warning or breach already due makes the
    ticket due now, so the scheduler records it promptly; the scheduler itself, having
    recorded everything due, asks only for the next future instant.
    """
    future: list[datetime] = []
    past_due = False
    for m in sla.metrics:
        if m.state == "breached" and m.fulfilled_at is None:
            past_due = True
        if m.state != "active":
            continue
        for t in (m.warn_at, m.target_at):
            if t is None:
                continue
            if t > now:
                future.append(t)
            else:
                past_due = True
    if past_due and not from_scheduler:
        return now
    return min(future) if future else None


def summarise(sla: TicketSla, now: datetime, *, from_scheduler: bool = False) -> SlaSummary:
    """What the ticket row and the per-metric rows cache from one computation."""
    check = next_check(sla, now, from_scheduler=from_scheduler)
    return SlaSummary(
        sla_state=overall_state(sla),
        next_breach_at=opt_ms(sla.next_breach_at),
        due_at=opt_ms(due_at(sla)),
        next_check_at=opt_ms(check),
        acknowledged_at=opt_ms(sla.acknowledged_at),
        first_response_at=opt_ms(sla.first_response_at),
        metrics=tuple(
            SlaRow(
                metric=m.metric,
                state=m.state,
                target_at=opt_ms(m.target_at),
                warn_at=opt_ms(m.warn_at),
                breached_at=opt_ms(m.breached_at),
                fulfilled_at=opt_ms(m.fulfilled_at),
                elapsed_s=m.elapsed_seconds,
                budget_s=m.budget_seconds,
            )
            for m in sla.metrics
        ),
    )


class SlaDocuments:
    """Decoded SLA policies and calendars, cached per instance (never module-global)."""

    def __init__(self, store: DeskStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._policies: dict[tuple[str, int], SlaPolicy] = {}
        self._calendars: dict[str, Calendar] = {}
        self._calendar_fp: tuple[int, int] | None = None

    def policy(self, tx: Tx, policy_id: str, version: int) -> SlaPolicy:
        """A stored policy version (immutable, so cached forever)."""
        key = (policy_id, version)
        hit = self._policies.get(key)
        if hit is not None:
            return hit
        body = self._store.policy(tx, policy_id, version)
        if body is None:
            raise DeskError(
                DeskErrorCode.UNKNOWN_POLICY, f"no SLA policy {policy_id!r} version {version}"
            )
        policy = msgspec.json.decode(body, type=SlaPolicy)
        with self._lock:
            self._policies[key] = policy
        return policy

    def calendars(self, tx: Tx) -> dict[str, Calendar]:
        """All named calendars, re-decoded only when one was added or replaced."""
        fp = self._store.calendars_version(tx)
        with self._lock:
            if fp == self._calendar_fp:
                return self._calendars
        decoded = {
            name: msgspec.json.decode(body, type=Calendar)
            for name, (body, _updated) in self._store.calendars(tx).items()
        }
        with self._lock:
            self._calendars, self._calendar_fp = decoded, fp
        return decoded


def ms_now(now: datetime) -> int:
    """``now`` as the store's epoch milliseconds."""
    return to_ms(now)

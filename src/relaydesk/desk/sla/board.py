"""SLA status of many tickets, kept current incrementally.

Theory of operation
-------------------
``compute_sla`` replays a ticket's whole log; doing that for every open ticket on every
tick costs about 70 µs a ticket (bench.desk), so 100,000 tickets take seconds.  But
between two ticks almost nothing changes, and the engine's rules (docs/sla.md,
engine.py's theory of operation) say exactly *when* a ticket's status can change
without a new event:

* an active metric becomes breached only once ``now`` passes its target (a segment
  breaches when its target is strictly before ``now``);
* it becomes at risk once ``now`` reaches its warning time;
* an event stamped in the future counts once ``now`` reaches it;
* everything else (modes, windows, targets, fulfilments, earlier breaches) depends on
  the events at or before ``now`` only.

So a ticket's :class:`SlaStatus` computed at ``t0`` is the status at every ``now`` before
its ``valid_until`` (the earliest of those instants) as long as its events are the same.
:class:`SlaBoard` keeps, per ticket, the last status and that instant; ``refresh(now)``
recomputes with ``compute_sla`` only the tickets whose events changed (``update``) or
whose ``valid_until`` has come, found through a heap, and leaves the rest alone.  The
pure engine stays the one place the rules live: the board never derives a status itself,
it only decides when the engine must be asked again.  ``tests/desk/sla/test_board.py``
checks it against ``compute_sla`` at random instants.

The board is pure: time is the ``now`` argument, there is no I/O; ``elapsed`` and
``remaining`` business seconds are not part of the status (they move with every tick:
ask the engine for one ticket when they are wanted).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal

import msgspec

from ._time import INF, US, from_us, to_us
from .calendar import Calendar
from .engine import MAX_HORIZON_DAYS, TicketSla, compute_sla
from .errors import SlaConfigError
from .policy import SlaEvent, SlaPolicy

TicketState = Literal["breached", "at_risk", "active", "paused", "achieved"]


class SlaStatus(msgspec.Struct, frozen=True):
    """What the queue shows of one ticket's SLA at ``now``.

    ``state`` is the worst over the metrics: ``breached`` (a metric breached),
    ``at_risk`` (an active metric has passed its warning time), ``active``, ``paused``,
    ``achieved`` (every measured metric achieved).  ``metrics`` is each metric's engine
    state, ``next_breach_at`` the earliest target of the active metrics (the queue's
    order), ``warn_at`` the earliest warning time still ahead among them."""

    state: TicketState
    metrics: tuple[tuple[str, str], ...]
    next_breach_at: datetime | None
    warn_at: datetime | None
    breached_at: datetime | None


def sla_status(sla: TicketSla, now: datetime) -> SlaStatus:
    """The :class:`SlaStatus` of an engine result computed at ``now``."""
    states = tuple((m.metric, m.state) for m in sla.metrics)
    breaches = [m.breached_at for m in sla.metrics if m.breached_at is not None]
    active = [m for m in sla.metrics if m.state == "active"]
    warned = any(m.warn_at is not None and m.warn_at <= now for m in active)
    ahead = [m.warn_at for m in active if m.warn_at is not None and m.warn_at > now]
    state: TicketState
    if any(s == "breached" for _, s in states):
        state = "breached"
    elif warned:
        state = "at_risk"
    elif active:
        state = "active"
    elif any(s == "paused" for _, s in states):
        state = "paused"
    else:
        state = "achieved"
    return SlaStatus(
        state=state,
        metrics=states,
        next_breach_at=sla.next_breach_at,
        warn_at=min(ahead) if ahead else None,
        breached_at=min(breaches) if breaches else None,
    )


def valid_until(sla: TicketSla, events: Sequence[SlaEvent], now: datetime) -> int:
    """The first instant (epoch µs) at which ``sla`` (computed at ``now`` from ``events``)
    may no longer hold with the same events; ``INF`` when it never changes by itself."""
    now_us = to_us(now, "now")
    limit = INF
    for m in sla.metrics:
        if m.state != "active":
            continue  # paused, achieved and breached change only with an event
        for t in (m.target_at, m.warn_at):
            if t is not None:
                us = to_us(t, "target")
                if us > now_us:
                    limit = min(limit, us)
                elif us == now_us:
                    limit = min(limit, now_us + 1)  # at the instant itself: decided next µs
    created = None
    for e in events:
        us = to_us(e.at, "event time")
        if us > now_us:
            limit = min(limit, us)  # a future-dated event starts to count then
        if e.kind == "created":
            created = us
    if created is not None:
        limit = min(limit, created + MAX_HORIZON_DAYS * 86400 * US)
    return limit


class _Entry(msgspec.Struct):
    events: Sequence[SlaEvent]
    policy: SlaPolicy
    status: SlaStatus | None = None
    until: int = -1  # recompute when now >= until; -1: never computed
    generation: int = 0  # bumps on update, so stale heap items are skipped
    error: str | None = None  # the engine refused this ticket's log (SlaConfigError)


class BoardStats(msgspec.Struct, frozen=True):
    """Counters since the board was made (a frozen snapshot)."""

    tickets: int
    computed: int
    refreshes: int


class SlaBoard:
    """The SLA status of many tickets at a moving ``now``, recomputing only what changed.

    ``update(ticket_id, events, policy)`` registers a ticket or replaces its log (after
    any new event); ``remove`` drops it (closed, deleted).  ``refresh(now)`` brings every
    status to ``now`` and returns the ids it recomputed; ``status(ticket_id)`` reads one.
    ``now`` must not go backwards (the statuses are only valid forwards in time).
    """

    def __init__(self, calendars: Mapping[str, Calendar]) -> None:
        self._calendars = dict(calendars)
        self._entries: dict[int, _Entry] = {}
        self._dirty: set[int] = set()
        self._heap: list[tuple[int, int, int]] = []  # (until, ticket, generation)
        self._now = -1
        self._computed = 0
        self._refreshes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def update(self, ticket_id: int, events: Sequence[SlaEvent], policy: SlaPolicy) -> None:
        """Register ``ticket_id`` or replace its events (its status is recomputed next)."""
        old = self._entries.get(ticket_id)
        gen = old.generation + 1 if old is not None else 0
        self._entries[ticket_id] = _Entry(events=events, policy=policy, generation=gen)
        self._dirty.add(ticket_id)

    def remove(self, ticket_id: int) -> None:
        """Forget ``ticket_id`` (its heap item, if any, is skipped when it comes up)."""
        self._entries.pop(ticket_id, None)
        self._dirty.discard(ticket_id)

    def status(self, ticket_id: int) -> SlaStatus | None:
        """The status as of the last ``refresh`` (None before the ticket's first one)."""
        entry = self._entries.get(ticket_id)
        return None if entry is None else entry.status

    def statuses(self) -> Iterable[tuple[int, SlaStatus]]:
        """Every ticket's status as of the last ``refresh``."""
        for tid, entry in self._entries.items():
            if entry.status is not None:
                yield tid, entry.status

    def errors(self) -> dict[int, str]:
        """Tickets the engine refused at the last refresh that computed them, and why
        (``code: message``); they have no status until their events change."""
        return {tid: e.error for tid, e in self._entries.items() if e.error is not None}

    def statistics(self) -> BoardStats:
        return BoardStats(
            tickets=len(self._entries), computed=self._computed, refreshes=self._refreshes
        )

    def refresh(self, now: datetime) -> list[int]:
        """Bring every status to ``now``; return the ids recomputed.  A ticket whose log
        the engine refuses (:class:`SlaConfigError`) gets no status and is listed by
        :meth:`errors`; one bad ticket never stops the others."""
        now_us = to_us(now, "now")
        if now_us < self._now:
            raise ValueError(f"refresh at {now.isoformat()} is before the last one")
        self._now = now_us
        self._refreshes += 1
        due = self._dirty
        self._dirty = set()
        heap = self._heap
        while heap and heap[0][0] <= now_us:
            _until, tid, gen = heapq.heappop(heap)
            entry = self._entries.get(tid)
            if entry is not None and entry.generation == gen:
                due.add(tid)
        now_dt = from_us(now_us)
        for tid in due:
            entry = self._entries.get(tid)
            if entry is None:
                continue
            entry.generation += 1
            try:
                sla = compute_sla(entry.policy, self._calendars, entry.events, now_dt)
            except SlaConfigError as exc:
                entry.status, entry.error, entry.until = None, f"{exc.code}: {exc.message}", INF
                continue
            entry.status, entry.error = sla_status(sla, now_dt), None
            entry.until = valid_until(sla, entry.events, now_dt)
            if entry.until != INF:
                heapq.heappush(heap, (entry.until, tid, entry.generation))
        self._computed += len(due)
        return sorted(due)

"""The SLA engine: ticket events in, per-metric clock states out.

Theory of operation
-------------------
``compute_sla`` is a pure function of (policy, calendars, events, now).  It never reads a clock
and does no I/O; the same inputs always give the same output, so the desk can recompute a
ticket's SLA from its event log at any time (docs/sla.md is the normative description).

1. **Replay.**  Events (stably sorted by time, those after ``now`` ignored) are folded into a
   timeline: the status history, the priority history, the acknowledgement (first public
   automation comment), the first response (first public human-agent comment on the ticket
   channel) and the measurement *cycles* of each metric:

   * ``first_response``: one cycle per ticket, from creation to the first response.
   * ``next_response``: after the first response, a customer comment opens a cycle when none is
     open; the next public agent comment closes it.
   * ``resolution``: from creation to solved/closed.  On a re-open, ``resume`` keeps one cycle
     (the solved period does not count) and ``new_cycle`` starts a fresh one at the re-open.

2. **Modes.**  Within a cycle the clock is in one of three modes, derived from the status:
   ``run``, ``pause`` (status in the metric's pause statuses; for reply metrics also while
   solved/closed, since nobody is waiting for a reply) and ``done`` (resolution only: solved in
   the middle of a ``resume`` cycle).  The ``run`` stretches are the *windows*; only business
   time inside windows counts, so a pause removes exactly the business time that would have
   counted and nothing else.

3. **Targets.**  The priority history splits the cycle into segments.  Each segment's
   priority selects a target (budget + calendar); the target instant ``T`` is where that
   budget is used up walking the windows on that calendar from the cycle start (so a priority
   change recomputes from the original start minus pauses).  A segment breaches when its ``T``
   is strictly before the segment's end (the next priority change, the fulfilment, or ``now``):
   a reply exactly at ``T`` is on time.  ``T`` may lie before the segment began (an upgrade
   whose target had already passed): the breach is then dated ``T``.  The breach time is the
   earliest ``T`` of any breaching segment; a later downgrade never undoes a breach.  (Taking
   the minimum keeps the rule monotone: adding a pause can only move every ``T`` later, so it
   can never make a breach earlier.)

4. **Output.**  The segment in force at the fulfilment (or at ``now``) gives the reported
   target, warning time (``warn_fraction`` of the budget, on the same windows), elapsed and
   remaining business time.  History entries are derived from the mode transitions, the
   fulfilment and the breach, so the same events always give the same history.

All instants are integer microseconds (``_time``) so that boundary comparisons are exact.

5. **Bounds.**  Instants lie in 1970..2200 and ``now`` at most :data:`MAX_HORIZON_DAYS` after
   the creation; targets are at most about a year (``policy.MAX_TARGET_*``).  Every walk along
   a calendar is therefore bounded, whatever the input (docs/sla.md, "Limits").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

import msgspec

from ._time import INF, US, from_us, to_us
from .calendar import Calendar, _CalendarIndex, calendar_24x7, calendar_index
from .errors import SlaConfigError
from .policy import (
    CALENDAR_24X7,
    END_OF_DAY_KINDS,
    RESOLVED_STATUSES,
    MetricName,
    SlaEvent,
    SlaPolicy,
    Target,
)

MetricState = Literal["active", "paused", "achieved", "breached"]
HistoryKind = Literal["activate", "pause", "resume", "fulfil", "breach"]
_Mode = Literal["run", "pause", "done"]
_METRIC_ORDER: Final[dict[str, int]] = {"first_response": 0, "next_response": 1, "resolution": 2}
#: How far after the ticket's creation ``now`` may be (about ten years).  It bounds the open
#: time any computation walks; a dispute is raised long before, and a longer-lived open ticket
#: is a data problem the error names rather than a computation that never ends.
MAX_HORIZON_DAYS: Final = 3660


class SlaHistoryEntry(msgspec.Struct, frozen=True):
    """One immutable clock event: ``kind`` happened to ``metric`` (cycle ``cycle``) at ``at``."""

    at: datetime
    metric: MetricName
    kind: HistoryKind
    cycle: int = 1


class MetricStatus(msgspec.Struct, frozen=True):
    """The state of one metric's current (latest) cycle.

    ``elapsed_seconds`` is business time counted up to the fulfilment or ``now``;
    ``remaining_seconds = budget_seconds - elapsed_seconds`` (negative when overdue).
    ``budget_seconds`` of an ``end_of_business_day`` target is the open time from the cycle
    start to that end of day.  ``target_at``/``warn_at`` are None while the clock is paused
    with budget left (the target is unknown until it resumes).  ``paused`` lists the wall-clock
    stretches the clock stood still (end None = still paused).
    """

    metric: MetricName
    state: MetricState
    target_at: datetime | None
    target_local: str | None
    warn_at: datetime | None
    breached_at: datetime | None
    fulfilled_at: datetime | None
    elapsed_seconds: float
    remaining_seconds: float | None
    budget_seconds: float | None
    paused: list[tuple[datetime, datetime | None]]
    calendar: str
    started_at: datetime
    priority: str
    cycle: int = 1
    breach_count: int = 0


class TicketSla(msgspec.Struct, frozen=True):
    """SLA result for one ticket.  ``next_breach_at`` is the earliest target among active
    metrics (for queue sorting); ``history`` is chronological."""

    policy_id: str
    policy_version: int
    priority: str
    status: str
    metrics: list[MetricStatus]
    next_breach_at: datetime | None
    acknowledged_at: datetime | None
    first_response_at: datetime | None
    history: list[SlaHistoryEntry]

    def metric(self, name: MetricName) -> MetricStatus | None:
        """The status of metric ``name``, or None when it is not measured (yet)."""
        for m in self.metrics:
            if m.metric == name:
                return m
        return None


# -- internal result types (used by explain) ---------------------------------------------------


@dataclass(slots=True)
class _Segment:
    start: int
    priority: str
    target: Target | None
    calendar: str
    budget: int | None  # µs
    due: int | None  # µs; None = not reached within the known windows


@dataclass(slots=True)
class _CycleResult:
    metric: MetricName
    cycle: int
    start: int
    fulfilled: int | None
    modes: list[tuple[int, _Mode]]
    windows: list[tuple[int, int]]
    segments: list[_Segment]
    breached_at: int | None
    status: MetricStatus | None
    history: list[SlaHistoryEntry] = field(default_factory=list)


@dataclass(slots=True)
class _Computation:
    sla: TicketSla
    cycles: list[_CycleResult]
    calendars: dict[str, Calendar]
    now: int


@dataclass(slots=True)
class _Timeline:
    created: int
    statuses: list[tuple[int, str]]
    priorities: list[tuple[int, str]]
    acknowledged: int | None = None
    first_response: int | None = None
    next_cycles: list[tuple[int, int | None]] = field(default_factory=list)


def compute_sla(
    policy: SlaPolicy,
    calendars: Mapping[str, Calendar],
    events: Sequence[SlaEvent],
    now: datetime,
) -> TicketSla:
    """Compute the SLA state of one ticket at ``now`` from its events.

    ``calendars`` maps names used by ``policy`` targets to calendars; ``24x7`` (always open,
    UTC) exists implicitly unless the mapping overrides it.  ``events`` must start with a
    ``created`` event; they are sorted stably by time and those after ``now`` are ignored.
    Raises :class:`SlaConfigError` on inconsistent input.
    """
    return _compute(policy, calendars, events, now).sla


def _compute(
    policy: SlaPolicy,
    calendars: Mapping[str, Calendar],
    events: Sequence[SlaEvent],
    now: datetime,
) -> _Computation:
    now_us = to_us(now, "now")
    cals: dict[str, Calendar] = dict(calendars)
    if CALENDAR_24X7 not in cals:
        cals[CALENDAR_24X7] = calendar_24x7()
    for name in sorted(policy.calendar_names()):
        if name not in cals:
            raise SlaConfigError("policy.unknown_calendar", f"policy refers to calendar {name!r}")
    tl = _replay(events, now_us)
    if now_us - tl.created > MAX_HORIZON_DAYS * 86400 * US:
        raise SlaConfigError(
            "case.horizon",
            f"now is more than {MAX_HORIZON_DAYS} days after the ticket was created",
        )
    engine = _Engine(policy, cals, tl, now_us)
    cycles = engine.run()
    metrics: list[MetricStatus] = []
    history: list[SlaHistoryEntry] = []
    latest: dict[str, _CycleResult] = {}
    breaches: dict[str, int] = {}
    for c in cycles:
        history.extend(c.history)
        if c.breached_at is not None:
            breaches[c.metric] = breaches.get(c.metric, 0) + 1
        if c.status is not None:
            # Each cycle's status counts the breaches of its metric up to and including
            # itself, so the latest cycle's count is the ticket's total.
            c.status = msgspec.structs.replace(c.status, breach_count=breaches.get(c.metric, 0))
            latest[c.metric] = c
    for name in ("first_response", "next_response", "resolution"):
        if name in latest:
            st = latest[name].status
            assert st is not None
            metrics.append(st)
    history.sort(key=lambda h: (h.at, _METRIC_ORDER[h.metric], h.cycle))
    active = [m.target_at for m in metrics if m.state == "active" and m.target_at is not None]
    sla = TicketSla(
        policy_id=policy.id,
        policy_version=policy.version,
        priority=tl.priorities[-1][1],
        status=tl.statuses[-1][1],
        metrics=metrics,
        next_breach_at=min(active) if active else None,
        acknowledged_at=None if tl.acknowledged is None else from_us(tl.acknowledged),
        first_response_at=None if tl.first_response is None else from_us(tl.first_response),
        history=history,
    )
    return _Computation(sla=sla, cycles=cycles, calendars=cals, now=now_us)


def _replay(events: Sequence[SlaEvent], now: int) -> _Timeline:
    stamped = sorted(((to_us(e.at, "event time"), e) for e in events), key=lambda p: p[0])
    tl: _Timeline | None = None
    open_cycle: int | None = None
    for t, ev in stamped:
        if t > now:
            break
        if ev.kind == "created":
            if tl is not None:
                raise SlaConfigError("case.bad_event", "more than one created event")
            assert ev.priority is not None  # checked by SlaEvent
            tl = _Timeline(
                created=t, statuses=[(t, ev.status or "new")], priorities=[(t, ev.priority)]
            )
            continue
        if tl is None:
            raise SlaConfigError("case.bad_event", f"{ev.kind} event before the created event")
        if ev.kind == "priority_changed":
            assert ev.priority is not None
            tl.priorities.append((t, ev.priority))
        elif ev.kind == "status_changed":
            assert ev.status is not None
            tl.statuses.append((t, ev.status))
        elif ev.channel == "ticket":  # comment; war-room posts never count
            role = ev.author_role
            if role == "agent" and ev.public:
                if tl.first_response is None:
                    tl.first_response = t
                elif open_cycle is not None:
                    tl.next_cycles.append((open_cycle, t))
                    open_cycle = None
            elif role == "automation" and ev.public:
                if tl.acknowledged is None:
                    tl.acknowledged = t
            elif role == "customer" and tl.first_response is not None and open_cycle is None:
                open_cycle = t
    if tl is None:
        raise SlaConfigError("case.bad_event", "no created event at or before now")
    if open_cycle is not None:
        tl.next_cycles.append((open_cycle, None))
    return tl


class _Engine:
    """Evaluates every cycle of one ticket; short-lived, one per ``compute_sla`` call."""

    __slots__ = ("cals", "idx", "now", "policy", "tl")

    def __init__(
        self, policy: SlaPolicy, cals: dict[str, Calendar], tl: _Timeline, now: int
    ) -> None:
        self.policy = policy
        self.cals = cals
        self.idx: dict[str, _CalendarIndex] = {}
        self.tl = tl
        self.now = now

    def index(self, name: str) -> _CalendarIndex:
        hit = self.idx.get(name)
        if hit is None:
            hit = self.idx[name] = calendar_index(self.cals[name])
        return hit

    def run(self) -> list[_CycleResult]:
        tl = self.tl
        policy = self.policy

        def reply_mode(metric: MetricName) -> Callable[[str], _Mode]:
            pause = frozenset(policy.pauses_for(metric))

            def mode(st: str) -> _Mode:
                return "pause" if st in pause or st in RESOLVED_STATUSES else "run"

            return mode

        res_pause = frozenset(policy.pauses_for("resolution"))

        def resume_mode(st: str) -> _Mode:
            if st in RESOLVED_STATUSES:
                return "done"
            return "pause" if st in res_pause else "run"

        def cycle_mode(st: str) -> _Mode:
            return "pause" if st in res_pause else "run"

        out: list[_CycleResult] = [
            self.evaluate(
                "first_response", 1, tl.created, tl.first_response, reply_mode("first_response")
            )
        ]
        next_mode = reply_mode("next_response")
        for i, (start, end) in enumerate(tl.next_cycles, 1):
            out.append(self.evaluate("next_response", i, start, end, next_mode))
        # resolution: find solve / reopen transitions
        solves: list[tuple[int, int | None]] = []  # (solved_at, reopened_at)
        resolved = False
        for t, st in tl.statuses:
            now_resolved = st in RESOLVED_STATUSES
            if now_resolved and not resolved:
                solves.append((t, None))
            elif resolved and not now_resolved:
                solves[-1] = (solves[-1][0], t)
            resolved = now_resolved
        if self.policy.reopen_mode == "resume":
            final = solves[-1][0] if solves and solves[-1][1] is None else None
            out.append(self.evaluate("resolution", 1, tl.created, final, resume_mode))
        else:
            start = tl.created
            n = 1
            for solved_at, reopened_at in solves:
                out.append(self.evaluate("resolution", n, start, solved_at, cycle_mode))
                if reopened_at is None:
                    break
                start, n = reopened_at, n + 1
            else:
                out.append(self.evaluate("resolution", n, start, None, cycle_mode))
        return out

    def modes(
        self, start: int, fulfilled: int | None, mode_of: Callable[[str], _Mode]
    ) -> list[tuple[int, _Mode]]:
        statuses = self.tl.statuses
        current = statuses[0][1]
        for t, st in statuses:
            if t > start:
                break
            current = st
        modes: list[tuple[int, _Mode]] = [(start, mode_of(current))]
        limit = fulfilled if fulfilled is not None else self.now + 1
        for t, st in statuses:
            if t <= start:
                continue
            if t >= limit:
                break
            m = mode_of(st)
            if modes[-1][0] == t:
                modes[-1] = (t, m)
                if len(modes) > 1 and modes[-2][1] == m:
                    modes.pop()
            elif modes[-1][1] != m:
                modes.append((t, m))
        return modes

    def evaluate(
        self,
        metric: MetricName,
        cycle: int,
        start: int,
        fulfilled: int | None,
        mode_of: Callable[[str], _Mode],
    ) -> _CycleResult:
        now = self.now
        modes = self.modes(start, fulfilled, mode_of)
        # The last run window is open-ended even after a fulfilment: the target is where the
        # budget would have run out had the clock kept going (so achieved metrics show it too).
        windows: list[tuple[int, int]] = []
        stops: list[tuple[int, int | None]] = []
        for k, (t, m) in enumerate(modes):
            last = k + 1 == len(modes)
            if m == "run":
                end = INF if last else modes[k + 1][0]
                if end > t:
                    windows.append((t, end))
            else:
                stops.append((t, fulfilled if last else modes[k + 1][0]))
        horizon = fulfilled if fulfilled is not None else now
        # priority segments over [start, horizon]
        prios = self.tl.priorities
        prio = prios[0][1]
        for t, p in prios:
            if t > start:
                break
            prio = p
        seg_starts: list[tuple[int, str]] = [(start, prio)]
        for t, p in prios:
            if start < t and (t < horizon if fulfilled is not None else t <= now):
                if seg_starts[-1][0] == t:
                    seg_starts[-1] = (t, p)
                else:
                    seg_starts.append((t, p))
        segments: list[_Segment] = []
        breached_at: int | None = None
        for i, (s, p) in enumerate(seg_starts):
            seg = self.segment(metric, start, s, p, windows)
            segments.append(seg)
            if seg.due is not None:
                last = i == len(seg_starts) - 1
                limit = horizon if last else seg_starts[i + 1][0]
                if seg.due < limit and (breached_at is None or seg.due < breached_at):
                    breached_at = seg.due
        cur = segments[-1]
        result = _CycleResult(
            metric=metric,
            cycle=cycle,
            start=start,
            fulfilled=fulfilled,
            modes=modes,
            windows=windows,
            segments=segments,
            breached_at=breached_at,
            status=None,
        )
        if cur.target is None and breached_at is None:
            return result  # not measured at the current priority
        idx = self.index(cur.calendar)
        upto = min(horizon, now)
        elapsed = sum(idx.between(a, min(b, upto)) for a, b in windows if a < upto)
        warn_at: int | None = None
        if cur.budget is not None:
            warn_at = _exhaust(idx, windows, round(cur.budget * self.policy.warn_fraction))
        state: MetricState
        if breached_at is not None:
            state = "breached"
        elif fulfilled is not None:
            state = "achieved"
        elif modes[-1][1] != "run":
            state = "paused"
        else:
            state = "active"
        due = cur.due
        result.status = MetricStatus(
            metric=metric,
            state=state,
            target_at=None if due is None else from_us(due),
            target_local=None if due is None else self.cals[cur.calendar].local_iso(from_us(due)),
            warn_at=None if warn_at is None else from_us(warn_at),
            breached_at=None if breached_at is None else from_us(breached_at),
            fulfilled_at=None if fulfilled is None else from_us(fulfilled),
            elapsed_seconds=elapsed / US,
            remaining_seconds=None if cur.budget is None else (cur.budget - elapsed) / US,
            budget_seconds=None if cur.budget is None else cur.budget / US,
            paused=[(from_us(a), None if b is None else from_us(b)) for a, b in stops],
            calendar=cur.calendar,
            started_at=from_us(start),
            priority=cur.priority,
            cycle=cycle,
        )
        result.history = _history(metric, cycle, modes, fulfilled, breached_at)
        return result

    def segment(
        self,
        metric: MetricName,
        start: int,
        seg_start: int,
        prio: str,
        windows: list[tuple[int, int]],
    ) -> _Segment:
        target = self.policy.targets[prio].get(metric)
        if target is None:
            return _Segment(seg_start, prio, None, CALENDAR_24X7, None, None)
        idx = self.index(target.calendar)
        if target.kind in END_OF_DAY_KINDS:
            end = idx.end_of_nth_business_day(start, target.nth_day, target.cutoff_minute())
            budget = max(idx.between(start, end), round(target.min_seconds * US))
        else:
            budget = round(target.duration_seconds(self.cals[target.calendar]) * US)
        return _Segment(
            seg_start, prio, target, target.calendar, budget, _exhaust(idx, windows, budget)
        )


def _exhaust(idx: _CalendarIndex, windows: list[tuple[int, int]], budget: int) -> int | None:
    """Where ``budget`` µs of open time within ``windows`` is used up (None: not within them)."""
    remaining = budget
    for ws, we in windows:
        if we == INF:
            return idx.add(ws, remaining)
        got = idx.between(ws, we)
        if got >= remaining:
            return idx.add(ws, remaining)
        remaining -= got
    return None


def _history(
    metric: MetricName,
    cycle: int,
    modes: list[tuple[int, _Mode]],
    fulfilled: int | None,
    breached_at: int | None,
) -> list[SlaHistoryEntry]:
    out: list[tuple[int, HistoryKind]] = [(modes[0][0], "activate")]
    if modes[0][1] == "pause":
        out.append((modes[0][0], "pause"))
    for (_t0, prev), (t, m) in itertools.pairwise(modes):
        if m == "done":
            out.append((t, "fulfil"))
            continue
        if prev == "done":
            out.append((t, "activate"))
            if m == "pause":
                out.append((t, "pause"))
        elif m == "pause":
            out.append((t, "pause"))
        else:
            out.append((t, "resume"))
    if fulfilled is not None:
        out.append((fulfilled, "fulfil"))
    if breached_at is not None:
        out.append((breached_at, "breach"))
    out.sort(key=lambda p: p[0])
    return [SlaHistoryEntry(at=from_us(t), metric=metric, kind=k, cycle=cycle) for t, k in out]

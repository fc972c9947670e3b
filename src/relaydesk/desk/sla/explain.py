"""Explain an SLA outcome from a self-contained JSON case ("why did this breach?").

The case schema is documented in docs/sla.md ("Case files").  The explainer runs the same
engine as :func:`compute_sla` and then lays out the arithmetic of each metric cycle: the budget
rule, the open intervals counted (with durations and a running total), the business time removed
by pauses, and the holidays skipped.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Final

import msgspec

from ._time import INF, US, from_us, to_us
from .calendar import Calendar, _CalendarIndex, calendar_index
from .engine import MetricStatus, TicketSla, _compute, _CycleResult
from .errors import SlaConfigError
from .policy import (
    END_OF_DAY_KINDS,
    SlaEvent,
    SlaPolicy,
    Target,
    default_calendars,
    default_policy,
)

#: Case-file bounds (docs/sla.md, "Limits"): a real ticket's log is a few hundred events;
#: these bound what one request to the explainer can make the engine do.
MAX_CASE_BYTES: Final = 1 << 20
MAX_CASE_EVENTS: Final = 5000
MAX_CASE_CALENDARS: Final = 32
#: The explainer lists at most this many counted intervals in all (the rest are counted in
#: each cycle's ``counted_omitted``); the totals always cover everything.  It keeps the
#: answer to a ticket with thousands of reply cycles at a few megabytes.
MAX_COUNTED_LINES: Final = 5000


class PlanRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The customer plan a case was measured under and the policy version it applied."""

    id: str
    policy_id: str
    policy_version: int
    name: str = ""


class SlaCase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A self-contained SLA case: calendars and policy (both optional: defaults), events, now.

    ``organisation`` and ``plan`` say whose contract the case replays; when ``plan`` is given
    the policy used must be the version it names (docs/sla.md, "Case files").
    """

    events: list[SlaEvent]
    now: datetime
    calendars: dict[str, Calendar] | None = None
    policy: SlaPolicy | None = None
    title: str = ""
    organisation: str | None = None
    plan: PlanRef | None = None

    def applied_policy(self) -> SlaPolicy:
        """The policy the case is measured with: ``policy``, else the default (which a
        ``plan`` may only name as ``default`` version 1)."""
        policy = self.policy if self.policy is not None else default_policy()
        plan = self.plan
        if plan is not None and (plan.policy_id, plan.policy_version) != (
            policy.id,
            policy.version,
        ):
            if self.policy is None:
                raise SlaConfigError(
                    "case.plan_policy_missing",
                    f"plan {plan.id!r} applies policy {plan.policy_id!r} v{plan.policy_version};"
                    " include that policy in the case",
                )
            raise SlaConfigError(
                "case.plan_mismatch",
                f"plan {plan.id!r} applies policy {plan.policy_id!r} v{plan.policy_version},"
                f" the case carries {policy.id!r} v{policy.version}",
            )
        return policy


class _Envelope(msgspec.Struct, frozen=True):
    """Just enough of a document to tell a wrapped test case from a plain one."""

    case: msgspec.Raw = msgspec.Raw(b"")


class _Wrapped(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The test suite's ``{"case": ..., "expect": ...}`` form; ``expect`` is not checked."""

    case: SlaCase
    expect: msgspec.Raw = msgspec.Raw(b"")


class SpanLine(msgspec.Struct, frozen=True):
    """One open interval counted towards the budget; ``total_seconds`` is the running sum."""

    start: datetime
    end: datetime
    start_local: str
    end_local: str
    seconds: float
    total_seconds: float


class PauseLine(msgspec.Struct, frozen=True):
    """A stretch with the clock stopped and the business time it removed (up to the target)."""

    start: datetime
    end: datetime | None
    removed_seconds: float


class HolidayLine(msgspec.Struct, frozen=True):
    """A holiday in the measured range that would otherwise have had open hours."""

    date: date
    name: str


class SegmentLine(msgspec.Struct, frozen=True):
    """The target in force from ``since`` (a priority change starts a new segment)."""

    since: datetime
    priority: str
    calendar: str
    budget_seconds: float | None
    target_at: datetime | None
    rule: str


class MetricExplanation(msgspec.Struct, frozen=True):
    """The arithmetic behind one metric cycle."""

    metric: str
    cycle: int
    calendar: str
    timezone: str
    status: MetricStatus
    segments: list[SegmentLine]
    counted: list[SpanLine]
    counted_seconds: float
    pauses: list[PauseLine]
    holidays: list[HolidayLine]
    conclusion: str
    counted_omitted: int = 0


class Explanation(msgspec.Struct, frozen=True):
    """The computed :class:`TicketSla` plus the arithmetic of every metric cycle."""

    sla: TicketSla
    metrics: list[MetricExplanation]
    now: datetime
    title: str = ""
    organisation: str | None = None
    plan: PlanRef | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (datetimes as ISO strings, tuples as lists)."""
        out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(self))
        return out

    def to_text(self) -> str:
        """A human-readable report, one block per metric cycle."""
        s = self.sla
        lines = [f"case: {self.title}"] if self.title else []
        if self.organisation is not None or self.plan is not None:
            plan = "-" if self.plan is None else f"{self.plan.id}"
            if self.plan is not None and self.plan.name:
                plan += f" ({self.plan.name})"
            lines.append(f"organisation {self.organisation or '-'}; plan {plan}")
        lines += [
            f"policy {s.policy_id} v{s.policy_version}; priority {s.priority}; status {s.status}; "
            f"now {_iso(self.now)}",
            f"acknowledged_at: {_iso(s.acknowledged_at)}; "
            f"first_response_at: {_iso(s.first_response_at)}; "
            f"next_breach_at: {_iso(s.next_breach_at)}",
        ]
        for m in self.metrics:
            st = m.status
            lines.append("")
            lines.append(
                f"== {m.metric} (cycle {m.cycle}) on calendar '{m.calendar}' ({m.timezone}) =="
            )
            lines.append(f"  started: {_iso(st.started_at)}")
            for seg in m.segments:
                lines.append(f"  from {_iso(seg.since)} priority {seg.priority}: {seg.rule}")
                lines.append(f"    -> target {_iso(seg.target_at)}")
            if m.counted:
                lines.append("  open time counted:")
                for sp in m.counted:
                    lines.append(
                        f"    {sp.start_local} .. {sp.end_local}  +{_dur(sp.seconds)}"
                        f"  = {_dur(sp.total_seconds)}"
                    )
                if m.counted_omitted:
                    lines.append(
                        f"    ... {m.counted_omitted} more intervals, {_dur(m.counted_seconds)}"
                        " in all"
                    )
            for p in m.pauses:
                end = _iso(p.end) if p.end is not None else "(still paused)"
                lines.append(
                    f"  paused {_iso(p.start)} .. {end}: removed {_dur(p.removed_seconds)}"
                    " of open time"
                )
            for h in m.holidays:
                lines.append(f"  holiday skipped: {h.date.isoformat()} {h.name}")
            lines.append(
                f"  state: {st.state}; target {_iso(st.target_at)} (local {st.target_local}); "
                f"warn {_iso(st.warn_at)}"
            )
            lines.append(
                f"  elapsed {_dur(st.elapsed_seconds)}; remaining "
                f"{'-' if st.remaining_seconds is None else _dur(st.remaining_seconds)}; "
                f"breached_at {_iso(st.breached_at)}; fulfilled_at {_iso(st.fulfilled_at)}"
            )
            lines.append(f"  => {m.conclusion}")
        return "\n".join(lines) + "\n"


def parse_case(raw: bytes | str) -> SlaCase:
    """Decode and validate a case file; any problem raises :class:`SlaConfigError`.

    Accepts the plain case and the test suite's ``{"case": ..., "expect": ...}`` wrapper.
    """
    if len(raw) > MAX_CASE_BYTES:
        raise SlaConfigError("case.too_large", f"a case file is at most {MAX_CASE_BYTES} bytes")
    try:
        wrapped = len(msgspec.json.decode(raw, type=_Envelope).case) > 0
        if wrapped:
            case = msgspec.json.decode(raw, type=_Wrapped).case
        else:
            case = msgspec.json.decode(raw, type=SlaCase)
    except msgspec.ValidationError as exc:
        raise SlaConfigError("case.schema", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise SlaConfigError("case.bad_json", str(exc)) from exc
    if len(case.events) > MAX_CASE_EVENTS:
        raise SlaConfigError("case.too_large", f"a case holds at most {MAX_CASE_EVENTS} events")
    if case.calendars is not None and len(case.calendars) > MAX_CASE_CALENDARS:
        raise SlaConfigError(
            "case.too_large", f"a case holds at most {MAX_CASE_CALENDARS} calendars"
        )
    return case


def explain_case(raw: bytes | str) -> Explanation:
    """Run a JSON case (docs/sla.md, "Case files") and explain every metric's arithmetic."""
    case = parse_case(raw)
    policy = case.applied_policy()
    calendars = case.calendars if case.calendars is not None else default_calendars()
    comp = _compute(policy, calendars, case.events, case.now)
    room = [MAX_COUNTED_LINES]
    metrics = [
        _explain_cycle(c, comp.calendars, comp.now, room)
        for c in comp.cycles
        if c.status is not None
    ]
    return Explanation(
        sla=comp.sla,
        metrics=metrics,
        now=from_us(comp.now),
        title=case.title,
        organisation=case.organisation,
        plan=case.plan,
    )


def _explain_cycle(
    c: _CycleResult, cals: dict[str, Calendar], now: int, room: list[int]
) -> MetricExplanation:
    """One cycle's arithmetic; ``room[0]`` is how many counted lines may still be listed."""
    st = c.status
    assert st is not None
    cal = cals[st.calendar]
    idx = calendar_index(cal)
    segments = [
        SegmentLine(
            since=from_us(seg.start),
            priority=seg.priority,
            calendar=seg.calendar,
            budget_seconds=None if seg.budget is None else seg.budget / US,
            target_at=None if seg.due is None else from_us(seg.due),
            rule=_rule(seg.target, seg.budget, seg.calendar, cals, c.start),
        )
        for seg in c.segments
    ]
    horizon = c.fulfilled if c.fulfilled is not None else now
    due = c.segments[-1].due
    until = due if due is not None else horizon
    if c.breached_at is not None:
        until = max(until, c.breached_at)
    counted: list[SpanLine] = []
    total = 0
    omitted = 0
    for a, b in c.windows:
        if a >= until:
            break
        for s, e in idx.pieces(a, min(b, until)):
            total += e - s
            if room[0] <= 0:
                omitted += 1
                continue
            room[0] -= 1
            counted.append(
                SpanLine(
                    start=from_us(s),
                    end=from_us(e),
                    start_local=cal.local_iso(from_us(s)),
                    end_local=cal.local_iso(from_us(e)),
                    seconds=(e - s) / US,
                    total_seconds=total / US,
                )
            )
    pauses: list[PauseLine] = []
    for p_start, p_end in st.paused:
        ps = to_us(p_start)
        pe = INF if p_end is None else to_us(p_end)
        removed = idx.between(max(ps, c.start), min(pe, max(until, horizon)))
        pauses.append(PauseLine(start=p_start, end=p_end, removed_seconds=removed / US))
    holidays = _holidays(idx, c.start, max(until, horizon))
    return MetricExplanation(
        metric=c.metric,
        cycle=c.cycle,
        calendar=st.calendar,
        timezone=idx.tz.key,
        status=st,
        segments=segments,
        counted=counted,
        counted_seconds=total / US,
        pauses=pauses,
        counted_omitted=omitted,
        holidays=holidays,
        conclusion=_conclusion(st) + _retroactive(c),
    )


def _holidays(idx: _CalendarIndex, a: int, b: int) -> list[HolidayLine]:
    out: list[HolidayLine] = []
    first, last = idx.local_ordinal(a), idx.local_ordinal(min(b, a + 400 * 86400 * US))
    for o in range(first, last + 1):
        d = date.fromordinal(o)
        if idx.weekly[d.weekday()]:
            name = idx.holiday_name(d)
            if name is not None:
                out.append(HolidayLine(date=d, name=name))
    return out


def _rule(
    target: Target | None,
    budget: int | None,
    cal_name: str,
    cals: dict[str, Calendar],
    start: int,
) -> str:
    if target is None or budget is None:
        return "no target at this priority"
    cal = cals[cal_name]
    if target.kind in END_OF_DAY_KINDS:
        day = (
            "end of the business day"
            if target.nth_day == 0
            else f"end of business day {target.nth_day} after the starting one"
        )
        text = f"{day} on '{cal_name}'"
        minute = target.cutoff_minute()
        if minute is not None:
            idx = calendar_index(cal)
            late = idx.end_of_nth_business_day(start, 0, minute) != idx.end_of_business_day(start)
            text += (
                f" (started at or after the {target.cutoff} cut-off: counted from the next"
                " business day)"
                if late
                else f" (started before the {target.cutoff} cut-off)"
            )
        text += f" = {_dur(budget / US)} of open time from the start"
        if target.min_seconds and budget == round(target.min_seconds * US):
            text += f" (the minimum budget {_dur(target.min_seconds)} applies)"
        return text
    text = f"{_dur(budget / US)} of open time on '{cal_name}'"
    if target.business_days:
        extra = f"{target.seconds:g} s + " if target.seconds else ""
        text += f" (= {extra}{target.business_days:g} business days x {cal.business_day_hours:g}h)"
    return text


def _retroactive(c: _CycleResult) -> str:
    for seg in c.segments:
        if c.breached_at is not None and seg.due == c.breached_at and seg.due < seg.start:
            return (
                f" (priority changed to {seg.priority} at {_iso(from_us(seg.start))}; its target,"
                " recomputed from the start minus pauses, had already passed)"
            )
    return ""


def _conclusion(st: MetricStatus) -> str:
    if st.state == "breached":
        tail = (
            f"fulfilled late at {_iso(st.fulfilled_at)}"
            if st.fulfilled_at is not None
            else "not fulfilled by then"
        )
        return f"BREACHED at {_iso(st.breached_at)}: budget used up; {tail}"
    if st.state == "achieved":
        return (
            f"ACHIEVED: fulfilled at {_iso(st.fulfilled_at)}, target {_iso(st.target_at)}"
            f" ({_dur(st.elapsed_seconds)} of {_dur(st.budget_seconds or 0)} used)"
        )
    if st.state == "paused":
        return f"PAUSED with {_dur(st.remaining_seconds or 0)} of open time left"
    return f"ACTIVE: due {_iso(st.target_at)}, {_dur(st.remaining_seconds or 0)} of open time left"


def _iso(dt: datetime | None) -> str:
    return "-" if dt is None else dt.isoformat()


def _dur(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    text = f"{h}h{m:02d}m" if not s else f"{h}h{m:02d}m{s:02d}s"
    return f"{sign}{text} ({sign}{total} s)"

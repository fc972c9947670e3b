"""Property-based tests of the calendar arithmetic and the engine."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from relaydesk.desk.sla import (
    Calendar,
    SlaEvent,
    calendar_24x7,
    compute_sla,
    default_calendars,
    default_policy,
)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ZONES = ("UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
T0 = datetime(2023, 1, 1, tzinfo=UTC)
SPAN = 4 * 365 * 86400  # 2023-2026: several DST transitions in every zone


def _hhmm(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    hours: dict[str, list[str]] = {}
    for day in DAYS:
        points = draw(st.sets(st.integers(0, 48), max_size=4))
        pts = sorted(points)
        if len(pts) % 2:
            pts = pts[:-1]
        spans = [
            f"{_hhmm(a * 30)}-{_hhmm(b * 30)}" for a, b in zip(pts[::2], pts[1::2], strict=True)
        ]
        if spans:
            hours[day] = spans
    if not hours:
        hours["wed"] = ["09:00-17:00"]
    holidays = draw(
        st.lists(st.dates(min_value=date(2023, 1, 1), max_value=date(2026, 12, 31)), max_size=5)
    )
    return Calendar(hours=hours, timezone=draw(st.sampled_from(ZONES)), holidays=tuple(holidays))


instants = st.integers(0, SPAN).map(lambda s: T0 + timedelta(seconds=s))
budgets = st.integers(0, 30 * 86400)


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, budgets)
def test_add_and_between_are_inverse(cal: Calendar, a: datetime, seconds: int) -> None:
    t = cal.add_business_time(a, seconds)
    assert t >= a
    assert cal.business_seconds_between(a, t) == seconds


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, st.integers(0, 30 * 86400))
def test_between_then_add_lands_at_or_before(cal: Calendar, a: datetime, gap: int) -> None:
    b = a + timedelta(seconds=gap)
    s = cal.business_seconds_between(a, b)
    t = cal.add_business_time(a, s)
    assert t <= b
    assert cal.business_seconds_between(a, t) == s
    if cal.is_open(b):  # inside an open interval nothing is lost
        assert t == b or s == 0


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, st.integers(0, 20 * 86400), st.integers(0, 20 * 86400))
def test_business_time_is_monotone(cal: Calendar, a: datetime, g1: int, g2: int) -> None:
    b = a + timedelta(seconds=g1)
    c = b + timedelta(seconds=g2)
    ab, ac = cal.business_seconds_between(a, b), cal.business_seconds_between(a, c)
    assert 0 <= ab <= ac <= (c - a).total_seconds()
    assert ac == ab + cal.business_seconds_between(b, c)


@settings(max_examples=150, deadline=None)
@given(instants, instants, budgets)
def test_24x7_is_wall_clock(a: datetime, b: datetime, seconds: int) -> None:
    cal = calendar_24x7()
    assert cal.add_business_time(a, seconds) == a + timedelta(seconds=seconds)
    assert cal.business_seconds_between(a, b) == max(0.0, (b - a).total_seconds())
    assert cal.is_open(a)


PRIOS = st.sampled_from(("P0", "P1", "P2", "P3"))
MIN = st.integers(0, 14 * 24 * 60)


@st.composite
def tickets(draw: st.DrawFn) -> tuple[list[SlaEvent], datetime]:
    created = T0 + timedelta(minutes=draw(st.integers(0, 2 * 365 * 24 * 60)))
    events = [SlaEvent(at=created, kind="created", priority=draw(PRIOS))]
    if draw(st.booleans()):
        at = created + timedelta(minutes=draw(MIN))
        events.append(SlaEvent(at=at, kind="priority_changed", priority=draw(PRIOS)))
    if draw(st.booleans()):
        at = created + timedelta(minutes=draw(MIN))
        events.append(SlaEvent(at=at, kind="comment", author_role="agent"))
    if draw(st.booleans()):
        at = created + timedelta(minutes=draw(MIN))
        events.append(SlaEvent(at=at, kind="status_changed", status="solved"))
    now = created + timedelta(minutes=draw(st.integers(0, 30 * 24 * 60)))
    return events, now


def _breaches(events: list[SlaEvent], now: datetime) -> dict[str, datetime | None]:
    sla = compute_sla(default_policy(), CALS, events, now)
    return {m.metric: m.breached_at for m in sla.metrics}


CALS = default_calendars()


@settings(max_examples=200, deadline=None)
@given(tickets(), MIN, st.integers(1, 5 * 24 * 60))
def test_adding_a_pause_never_brings_a_breach_earlier(
    ticket: tuple[list[SlaEvent], datetime], start: int, length: int
) -> None:
    events, now = ticket
    created = events[0].at
    p1 = created + timedelta(minutes=start)
    paused = [
        *events,
        SlaEvent(at=p1, kind="status_changed", status="pending"),
        SlaEvent(at=p1 + timedelta(minutes=length), kind="status_changed", status="open"),
    ]
    # a solve inside the pause would be undone by the "open"; keep the comparison fair
    if any(e.status == "solved" for e in events):
        return
    before, after = _breaches(events, now), _breaches(paused, now)
    for metric, breached_after in after.items():
        if breached_after is not None:
            breached_before = before.get(metric)
            assert breached_before is not None
            assert breached_before <= breached_after


@settings(max_examples=150, deadline=None)
@given(tickets(), st.integers(0, 30 * 24 * 60))
def test_elapsed_is_monotone_in_now(ticket: tuple[list[SlaEvent], datetime], extra: int) -> None:
    events, now = ticket
    later = now + timedelta(minutes=extra)
    a = compute_sla(default_policy(), CALS, events, now)
    b = compute_sla(default_policy(), CALS, events, later)
    for m in a.metrics:
        m2 = b.metric(m.metric)
        if m2 is not None and m2.cycle == m.cycle and m2.calendar == m.calendar:
            assert m2.elapsed_seconds >= m.elapsed_seconds


# -- end_of_nth_business_day (docs/sla.md 4.4) ---------------------------------------------

CUTOFFS = st.none() | st.integers(0, 47).map(lambda h: _hhmm(h * 30))
_US = timedelta(microseconds=1)


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, st.integers(0, 12), st.integers(1, 6), CUTOFFS)
def test_end_of_nth_business_day_is_monotonic_in_n(
    cal: Calendar, at: datetime, n: int, more: int, cutoff: str | None
) -> None:
    first = cal.end_of_nth_business_day(at, n, cutoff)
    later = cal.end_of_nth_business_day(at, n + more, cutoff)
    assert at < first < later
    nxt = cal.end_of_nth_business_day(at, n + 1, cutoff)
    assert first < nxt <= later


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, st.integers(0, 12), CUTOFFS)
def test_end_of_nth_business_day_is_never_inside_closed_hours(
    cal: Calendar, at: datetime, n: int, cutoff: str | None
) -> None:
    due = cal.end_of_nth_business_day(at, n, cutoff)
    # the instant just before is open: the due time closes an open interval
    assert cal.is_open(due - _US)
    assert cal.business_seconds_between(due - timedelta(seconds=1), due) == 1.0
    # a cut-off can only move the day forward, by exactly one business day
    plain = [cal.end_of_nth_business_day(at, k) for k in (n, n + 1)]
    assert due in plain
    assert cal.end_of_nth_business_day(at, 0) == cal.end_of_business_day(at)

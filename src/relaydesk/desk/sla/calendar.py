"""Business-hours calendars: time zone, weekly open intervals and holidays.

How open time is generated (see docs/sla.md, "Calendars"):

* Weekly hours are written per weekday as ``"HH:MM-HH:MM"`` in the calendar's own IANA time zone.
  An end at or before the start means the interval runs overnight into the next day
  (``"22:00-06:00"`` on ``fri`` is Friday 22:00 to Saturday 06:00); ``24:00`` is a valid end.
  An interval *belongs* to the weekday it starts on: a holiday on Friday removes the whole
  Friday-night interval, including the part after midnight.
* For each local date the open intervals are converted to UTC with zoneinfo (never fixed
  offsets) and cached per date.  Local times that do not exist (spring-forward gap) are read
  with ``fold=0``, i.e. with the offset in force *before* the jump, so they land as many minutes
  after the gap as they were into it; ambiguous local times (fall-back fold) mean their first
  occurrence.  An interval therefore always lasts the real time between its two ends: a
  00:00-24:00 day is 23 h on spring-forward day and 25 h on fall-back day.
* All arithmetic walks those cached per-day intervals; nothing loops per minute.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib
import msgspec

from ._time import INF, US, from_us, seconds_to_us, to_us
from .errors import SlaConfigError

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MINUTES_PER_DAY: Final = 1440
_MINUTES_PER_WEEK: Final = 7 * _MINUTES_PER_DAY
_HHMM = re.compile(r"([0-9][0-9]):([0-9][0-9])", re.ASCII)
#: A calendar with no open time for this many consecutive days is treated as misconfigured
#: (ten years: longer than any holiday list, short enough to fail fast).
_MAX_CLOSED_DAYS: Final = 3660
#: Per-date interval cache bound.  One entry per distinct local date touched; 20,000 dates is
#: ~55 years of history, so in practice it never fills; when it does it is simply cleared.
_DAY_CACHE_MAX: Final = 20_000


#: Input bounds (docs/sla.md, "Limits"): 48 intervals a day is one every half hour, far more
#: than any real rota; 1,000 explicit holidays is decades of them.  They bound the work and
#: memory one calendar document can cause.
MAX_SPANS_PER_DAY: Final = 48
MAX_HOLIDAYS: Final = 1000
_MAX_NAME: Final = 64


@functools.cache
def _holiday_countries() -> frozenset[str]:
    """Country codes (and their aliases) the ``holidays`` package knows; asked once, since
    the package builds the list afresh on every call (about 2 ms)."""
    return frozenset(holidays_lib.list_supported_countries(include_aliases=True))


def parse_hhmm(text: str, *, allow_24: bool) -> int:
    """Minutes after midnight of an ``HH:MM`` time (ASCII digits); ``24:00`` if allowed."""
    m = _HHMM.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise SlaConfigError("calendar.bad_time", f"bad time {text!r}: expected HH:MM")
    hh, mm = int(m.group(1)), int(m.group(2))
    if mm > 59 or hh > 24 or (hh == 24 and (mm != 0 or not allow_24)):
        raise SlaConfigError("calendar.bad_time", f"bad time {text!r}")
    return hh * 60 + mm


def _parse_span(text: str) -> tuple[int, int]:
    parts = text.split("-")
    if len(parts) != 2:
        raise SlaConfigError("calendar.bad_time", f"bad interval {text!r}: expected HH:MM-HH:MM")
    start = parse_hhmm(parts[0].strip(), allow_24=False)
    end = parse_hhmm(parts[1].strip(), allow_24=True)
    if end == start:
        raise SlaConfigError(
            "calendar.empty_interval",
            f"interval {text!r} is empty (use 00:00-24:00 for a whole day)",
        )
    if end < start:  # overnight: ends on the next day
        end += _MINUTES_PER_DAY
    return start, end


class Calendar(msgspec.Struct, frozen=True, dict=True, forbid_unknown_fields=True):
    """A business-hours calendar.

    ``hours`` maps weekday names (``mon`` .. ``sun``) to lists of ``"HH:MM-HH:MM"`` intervals in
    ``timezone`` (an IANA name; the calendar's zone, never the requester's).  Gaps between
    intervals (lunch breaks) are closed time.  ``holidays`` lists explicit closed dates;
    ``holiday_country``/``holiday_subdivision`` add the public holidays of the ``holidays``
    package (e.g. ``GB``/``ENG``, ``US``/``CA``).  ``business_day_hours`` defines how much
    business time one "business day" of an SLA target is (default 8 h).

    Construction validates everything and raises :class:`SlaConfigError`.  The instance is
    immutable; it caches the UTC intervals of each local date it has been asked about.
    """

    hours: dict[str, list[str]]
    timezone: str = "UTC"
    holidays: tuple[date, ...] = ()
    holiday_country: str | None = None
    holiday_subdivision: str | None = None
    business_day_hours: float = 8.0

    def __post_init__(self) -> None:
        # The index validates everything; build it eagerly so errors surface at construction.
        _ = self._index

    @functools.cached_property
    def _index(self) -> _CalendarIndex:
        return _CalendarIndex(self)

    # -- public arithmetic on aware datetimes -------------------------------------------------

    def add_business_time(self, start: datetime, seconds: float) -> datetime:
        """The earliest instant by which ``seconds`` of open time have elapsed after ``start``.

        A budget used up exactly at the end of an open interval yields that end, not the next
        opening.  ``seconds <= 0`` yields ``start``.  Returned in UTC.
        """
        return from_us(self._index.add(to_us(start), seconds_to_us(seconds)))

    def business_seconds_between(self, a: datetime, b: datetime) -> float:
        """Open time in ``[a, b)`` in seconds (0 when ``b <= a``)."""
        return self._index.between(to_us(a), to_us(b)) / US

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` lies inside an open interval (start inclusive, end exclusive)."""
        return self._index.is_open(to_us(at))

    def next_open(self, at: datetime) -> datetime:
        """``at`` itself if open, else the start of the next open interval (UTC)."""
        return from_us(self._index.next_open(to_us(at)))

    def end_of_business_day(self, at: datetime) -> datetime:
        """End of the business day containing ``at``, else of the next one opening after it.

        A business day is a local date with open intervals; it runs from its first opening to
        its last closing (gaps such as lunch included).  ``at`` at or after the last closing
        belongs to the next business day.  Returned in UTC.
        """
        return from_us(self._index.end_of_business_day(to_us(at)))

    def end_of_nth_business_day(self, at: datetime, n: int, cutoff: str | None = None) -> datetime:
        """End of the ``n``-th business day after the one :meth:`end_of_business_day` picks.

        ``n=0`` is :meth:`end_of_business_day`.  With ``cutoff`` (``"HH:MM"`` local), ``at`` at
        or after the starting business day's cut-off starts from the next business day
        instead.  Returned in UTC.
        """
        minute = None if cutoff is None else parse_hhmm(cutoff, allow_24=False)
        return from_us(self._index.end_of_nth_business_day(to_us(at), n, minute))

    def local_iso(self, at: datetime) -> str:
        """``at`` as ISO 8601 with offset in the calendar's time zone."""
        return at.astimezone(self._index.tz).isoformat()


def full_week_hours() -> dict[str, list[str]]:
    """Hours for a calendar that is always open."""
    return {d: ["00:00-24:00"] for d in WEEKDAYS}


def calendar_24x7() -> Calendar:
    """The implicit ``24x7`` calendar: always open, UTC, a business day is 24 h."""
    return Calendar(hours=full_week_hours(), timezone="UTC", business_day_hours=24.0)


class _CalendarIndex:
    """Compiled form of a :class:`Calendar`, working on epoch microseconds."""

    __slots__ = (
        "_country",
        "_days",
        "_explicit",
        "_holiday_years",
        "_subdivision",
        "continuous",
        "tz",
        "weekly",
    )

    def __init__(self, cal: Calendar) -> None:
        try:
            self.tz = ZoneInfo(cal.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise SlaConfigError(
                "calendar.unknown_timezone", f"unknown time zone {cal.timezone!r}"
            ) from exc
        if not 0 < cal.business_day_hours <= 24:
            raise SlaConfigError(
                "calendar.bad_business_day",
                f"business_day_hours must be in (0, 24], got {cal.business_day_hours}",
            )
        weekly: list[list[tuple[int, int]]] = [[] for _ in WEEKDAYS]
        if len(cal.holidays) > MAX_HOLIDAYS:
            raise SlaConfigError(
                "calendar.too_large", f"at most {MAX_HOLIDAYS} explicit holidays per calendar"
            )
        for day, spans in cal.hours.items():
            if day not in WEEKDAYS:
                raise SlaConfigError("calendar.bad_day", f"unknown weekday {day[:16]!r}")
            if len(spans) > MAX_SPANS_PER_DAY:
                raise SlaConfigError(
                    "calendar.too_large", f"at most {MAX_SPANS_PER_DAY} intervals per weekday"
                )
            for span in spans:
                weekly[WEEKDAYS.index(day)].append(_parse_span(span))
        flat: list[tuple[int, int]] = []
        for wd, spans_m in enumerate(weekly):
            spans_m.sort()
            flat.extend((wd * _MINUTES_PER_DAY + s, wd * _MINUTES_PER_DAY + e) for s, e in spans_m)
        if not flat:
            raise SlaConfigError("calendar.no_hours", "calendar has no open hours")
        flat.sort()
        for (s1, e1), (s2, _e2) in itertools.pairwise(flat):
            if s2 < e1:
                raise SlaConfigError("calendar.overlap", _overlap_msg(s1, e1, s2))
        last_s, last_e = flat[-1]
        if last_e - _MINUTES_PER_WEEK > flat[0][0]:  # wraps Sunday night into Monday
            raise SlaConfigError("calendar.overlap", _overlap_msg(last_s, last_e, flat[0][0]))
        covered = sum(e - s for s, e in flat)
        self.weekly: tuple[tuple[tuple[int, int], ...], ...] = tuple(tuple(w) for w in weekly)
        self._explicit = frozenset(cal.holidays)
        self._country = cal.holiday_country
        self._holiday_years: dict[int, dict[date, str]] = {}
        if cal.holiday_subdivision is not None and cal.holiday_country is None:
            raise SlaConfigError(
                "calendar.unknown_holiday_country",
                "holiday_subdivision given without holiday_country",
            )
        self._subdivision = cal.holiday_subdivision
        if cal.holiday_country is not None:
            if cal.holiday_country not in _holiday_countries():
                raise SlaConfigError(
                    "calendar.unknown_holiday_country",
                    f"holidays has no country {cal.holiday_country[:_MAX_NAME]!r}",
                )
            # Subdivision aliases ("England" for ENG) are the library's to resolve below.
            if cal.holiday_subdivision is not None and not cal.holiday_subdivision.strip():
                raise SlaConfigError(
                    "calendar.unknown_holiday_subdivision",
                    f"holidays has no subdivision {cal.holiday_subdivision[:_MAX_NAME]!r}"
                    f" of {cal.holiday_country}",
                )
            try:
                holidays_lib.country_holidays(
                    cal.holiday_country, subdiv=cal.holiday_subdivision, years=()
                )
            except NotImplementedError as exc:
                code = (
                    "calendar.unknown_holiday_subdivision"
                    if "subdivision" in str(exc)
                    else "calendar.unknown_holiday_country"
                )
                raise SlaConfigError(code, str(exc)) from exc
        self.continuous = (
            covered == _MINUTES_PER_WEEK and not self._explicit and cal.holiday_country is None
        )
        self._days: dict[int, tuple[tuple[int, int], ...]] = {}

    # -- holidays ---------------------------------------------------------------------------

    def holiday_name(self, d: date) -> str | None:
        """Name of the holiday on local date ``d``, or None."""
        if d in self._explicit:
            return "holiday (configured)"
        if self._country is None:
            return None
        year = self._holiday_years.get(d.year)
        if year is None:
            lib = holidays_lib.country_holidays(
                self._country, subdiv=self._subdivision, years=d.year
            )
            year = {k: str(v) for k, v in lib.items()}
            self._holiday_years[d.year] = year
        return year.get(d)

    # -- per-day intervals ------------------------------------------------------------------

    def _local_us(self, ordinal: int, minutes: int) -> int:
        days, minute = divmod(minutes, _MINUTES_PER_DAY)
        d = date.fromordinal(ordinal + days)
        local = datetime(d.year, d.month, d.day, minute // 60, minute % 60, tzinfo=self.tz)
        return int(local.timestamp()) * US

    def day(self, ordinal: int) -> tuple[tuple[int, int], ...]:
        """UTC intervals (epoch µs) of the open spans belonging to local date ``ordinal``."""
        hit = self._days.get(ordinal)
        if hit is not None:
            return hit
        d = date.fromordinal(ordinal)
        spans: tuple[tuple[int, int], ...] = ()
        if self.weekly[d.weekday()] and self.holiday_name(d) is None:
            out = []
            for s, e in self.weekly[d.weekday()]:
                su, eu = self._local_us(ordinal, s), self._local_us(ordinal, e)
                if eu > su:
                    out.append((su, eu))
            spans = tuple(out)
        if len(self._days) >= _DAY_CACHE_MAX:
            self._days.clear()
        self._days[ordinal] = spans
        return spans

    def local_ordinal(self, t: int) -> int:
        """Local date (proleptic ordinal) of instant ``t``."""
        return datetime.fromtimestamp(t // US, self.tz).toordinal()

    def iter_from(self, t: int) -> Iterator[tuple[int, int]]:
        """Open spans ending after ``t``, in order, the first clipped to start at ``t``."""
        if self.continuous:
            yield (t, INF)
            return
        ordinal = self.local_ordinal(t) - 1  # yesterday's overnight span may reach into today
        prev_end = t
        closed_days = 0
        while True:
            spans = self.day(ordinal)
            emitted = False
            for s, e in spans:
                if e <= prev_end:
                    continue
                yield (s if s > prev_end else prev_end), e
                prev_end = e
                emitted = True
            closed_days = 0 if emitted else closed_days + 1
            if closed_days > _MAX_CLOSED_DAYS:
                raise SlaConfigError(
                    "calendar.no_open_time", f"no open time within {_MAX_CLOSED_DAYS} days"
                )
            ordinal += 1

    def add(self, t: int, budget: int) -> int:
        """Instant at which ``budget`` µs of open time after ``t`` are used up."""
        if budget <= 0:
            return t
        if self.continuous:
            return t + budget
        for s, e in self.iter_from(t):
            if e - s >= budget:
                return s + budget
            budget -= e - s
        raise AssertionError("unreachable")  # pragma: no cover - iter_from is endless

    def between(self, a: int, b: int) -> int:
        """Open time in ``[a, b)`` in µs."""
        if b <= a:
            return 0
        if self.continuous:
            return b - a
        total = 0
        for s, e in self.iter_from(a):
            if s >= b:
                break
            total += (e if e < b else b) - s
        return total

    def pieces(self, a: int, b: int) -> list[tuple[int, int]]:
        """Open spans within ``[a, b)``, split at local midnights for continuous calendars."""
        out: list[tuple[int, int]] = []
        if b <= a:
            return out
        if self.continuous:
            ordinal = self.local_ordinal(a)
            cur = a
            while cur < b:
                nxt = self._local_us(ordinal + 1, 0)
                out.append((cur, min(nxt, b)))
                cur, ordinal = nxt, ordinal + 1
            return out
        for s, e in self.iter_from(a):
            if s >= b:
                break
            out.append((s, min(e, b)))
        return out

    def is_open(self, t: int) -> bool:
        """Whether ``t`` is inside an open span."""
        s, _e = next(self.iter_from(t))
        return s == t

    def next_open(self, t: int) -> int:
        """``t`` if open, else the next opening."""
        s, _e = next(self.iter_from(t))
        return s

    def end_of_business_day(self, t: int) -> int:
        """See :meth:`Calendar.end_of_business_day`."""
        return self.end_of_nth_business_day(t, 0)

    def cutoff_at(self, ordinal: int, spans: tuple[tuple[int, int], ...], minute: int) -> int:
        """The cut-off instant of business day ``ordinal``: the first local ``minute`` at or
        after the day's first opening (so a night shift's cut-off falls after midnight)."""
        at = self._local_us(ordinal, minute)
        return at if at >= spans[0][0] else self._local_us(ordinal + 1, minute)

    def end_of_nth_business_day(self, t: int, n: int, cutoff: int | None = None) -> int:
        """See :meth:`Calendar.end_of_nth_business_day`."""
        ordinal = self.local_ordinal(t) - 1  # yesterday's overnight span may hold ``t``
        need = -1  # business days still to pass; -1 until the starting day is found
        closed = 0
        while True:
            spans = self.day(ordinal)
            if spans:
                closed = 0
                if need < 0:
                    if t < spans[-1][1]:
                        late = cutoff is not None and t >= self.cutoff_at(ordinal, spans, cutoff)
                        need = n + 1 if late else n
                if need == 0:
                    return spans[-1][1]
                if need > 0:
                    need -= 1
            else:
                closed += 1
                if closed > _MAX_CLOSED_DAYS:
                    raise SlaConfigError(
                        "calendar.no_open_time", f"no open time within {_MAX_CLOSED_DAYS} days"
                    )
            ordinal += 1


def calendar_index(cal: Calendar) -> _CalendarIndex:
    """The compiled index of ``cal`` (engine-internal)."""
    return cal._index


def _fmt_week_minute(m: int) -> str:
    m %= _MINUTES_PER_WEEK
    day, rest = divmod(m, _MINUTES_PER_DAY)
    return f"{WEEKDAYS[day]} {rest // 60:02d}:{rest % 60:02d}"


def _overlap_msg(s1: int, e1: int, s2: int) -> str:
    return (
        f"interval {_fmt_week_minute(s1)}-{_fmt_week_minute(e1)} overlaps the one starting "
        f"{_fmt_week_minute(s2)}"
    )

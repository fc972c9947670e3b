"""Instants as integer microseconds since the Unix epoch (UTC).

The engine works on ints so that "a reply at exactly the target" compares exactly; floats would
make the inclusive boundary depend on rounding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .errors import SlaConfigError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000
#: Stands for "never" / "open-ended" (year ~146,000); compares greater than any real instant.
INF = 1 << 62
_ONE_US = timedelta(microseconds=1)
#: The instants the engine accepts (docs/sla.md, "Limits"): 1970 up to 2200.  Beyond them the
#: time-zone database has no rules anyway, and the upper bound leaves room for every lookahead
#: (a target's budget, ten years of closed days) below datetime's year 9999.
MIN_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)


def to_us(dt: datetime, what: str = "time") -> int:
    """Convert an aware datetime to epoch microseconds; naive datetimes are rejected."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise SlaConfigError("time.naive", f"{what} must be timezone-aware, got {dt.isoformat()}")
    try:
        inside = MIN_INSTANT <= dt < MAX_INSTANT
    except OverflowError:  # an offset pushes a year-1/9999 value past datetime's range
        inside = False
    if not inside:
        raise SlaConfigError(
            "time.out_of_range",
            f"{what} {dt.isoformat()} is outside the supported range "
            f"[{MIN_INSTANT.date()}, {MAX_INSTANT.date()})",
        )
    return (dt - EPOCH) // _ONE_US


def from_us(t: int) -> datetime:
    """Convert epoch microseconds to an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=t)


def seconds_to_us(seconds: float) -> int:
    """Round a duration in seconds to whole microseconds."""
    return round(seconds * US)

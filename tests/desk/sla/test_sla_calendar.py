"""Calendar arithmetic and validation."""

from __future__ import annotations

from datetime import UTC, date, datetime

import msgspec
import pytest

from relaydesk.desk.sla import Calendar, SlaConfigError, calendar_24x7

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def london() -> Calendar:
    return Calendar(hours={d: ["09:00-17:00"] for d in WEEKDAYS}, timezone="Europe/London")


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"hours": {"mon": ["09:00-17:00", "16:00-18:00"]}}, "calendar.overlap"),
        ({"hours": {"sun": ["22:00-06:00"], "mon": ["05:00-09:00"]}}, "calendar.overlap"),
        ({"hours": {"fri": ["22:00-06:00"], "sat": ["05:00-07:00"]}}, "calendar.overlap"),
        ({"hours": {"mon": ["09:00-09:00"]}}, "calendar.empty_interval"),
        ({"hours": {"mon": ["9:00-17:00"]}}, "calendar.bad_time"),
        ({"hours": {"mon": ["09:60-17:00"]}}, "calendar.bad_time"),
        ({"hours": {"mon": ["24:00-17:00"]}}, "calendar.bad_time"),
        ({"hours": {"mon": ["09:00-24:30"]}}, "calendar.bad_time"),
        ({"hours": {"mon": ["09:00"]}}, "calendar.bad_time"),
        ({"hours": {"funday": ["09:00-17:00"]}}, "calendar.bad_day"),
        ({"hours": {}}, "calendar.no_hours"),
        (
            {"hours": {"mon": ["09:00-17:00"]}, "timezone": "Mars/Olympus"},
            "calendar.unknown_timezone",
        ),
        ({"hours": {"mon": ["09:00-17:00"]}, "timezone": "../etc"}, "calendar.unknown_timezone"),
        (
            {"hours": {"mon": ["09:00-17:00"]}, "holiday_country": "XX"},
            "calendar.unknown_holiday_country",
        ),
        (
            {
                "hours": {"mon": ["09:00-17:00"]},
                "holiday_country": "GB",
                "holiday_subdivision": "ZZ",
            },
            "calendar.unknown_holiday_subdivision",
        ),
        ({"hours": {"mon": ["09:00-17:00"]}, "business_day_hours": 0}, "calendar.bad_business_day"),
    ],
)
def test_validation(kwargs: dict[str, object], code: str) -> None:
    with pytest.raises(SlaConfigError) as err:
        Calendar(**kwargs)  # type: ignore[arg-type]
    assert err.value.code == code
    # the same error comes out of JSON decoding
    with pytest.raises(SlaConfigError) as err2:
        msgspec.json.decode(msgspec.json.encode(kwargs), type=Calendar)
    assert err2.value.code == code


def test_touching_intervals_and_24_00_are_valid() -> None:
    cal = Calendar(hours={"mon": ["00:00-12:00", "12:00-24:00"], "tue": ["00:00-01:00"]})
    assert cal.business_seconds_between(utc(2024, 1, 8), utc(2024, 1, 10)) == 25 * 3600
    assert cal.add_business_time(utc(2024, 1, 8, 23), 2 * 3600) == utc(2024, 1, 9, 1)


def test_basic_queries() -> None:
    cal = london()
    assert cal.is_open(utc(2024, 1, 8, 9))
    assert not cal.is_open(utc(2024, 1, 8, 17))  # end exclusive
    assert cal.next_open(utc(2024, 1, 6, 12)) == utc(2024, 1, 8, 9)
    assert cal.next_open(utc(2024, 1, 8, 10)) == utc(2024, 1, 8, 10)
    # summer: 09:00 BST = 08:00Z
    assert cal.next_open(utc(2024, 7, 6, 12)) == utc(2024, 7, 8, 8)
    assert cal.local_iso(utc(2024, 7, 8, 8)) == "2024-07-08T09:00:00+01:00"


def test_end_of_business_day() -> None:
    cal = Calendar(hours={d: ["09:00-12:30", "13:30-17:30"] for d in WEEKDAYS})
    assert cal.end_of_business_day(utc(2024, 1, 8, 7)) == utc(2024, 1, 8, 17, 30)
    assert cal.end_of_business_day(utc(2024, 1, 8, 13)) == utc(2024, 1, 8, 17, 30)  # lunch
    assert cal.end_of_business_day(utc(2024, 1, 8, 17, 30)) == utc(2024, 1, 9, 17, 30)
    assert cal.end_of_business_day(utc(2024, 1, 5, 20)) == utc(2024, 1, 8, 17, 30)
    night = Calendar(hours={"fri": ["22:00-06:00"]})
    assert night.end_of_business_day(utc(2024, 1, 6, 2)) == utc(2024, 1, 6, 6)
    assert calendar_24x7().end_of_business_day(utc(2024, 1, 6, 2)) == utc(2024, 1, 7)


def test_budget_ending_at_interval_end_returns_that_end() -> None:
    cal = london()
    assert cal.add_business_time(utc(2024, 1, 8, 9), 8 * 3600) == utc(2024, 1, 8, 17)
    assert cal.add_business_time(utc(2024, 1, 8, 9), 8 * 3600 + 1) == utc(2024, 1, 9, 9, 0, 1)
    assert cal.add_business_time(utc(2024, 1, 6, 9), 0) == utc(2024, 1, 6, 9)


def test_country_holidays() -> None:
    cal = Calendar(
        hours={d: ["09:00-17:00"] for d in WEEKDAYS},
        timezone="Europe/London",
        holiday_country="GB",
        holiday_subdivision="ENG",
    )
    # Good Friday 2024-03-29 and Easter Monday 2024-04-01 are closed in England.
    assert cal.business_seconds_between(utc(2024, 3, 28), utc(2024, 4, 2)) == 8 * 3600
    scot = Calendar(
        hours={d: ["09:00-17:00"] for d in WEEKDAYS},
        holiday_country="GB",
        holiday_subdivision="SCT",
    )
    # Easter Monday is not a bank holiday in Scotland.
    assert scot.business_seconds_between(utc(2024, 3, 28), utc(2024, 4, 2)) == 16 * 3600
    explicit = Calendar(hours={"mon": ["09:00-17:00"]}, holidays=(date(2024, 1, 8),))
    assert explicit.next_open(utc(2024, 1, 8)) == utc(2024, 1, 15, 9)


def test_dst_days_in_24h_local_calendar() -> None:
    cal = Calendar(
        hours={d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        timezone="America/New_York",
        holidays=(date(2024, 3, 9),),
    )
    # Sunday 2024-03-10 is 23 hours long in New York.
    assert cal.business_seconds_between(utc(2024, 3, 9, 5), utc(2024, 3, 12)) == (
        cal.business_seconds_between(utc(2024, 3, 10, 5), utc(2024, 3, 12))
    )
    sunday = cal.business_seconds_between(utc(2024, 3, 10, 5), utc(2024, 3, 11, 4))
    assert sunday == 23 * 3600


def test_naive_datetime_rejected() -> None:
    with pytest.raises(SlaConfigError) as err:
        london().is_open(datetime(2024, 1, 8, 10))
    assert err.value.code == "time.naive"


def test_calendar_round_trips_as_json() -> None:
    cal = Calendar(
        hours={"fri": ["22:00-06:00"]},
        timezone="America/New_York",
        holidays=(date(2024, 12, 25),),
        holiday_country="US",
        holiday_subdivision="CA",
    )
    again = msgspec.json.decode(msgspec.json.encode(cal), type=Calendar)
    assert again == cal

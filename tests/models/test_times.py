"""Times as users write them (models/times.py) and the times forecasts are for."""

from __future__ import annotations

import pytest

from models.times import (
    MONTH,
    TimeFormatError,
    TimeRangeError,
    calendar_index,
    check_forecastable,
    forecast_times,
    iso,
    parse_time,
    step,
)

JAN_1990 = 631_152_000.0


@pytest.mark.parametrize(
    "value",
    [
        "1990-01",
        "1990/01",
        "1990-01-01",
        "1990/01/01 00:00",
        "1990-01-01T00:00:00Z",
        "1990-01-01T01:00:00+01:00",
        "1989-12-31T19:00-05:00",
        "1990Q1",
        "1990-Q1",
        "Q1 1990",
        "1990",
        JAN_1990,
        int(JAN_1990),
        "631152000",
    ],
)
def test_every_accepted_format_reads_the_same_instant(value: object) -> None:
    assert parse_time(value) == JAN_1990


@pytest.mark.parametrize("value", ["yesterday", "1990Q5", "1990-13", "2014-02-30T00:00:00Z", True, None, "", [1990]])
def test_anything_else_is_refused_naming_the_formats(value: object) -> None:
    with pytest.raises(TimeFormatError, match="ISO 8601 date or date-time"):
        parse_time(value)


def test_monthly_and_quarterly_periods_step_on_the_calendar() -> None:
    assert iso(step(parse_time("1990-01-31"), 1, MONTH)) == "1990-02-28T00:00:00Z"
    assert iso(step(parse_time("1990Q4"), 1, 3 * MONTH)) == "1991-01-01T00:00:00Z"
    assert iso(step(parse_time("1990-01"), 12, MONTH)) == "1991-01-01T00:00:00Z"
    assert iso(step(parse_time("2010/01/01 00:00"), 3, 1800.0)) == "2010-01-01T01:30:00Z"


def test_forecast_times_are_the_next_readings() -> None:
    times = forecast_times(parse_time("1949-01"), 2, 3, MONTH)
    assert times == [
        ["1949-02-01T00:00:00Z", "1949-03-01T00:00:00Z", "1949-04-01T00:00:00Z"],
        ["1949-03-01T00:00:00Z", "1949-04-01T00:00:00Z", "1949-05-01T00:00:00Z"],
    ]


def test_a_step_past_year_9999_is_a_range_error_not_a_crash() -> None:
    with pytest.raises(TimeRangeError, match="past year 9999"):
        step(parse_time("9999-12-31"), 1, MONTH)
    with pytest.raises(TimeRangeError, match="past year 9999"):
        step(parse_time("9999-01"), 12, MONTH)
    with pytest.raises(TimeRangeError, match="past year 9999"):
        check_forecastable(parse_time("9999-12-31T23:00:00Z"), 2, 3600.0)
    check_forecastable(parse_time("9999-01"), 11, MONTH)  # December 9999 is still a time
    assert iso(step(parse_time("9999-12-31T22:00:00Z"), 1, 3600.0)) == "9999-12-31T23:00:00Z"


@pytest.mark.parametrize(
    ("period", "same", "next_one"),
    [
        (MONTH, ["1950-01", "1950-01-01", "1950-01-31", "1950-01-31T23:00:00Z"], "1950-02-01"),
        (3 * MONTH, ["1950Q1", "1950-02-15", "1950-03-31"], "1950-04-01"),
        (12 * MONTH, ["1950", "1950-12-31"], "1951-01-01"),
    ],
)
def test_calendar_periods_index_by_the_calendar_not_by_mean_seconds(
    period: float, same: list[str], next_one: str
) -> None:
    indices = {calendar_index(parse_time(value), period) for value in same}
    assert len(indices) == 1
    assert calendar_index(parse_time(next_one), period) == indices.pop() + 1
    assert calendar_index(parse_time("1950-01-31"), 3600.0) is None

"""Times as users write them (models/times.py) and the times forecasts are for."""

from __future__ import annotations

import contextlib

import pytest

from models.times import (
    BUSINESS_DAY,
    MONTH,
    TimeFormatError,
    TimeRangeError,
    business_index,
    calendar_index,
    check_forecastable,
    date_order,
    forecast_times,
    grid_positions,
    iso,
    off_grid,
    parse_time,
    parse_times,
    period_name,
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


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("31/01/1949", "1949-01-31T00:00:00Z"),
        ("01/31/1949", "1949-01-31T00:00:00Z"),
        ("31.01.1949 13:30", "1949-01-31T13:30:00Z"),
        ("31-01-1949", "1949-01-31T00:00:00Z"),
        ("Jan 1949", "1949-01-01T00:00:00Z"),
        ("January 1949", "1949-01-01T00:00:00Z"),
        ("1949 Jan", "1949-01-01T00:00:00Z"),
        ("31-Jan-1949", "1949-01-31T00:00:00Z"),
        (1949, "1949-01-01T00:00:00Z"),  # a whole number 1000-3000 is a year, as in a time column
        (1_262_304_000_000, "2010-01-01T00:00:00Z"),  # epoch milliseconds
    ],
)
def test_the_formats_training_reads_are_start_times_too(value: object, expected: str) -> None:
    assert iso(parse_time(value)) == expected
    assert parse_times([value]) == [parse_time(value)]


def test_an_ambiguous_day_month_value_alone_is_refused_but_a_column_decides() -> None:
    with pytest.raises(TimeFormatError, match=r"ambiguous.*1949-02-01"):
        parse_time("01/02/1949")
    monthly = parse_times(["01/01/1949", "01/02/1949", "01/03/1949"])  # the 1st of each month
    assert monthly is not None and [iso(t) for t in monthly][1] == "1949-02-01T00:00:00Z"
    us = parse_times(["01/30/1949", "02/01/1949"])  # 30 as a second field: month first
    assert us is not None and iso(us[1]) == "1949-02-01T00:00:00Z"
    european = parse_times(["30/01/1949", "01/02/1949"])
    assert european is not None and iso(european[1]) == "1949-02-01T00:00:00Z"
    assert parse_time("01/02/1949", day_first=True) == parse_time("1949-02-01")
    assert parse_times(["1", "2", "3"]) is None and parse_times([1.5, 2.5]) is None  # counters, values
    assert parse_times(["1949-01", "yesterday"]) is None


def test_business_days_step_over_weekends_keeping_the_time_of_day() -> None:
    """Trading days: the reading after Friday's is Monday's; a forecast from Thursday for three
    leads is for Friday, Monday and Tuesday, at the readings' time of day."""
    friday = parse_time("2024-01-05T16:00")
    assert [iso(step(friday, k, BUSINESS_DAY)) for k in range(7)] == [
        "2024-01-05T16:00:00Z",
        "2024-01-08T16:00:00Z",
        "2024-01-09T16:00:00Z",
        "2024-01-10T16:00:00Z",
        "2024-01-11T16:00:00Z",
        "2024-01-12T16:00:00Z",
        "2024-01-15T16:00:00Z",
    ]
    assert iso(step(friday, -1, BUSINESS_DAY)) == "2024-01-04T16:00:00Z"
    assert forecast_times(parse_time("2024-01-04"), 2, 3, BUSINESS_DAY) == [
        ["2024-01-05T00:00:00Z", "2024-01-08T00:00:00Z", "2024-01-09T00:00:00Z"],
        ["2024-01-08T00:00:00Z", "2024-01-09T00:00:00Z", "2024-01-10T00:00:00Z"],
    ]
    with pytest.raises(TimeRangeError):
        check_forecastable(parse_time("9999-12-30"), 5, BUSINESS_DAY)


def test_business_days_index_weekdays_so_the_phase_is_the_weekday() -> None:
    """`calendar_index` of a business-day period counts weekdays: modulo 5 it is the weekday
    (Monday 0), a weekend counts as the next Monday, and consecutive trading days differ by 1."""
    monday = parse_time("2024-01-08")
    for k, day in enumerate(["2024-01-08", "2024-01-09", "2024-01-10", "2024-01-11", "2024-01-12"]):
        index = calendar_index(parse_time(day + "T09:30"), BUSINESS_DAY)
        assert index is not None and index % 5 == k and index == business_index(monday) + k
    assert calendar_index(parse_time("2024-01-06"), BUSINESS_DAY) == business_index(parse_time("2024-01-08"))
    assert calendar_index(parse_time("2024-01-07"), BUSINESS_DAY) == business_index(parse_time("2024-01-08"))
    assert business_index(parse_time("1969-12-29")) == 0 and business_index(parse_time("1969-12-26")) == -1


def test_grid_positions_place_times_on_the_models_period_leaving_the_gaps() -> None:
    """Months 1990-01..1990-12 with March and August dropped sit at 0, 1, 3, ...; trading days
    with a Monday holiday skip one weekday (not three calendar days); an hourly series with
    its daylight-saving hour absent skips one hour. The client fills these gaps as training
    does, so the positions are what both agree on."""
    months = [step(JAN_1990, i, MONTH) for i in range(12) if i not in (2, 7)]
    assert grid_positions(months, MONTH) == [0, 1, 3, 4, 5, 6, 8, 9, 10, 11]
    friday = parse_time("2020-01-10")
    days = [friday, parse_time("2020-01-14"), parse_time("2020-01-15")]  # Monday 13th absent
    assert grid_positions(days, BUSINESS_DAY) == [0, 2, 3]
    hours = [JAN_1990 + 3600.0 * i for i in range(10) if i != 4]
    assert grid_positions(hours, 3600.0) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert period_name(MONTH) == "monthly" and period_name(BUSINESS_DAY) == "business-daily"


def test_times_off_the_period_are_named() -> None:
    """Daily rows for a monthly model, half an hour off an hourly grid, a Saturday among
    trading days: not on the grid (None), and `off_grid` names the first such row."""
    daily = [JAN_1990 + 86_400.0 * i for i in range(5)]
    assert grid_positions(daily, MONTH) is None and off_grid(daily, MONTH) == 1
    hours = [JAN_1990, JAN_1990 + 3600.0, JAN_1990 + 5400.0]
    assert grid_positions(hours, 3600.0) is None and off_grid(hours, 3600.0) == 2
    saturday = [parse_time("2020-01-10"), parse_time("2020-01-11")]
    assert grid_positions(saturday, BUSINESS_DAY) is None and off_grid(saturday, BUSINESS_DAY) == 1
    assert off_grid([JAN_1990, JAN_1990 + 3600.0], 3600.0) is None


def test_a_recorded_order_reads_slash_dates_and_refuses_the_other_order() -> None:
    """A month-first model reads 01/02/2012 as 2 January and refuses 13/01/2012 naming the
    order it expects (it was taken as day first before); a day-first model the reverse. A
    date the same in either order (01/01/2012) needs no order; 01/02/2012 alone does, and the
    error gives both ISO spellings (the old hint gave one, for the other order)."""
    assert iso(parse_time("01/02/2012", day_first=False)) == "2012-01-02T00:00:00Z"
    with pytest.raises(TimeFormatError, match=r"'13/01/2012' is not month/day/year.*01/31/2012"):
        parse_time("13/01/2012", day_first=False)
    with pytest.raises(TimeFormatError, match=r"'01/31/2012' is not day/month/year"):
        parse_time("01/31/2012", day_first=True)
    assert iso(parse_time("01/01/2012")) == "2012-01-01T00:00:00Z"
    with pytest.raises(
        TimeFormatError, match="2012-02-01 if it is day/month/year or 2012-01-02 if it is month/day/year"
    ):
        parse_time("01/02/2012")
    assert date_order(["01/31/2012", "02/01/2012"]) is False
    assert date_order(["31/01/2012", "01/02/2012"]) is True
    assert date_order(["2012-01-31"]) is None


def test_every_start_time_example_docs_api_lists_is_accepted() -> None:
    """docs/api.md's start_time section lists what is accepted, truthfully: every quoted example
    parses (in some day/month order: the section explains which), and the formats a trial found
    accepted but unlisted (month names, day-first dates, ISO without seconds) are listed."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = text[text.index("### start_time") : text.index("It is taken by stateless predict")]
    examples = re.findall(r'`"([^"`]+)"`', section)
    assert {"Jan 1949", "1 Jan 1949", "31/01/1949", "01/31/1949", "2010-01-01T00:00", "Q1 1990"} <= set(examples)
    for example in examples:
        readings = []
        for order in (None, True, False):
            with contextlib.suppress(TimeFormatError):
                readings.append(parse_time(example, order))
        assert readings, f"docs/api.md lists {example!r} as a start_time, but it is refused"

"""Times as a user writes them, and the times a forecast is for. Pure Python (the serving image
imports it; training reads whole columns with pandas in training/seasons.py, to the same rules).

Accepted for one time (`parse_time`), all converted to unix seconds (UTC):
- ISO dates and date-times: `1949-01` (a month), `1949-01-01`, `2010-01-01T00:00`,
  `2010/01/01 00:00`, seconds and fractions, `Z` or an offset (`+01:00`); without an offset UTC;
- quarters: `1990Q1`, `1990-Q1`, `1990 Q1`, `Q1 1990` (the quarter's first day);
- a year alone: `1949` (1 January);
- epoch seconds: a JSON number, or a string of digits from 1e8 on (1973 on).

Forecast times (`forecast_times`): reading i of a stream that started at `start` is at
start + i periods, and the forecast made at reading i for lead k is for reading i + k. A period
of a calendar unit (months, quarters, years: the mean lengths training records) is stepped on
the calendar, so a monthly series started on 1 March forecasts 1 April, 1 May, ... Only years
1-9999 can be written (TimeRangeError past them): the service refuses a start_time whose
forecasts would run past 9999-12-31 (`check_forecastable`) before running the model. The phase
of a calendar period is its calendar index (`calendar_index`: any day of January is January).
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, datetime, timedelta

DAY = 86_400.0
MONTH = 2_629_746.0  # mean Gregorian month: what training records as a monthly period
_QUARTER = re.compile(r"^(\d{4})\s*[-/ ]?\s*[Qq]([1-4])$")
_QUARTER_FIRST = re.compile(r"^[Qq]([1-4])\s*[-/ ]?\s*(\d{4})$")
_YEAR = re.compile(r"^\d{4}$")
_MONTH = re.compile(r"^(\d{4})[-/](\d{1,2})$")
_DATE = re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(.*)$")
_EPOCH = re.compile(r"^\d{9,}(\.\d+)?$")
FORMATS = (
    "an ISO 8601 date or date-time (1949-01, 1949-01-01, 2010-01-01T00:00:00Z, 2010/01/01 00:00, "
    "with an offset or UTC), a quarter (1990Q1), a year (1949) or epoch seconds"
)


FIRST = -62_135_596_800.0  # 0001-01-01T00:00:00Z: the range of times a reply can name
LAST = 253_402_300_799.0  # 9999-12-31T23:59:59Z


class TimeFormatError(ValueError):
    """A value that is not a time in any accepted format (the message names the formats)."""


class TimeRangeError(ValueError):
    """A time, or a time a number of periods after it, outside years 1-9999 (ISO 8601 names no
    other): a forecast for it could not be labelled."""


def _utc(year: int, month: int, day: int = 1) -> float:
    return datetime(year, month, day, tzinfo=UTC).timestamp()


def parse_time(value: object) -> float:
    """Unix seconds of one time (see the module docstring); TimeFormatError otherwise."""
    if isinstance(value, bool):
        raise TimeFormatError(f"expected {FORMATS}; got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise TimeFormatError(f"expected {FORMATS}; got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise TimeFormatError(f"expected {FORMATS}; got a {type(value).__name__}")
    text = value.strip()
    if not text or len(text) > 64:
        raise TimeFormatError(f"expected {FORMATS}; got {value[:64]!r}")
    try:
        if _EPOCH.match(text):
            return float(text)
        if _YEAR.match(text):
            return _utc(int(text), 1)
        if m := _QUARTER.match(text):
            return _utc(int(m.group(1)), 3 * (int(m.group(2)) - 1) + 1)
        if m := _QUARTER_FIRST.match(text):
            return _utc(int(m.group(2)), 3 * (int(m.group(1)) - 1) + 1)
        if m := _MONTH.match(text):
            return _utc(int(m.group(1)), int(m.group(2)))
        if m := _DATE.match(text):
            rest = m.group(4)
            iso = f"{int(m.group(1)):04d}-{int(m.group(2)):02d}-{int(m.group(3)):02d}{rest}"
            if iso.endswith(("z", "Z")):
                iso = iso[:-1] + "+00:00"
            moment = datetime.fromisoformat(iso)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        pass
    raise TimeFormatError(f"expected {FORMATS}; got {value[:64]!r}")


def _months(period_seconds: float) -> int:
    """Whole calendar months a period is (1 monthly, 3 quarterly, 12 yearly), 0 if none."""
    for months in (1, 3, 12):
        if abs(period_seconds - months * MONTH) <= 0.02 * months * MONTH:
            return months
    return 0


def step(start: float, steps: int, period_seconds: float) -> float:
    """The time `steps` periods after `start` (calendar months for monthly and longer periods);
    TimeRangeError when that is outside years 1-9999."""
    if not FIRST <= start <= LAST:
        raise TimeRangeError(f"{iso_or_seconds(start)} is outside years 1-9999")
    months = _months(period_seconds)
    if not months:
        moved = start + steps * period_seconds
    else:
        moment = _moment(start)
        total = moment.year * 12 + moment.month - 1 + steps * months
        year, month = divmod(total, 12)
        if not 1 <= year <= 9999:
            moved = LAST + 1.0 if year > 9999 else FIRST - 1.0
        else:
            day = min(moment.day, calendar.monthrange(year, month + 1)[1])
            return moment.replace(year=year, month=month + 1, day=day).timestamp()
    if not FIRST <= moved <= LAST:
        raise TimeRangeError(
            f"{steps} periods after {iso(start)} is past year {9999 if moved > LAST else 1}: "
            "forecasts from there cannot be labelled"
        )
    return moved


def check_forecastable(start: float, steps: int, period_seconds: float) -> None:
    """TimeRangeError unless the time `steps` periods after `start` (the last forecast of a
    request) is within years 1-9999. Checked before running a model, so a far-future start_time
    is refused as bad input instead of failing after inference."""
    step(start, steps, period_seconds)


def calendar_index(seconds: float, period_seconds: float) -> int | None:
    """The calendar period a time falls in, counted from year 0 (months: year*12 + month-1,
    quarters: year*4 + quarter-1, years: the year) for monthly, quarterly and yearly periods;
    None for other periods. The day within the month does not matter: 1949-01-31 is January."""
    months = _months(period_seconds)
    if not months:
        return None
    moment = _moment(seconds)
    return (moment.year * 12 + moment.month - 1) // months


def _moment(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def iso_or_seconds(seconds: float) -> str:
    try:
        return iso(seconds)
    except (OverflowError, ValueError):
        return f"{seconds:g} s"


def iso(seconds: float) -> str:
    """ISO 8601 in UTC with a Z, seconds precision (fractions when there are any)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def forecast_times(start: float, readings: int, horizon: int, period_seconds: float, first: int = 0) -> list[list[str]]:
    """[readings][horizon] ISO times the forecasts at readings first..first+readings-1 are for."""
    return [[iso(step(start, first + i + k, period_seconds)) for k in range(1, horizon + 1)] for i in range(readings)]

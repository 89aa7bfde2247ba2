"""Times as a user writes them, and the times a forecast is for. Pure Python (the serving image
imports it; training reads whole columns with pandas in training/seasons.py, to the same rules).

Accepted for one time (`parse_time`), all converted to unix seconds (UTC):
- ISO dates and date-times: `1949-01` (a month), `1949-01-01`, `2010-01-01T00:00`,
  `2010/01/01 00:00`, seconds and fractions, `Z` or an offset (`+01:00`); without an offset UTC;
- quarters: `1990Q1`, `1990-Q1`, `1990 Q1`, `Q1 1990` (the quarter's first day);
- a year alone: `1949` (1 January), also as a whole number 1000-3000;
- day and month with the year last: `31/01/1949`, `01/31/1949`, `31.01.1949`, `31-01-1949`
  (a time may follow): the day comes first when a first field is over 12, the month when a
  second one is; a column where neither is (`01/02/1949`, `01/03/1949`, ...) is day first when
  its first field never changes (monthly data written day/month/year) and month first
  otherwise. Training records a column's order (`date_order`, the manifest's `time.day_first`)
  and a start_time for that model is read in it (`parse_time(value, day_first)`: a value
  contradicting it, `13/01/2012` for a month-first model, is refused naming the order); one
  value alone without a recorded order is ambiguous and refused unless its fields are equal
  (`01/01/2012`) or one is over 12;
- month names: `Jan 1949`, `January 1949`, `1949 Jan`, `31 Jan 1949`, `31-Jan-1949`;
- epoch seconds: a number (or a string of digits) from 1e8 on (1973 on), epoch milliseconds
  from 1e11 on. Smaller numbers are not times (step counters, values).

`parse_time` reads one value (a request's `start_time`); `parse_times` a whole column (training's
time column, the client's frame), to the same rules: this module is the one parser of both, and
of the Python client (it imports only the standard library).

Forecast times (`forecast_times`): reading i of a stream that started at `start` is at
start + i periods, and the forecast made at reading i for lead k is for reading i + k. A period
of a calendar unit (months, quarters, years: the mean lengths training records) is stepped on
the calendar, so a monthly series started on 1 March forecasts 1 April, 1 May, ... Only years
1-9999 can be written (TimeRangeError past them): the service refuses a start_time whose
forecasts would run past 9999-12-31 (`check_forecastable`) before running the model. The phase
of a calendar period is its calendar index (`calendar_index`: any day of January is January).

Business days (trading days): readings Monday to Friday only. Training records their period as
BUSINESS_DAY (a week's seven days over its five readings, 1.4 days), and a time that many
periods on is counted in weekdays (`business_index`), keeping the time of day: the reading
after a Friday's is the Monday's, so a weekly phase over the five trading days follows the
calendar. A Saturday or Sunday counts as the Monday after it.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, datetime, timedelta

DAY = 86_400.0
MONTH = 2_629_746.0  # mean Gregorian month: what training records as a monthly period
BUSINESS_DAY = 7 * DAY / 5  # what training records as the period of weekday-only (trading-day) data
_QUARTER = re.compile(r"^(\d{4})\s*[-/ ]?\s*[Qq]([1-4])$")
_QUARTER_FIRST = re.compile(r"^[Qq]([1-4])\s*[-/ ]?\s*(\d{4})$")
_YEAR = re.compile(r"^\d{4}$")
_MONTH = re.compile(r"^(\d{4})[-/](\d{1,2})$")
_DATE = re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(.*)$")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")
_DMY = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:[ T](.+))?$")
_NAMED = re.compile(r"^(?:(\d{1,2})[ -])?([A-Za-z]{3,9})\.?,?[ -](\d{4})$")
_NAMED_YEAR_FIRST = re.compile(r"^(\d{4})[ -]([A-Za-z]{3,9})$")
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name} | {
    name.lower(): i for i, name in enumerate(calendar.month_name) if name
}
_MONTHS["sept"] = 9
YEARS = (1000, 3000)  # whole numbers in here are years
EPOCH_SECONDS_MIN = 1e8  # numbers from here on are epoch seconds (1973 on)
EPOCH_MS_MIN = 1e11  # and from here on epoch milliseconds
FORMATS = (
    "an ISO 8601 date or date-time (1949-01, 1949-01-01, 2010-01-01T00:00:00Z, 2010/01/01 00:00, "
    "with an offset or UTC), a quarter (1990Q1), a year (1949), a day/month/year date (31/01/1949), "
    "a month name (Jan 1949) or epoch seconds"
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


def _number(value: float, *, years: bool = True) -> float | None:
    """Unix seconds of a number: a whole year, epoch milliseconds or seconds; None otherwise."""
    if not math.isfinite(value):
        return None
    if years and value == math.floor(value) and YEARS[0] <= value <= YEARS[1]:
        return _utc(int(value), 1)
    if value >= EPOCH_MS_MIN:
        return value / 1000.0
    if value >= EPOCH_SECONDS_MIN:
        return float(value)
    return None


def _iso(year: int, month: int, day: int, rest: str) -> float:
    """Unix seconds of a date and the rest of an ISO date-time (time, offset); UTC without one."""
    text = f"{year:04d}-{month:02d}-{day:02d}{rest}"
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _text(text: str, day_first: bool | None) -> float | None:
    """Unix seconds of one stripped text value; None when it is no time. `day_first`: the order
    of a day/month/year value (None: decided by the value alone, refused when ambiguous)."""
    if _NUMBER.match(text):
        return _number(float(text), years=bool(_YEAR.match(text)))
    if m := _QUARTER.match(text):
        return _utc(int(m.group(1)), 3 * (int(m.group(2)) - 1) + 1)
    if m := _QUARTER_FIRST.match(text):
        return _utc(int(m.group(2)), 3 * (int(m.group(1)) - 1) + 1)
    if m := _MONTH.match(text):
        return _utc(int(m.group(1)), int(m.group(2)))
    if m := _DATE.match(text):
        return _iso(int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4))
    if m := _DMY.match(text):
        first, second, year = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if day_first is None:
            if first > 12:
                day_first = True
            elif second > 12 or first == second:
                day_first = False  # 01/01/2012 is the same day in either order
            else:
                raise TimeFormatError(
                    f"{text!r} is ambiguous (day/month or month/day): write it as ISO, "
                    f"{year:04d}-{second:02d}-{first:02d} if it is day/month/year or "
                    f"{year:04d}-{first:02d}-{second:02d} if it is month/day/year"
                )
        elif (second if day_first else first) > 12:
            order, example = ("day/month/year", "31/01/2012") if day_first else ("month/day/year", "01/31/2012")
            raise TimeFormatError(
                f"{text!r} is not {order}, the order of the dates this model was trained on "
                f"(e.g. {example}): write it {order} or as ISO"
            )
        day, month = (first, second) if day_first else (second, first)
        rest = f" {m.group(5)}" if m.group(5) else ""
        return _iso(int(m.group(4)), month, day, rest)
    if m := _NAMED.match(text):
        named = _MONTHS.get(m.group(2).lower())
        if named is None:
            return None
        return _utc(int(m.group(3)), named, int(m.group(1)) if m.group(1) else 1)
    if m := _NAMED_YEAR_FIRST.match(text):
        named = _MONTHS.get(m.group(2).lower())
        return None if named is None else _utc(int(m.group(1)), named)
    return None


def parse_time(value: object, day_first: bool | None = None) -> float:
    """Unix seconds of one time (see the module docstring); TimeFormatError otherwise."""
    if isinstance(value, bool):
        raise TimeFormatError(f"expected {FORMATS}; got a boolean")
    if isinstance(value, int | float):
        seconds = _number(float(value))
        if seconds is None:
            raise TimeFormatError(f"expected {FORMATS}; got {value!r} (numbers are years 1000-3000 or epoch seconds)")
        return seconds
    if not isinstance(value, str):
        raise TimeFormatError(f"expected {FORMATS}; got a {type(value).__name__}")
    text = value.strip()
    if not text or len(text) > 64:
        raise TimeFormatError(f"expected {FORMATS}; got {value[:64]!r}")
    try:
        seconds = _text(text, day_first)
    except (ValueError, OverflowError, OSError) as exc:
        if isinstance(exc, TimeFormatError):
            raise
        seconds = None
    if seconds is None:
        raise TimeFormatError(f"expected {FORMATS}; got {value[:64]!r}")
    return seconds


def day_first(values: list[str]) -> bool:
    """The order of a column's day/month/year values: day first when a first field is over 12,
    month first when a second one is, else day first only when the first field never changes
    (the 1st of every month, written 01/02/1949, 01/03/1949, ...)."""
    pairs = [(int(m.group(1)), int(m.group(3))) for v in values if (m := _DMY.match(v))]
    if any(first > 12 for first, _ in pairs):
        return True
    if any(second > 12 for _, second in pairs):
        return False
    return len(pairs) > 1 and len({f for f, _ in pairs}) == 1 and len({s for _, s in pairs}) > 1


def date_order(values: list[str]) -> bool | None:
    """Whether a time column's day/month/year dates are day first (`day_first`); None when it
    holds none. Training records it, so a start_time written like the training file's dates is
    read in the same order."""
    texts = [str(v).strip() for v in values]
    if not any(_DMY.match(t) for t in texts):
        return None
    return day_first(texts)


def parse_times(values: list[object]) -> list[float] | None:
    """Unix seconds of every value of a column, or None when it does not hold times: the rules
    of `parse_time`, except that numbers are years only when all are whole years 1000-3000, and
    the column decides the order of day/month/year values (`day_first`)."""
    if not values or any(isinstance(v, bool) or v is None for v in values):
        return None
    if all(isinstance(v, int | float) for v in values):
        numbers = [float(v) for v in values]  # type: ignore[arg-type]
        if not all(math.isfinite(v) for v in numbers):
            return None
        whole_years = all(v == math.floor(v) and YEARS[0] <= v <= YEARS[1] for v in numbers)
        if whole_years:
            return [_utc(int(v), 1) for v in numbers]
        low = min(numbers)
        if low >= EPOCH_MS_MIN:
            return [v / 1000.0 for v in numbers]
        return numbers if low >= EPOCH_SECONDS_MIN else None
    if not all(isinstance(v, str) for v in values):
        return None
    texts = [str(v).strip() for v in values]
    if all(_NUMBER.match(t) for t in texts):
        return parse_times([float(t) for t in texts])
    order = day_first(texts)
    out = []
    for text in texts:
        try:
            seconds = _text(text, order) if text and len(text) <= 64 else None
        except (ValueError, OverflowError, OSError):
            return None
        if seconds is None:
            return None
        out.append(seconds)
    return out


def _months(period_seconds: float) -> int:
    """Whole calendar months a period is (1 monthly, 3 quarterly, 12 yearly), 0 if none."""
    for months in (1, 3, 12):
        if abs(period_seconds - months * MONTH) <= 0.02 * months * MONTH:
            return months
    return 0


def is_business(period_seconds: float) -> bool:
    """Whether a period is the business-day one (BUSINESS_DAY, to the second)."""
    return abs(period_seconds - BUSINESS_DAY) <= 1.0


def business_index(seconds: float) -> int:
    """Weekdays from Monday 1969-12-29 to the day of `seconds` (UTC): Monday 0, Friday 4, the
    next Monday 5, ...; a Saturday or Sunday is given the next Monday's index."""
    days = math.floor(seconds / DAY) + 3  # 1970-01-01 was a Thursday
    week, weekday = divmod(days, 7)
    return week * 5 + min(weekday, 5)


def _business_day(index: int) -> float:
    """Unix seconds of the start (00:00 UTC) of the weekday with that `business_index`."""
    week, weekday = divmod(index, 5)
    return (week * 7 + weekday - 3) * DAY


def step(start: float, steps: int, period_seconds: float) -> float:
    """The time `steps` periods after `start` (calendar months for monthly and longer periods,
    weekdays for business days); TimeRangeError when that is outside years 1-9999."""
    if not FIRST <= start <= LAST:
        raise TimeRangeError(f"{iso_or_seconds(start)} is outside years 1-9999")
    months = _months(period_seconds)
    if is_business(period_seconds):
        time_of_day = start - math.floor(start / DAY) * DAY
        moved = _business_day(business_index(start) + steps) + time_of_day
    elif not months:
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


MAX_FILLED = 0.1  # at most this share of a grid's times may be missing to be filled (training, client)


def grid_positions(seconds: list[float], period_seconds: float) -> list[int] | None:
    """Where each time (in order, the first at position 0) sits on the grid a series sampled
    every `period_seconds` makes from its first time: position p is `step(first, p, period)`
    (calendar months for monthly and longer periods, weekdays for business days). None when a
    time is off that grid (more than a fifth of a calendar period, a fiftieth of another, away)
    or two share a position (`off_grid` names the first such time). Positions missing from the
    result are the series' gaps: training fills them (training/seasons.py `fill_gaps`) and the
    client fills a frame's the same way, against the model's period."""
    positions, bad = _grid(seconds, period_seconds)
    return None if bad is not None else positions


def off_grid(seconds: list[float], period_seconds: float) -> int | None:
    """Index of the first time that is not on the grid of `grid_positions` (None: all are)."""
    return _grid(seconds, period_seconds)[1]


def _grid(seconds: list[float], period_seconds: float) -> tuple[list[int], int | None]:
    if not seconds or period_seconds <= 0:
        return [], 0
    first = seconds[0]
    business = is_business(period_seconds)
    tolerance = (0.2 if business or _months(period_seconds) else 0.02) * period_seconds
    origin = business_index(first) if business else 0
    positions: list[int] = []
    for i, t in enumerate(seconds):
        p = business_index(t) - origin if business else math.floor((t - first) / period_seconds + 0.5)
        if p < 0 or (positions and p <= positions[-1]):
            return positions, i
        try:
            on_grid = step(first, p, period_seconds)
        except TimeRangeError:
            return positions, i
        if abs(on_grid - t) > tolerance:
            return positions, i
        positions.append(p)
    return positions, None


def period_name(period_seconds: float) -> str:
    """A sampling period in words: monthly, quarterly, yearly, business-daily, daily, hourly,
    or its length (every 900 s)."""
    if is_business(period_seconds):
        return "business-daily"
    named = {1: "monthly", 3: "quarterly", 12: "yearly"}.get(_months(period_seconds))
    if named:
        return named
    plain = {DAY: "daily", 7 * DAY: "weekly", 3600.0: "hourly", 1800.0: "half-hourly", 60.0: "minutely"}
    return plain.get(float(period_seconds), f"every {period_seconds:g} s")


def check_forecastable(start: float, steps: int, period_seconds: float) -> None:
    """TimeRangeError unless the time `steps` periods after `start` (the last forecast of a
    request) is within years 1-9999. Checked before running a model, so a far-future start_time
    is refused as bad input instead of failing after inference."""
    step(start, steps, period_seconds)


def calendar_index(seconds: float, period_seconds: float) -> int | None:
    """The calendar period a time falls in, counted from year 0 (months: year*12 + month-1,
    quarters: year*4 + quarter-1, years: the year) for monthly, quarterly and yearly periods, and
    its `business_index` for business days; None for other periods. The day within the month
    does not matter: 1949-01-31 is January."""
    if is_business(period_seconds):
        return business_index(seconds)
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

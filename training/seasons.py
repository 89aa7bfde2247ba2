"""Time and seasons from the data: which column holds the time, how often the series is sampled,
and which seasons the training block confirms.

A new user gives only `--data` and `--target`; the seasons a model needs (48 and 336 for
half-hourly demand, 12 for monthly sales) are then read from the data instead of from flags.

**Time** (`read_time`): the `--time-column`, or else the first column whose values all parse as
times (a column named like a timestamp is tried first). Accepted: what models/times.py reads
(the service's `start_time` and the client use the same parser): ISO dates and date-times
(`1949-01`, `1949-01-01`, `2010/01/01 00:00`, `2010-01-01T00:00+01:00`; offsets are converted to
UTC), quarters (`1990Q1`, `1990-Q2`, `1990 Q3`), whole years (`1949`), day/month/year dates
(`31/01/1949`), month names (`Jan 1949`) and epoch seconds (numbers from 1e8 on, i.e. after
1973; milliseconds from 1e11). Rows out of time order are sorted (with a
warning naming the first row out of order); two rows with the same time are refused naming them.

**Period** (`TimeInfo.period_seconds`): the median spacing, snapped to a calendar unit when it
is one (a month is 28-31 days, so monthly data gets the mean Gregorian month, 2,629,746 s: a
phase counted in mean months stays within two days of the calendar for centuries). The series
is regular when every row sits on that grid; an irregular one gets no phase (and is said so).
Readings on weekdays only (trading days) are business-daily: period models/times.BUSINESS_DAY,
stepped over weekdays, seasons 5 (the trading week) and 261 (a year of weekdays); weekdays
missing among them (holidays) are filled like missing months.

**Seasons** (`choose_seasons`): the candidates a sampling period implies (`CANDIDATES`) are kept
only when the training block confirms them: the autocorrelation of the first differences at the
season's lag is above the one-sided 95 % white-noise bound (1.645 / sqrt(n), one test per
a-priori candidate) and above MIN_ACF, with at least two full cycles in the training block.
Differences, because a trend makes every lag of the levels look correlated. Without a time
column (or with a period that implies no candidate, like yearly data), the lag with the highest
such autocorrelation between 2 and a third of the training block is the candidate, held to a
stricter bound (Bartlett's large-lag standard error times Z_VALUES, at least MIN_ACF_VALUES),
since it was picked as the best of many lags. Only the training block
is read: validation and test stay unseen. The final use of a season, the forecaster's baseline
transform, is still chosen on validation error (training/forecaster_run.py), so a season kept
here that does not help is not used as the baseline either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models import times
from training.data import TrainingError

TIME_NAMES = ("timestamp", "time", "date", "datetime", "ds", "period", "month", "year", "quarter", "week", "day")
DAY = 86_400.0
MONTH = 2_629_746.0  # mean Gregorian month (365.2425 days / 12)
QUARTER = 3 * MONTH
YEAR = 12 * MONTH
# (name, seconds, accepted spacing range in seconds) of the periods with calendar seasons.
UNITS: tuple[tuple[str, float, float, float], ...] = (
    ("minutely", 60.0, 59.0, 61.0),
    ("5-minutely", 300.0, 299.0, 301.0),
    ("10-minutely", 600.0, 599.0, 601.0),
    ("15-minutely", 900.0, 899.0, 901.0),
    ("half-hourly", 1800.0, 1799.0, 1801.0),
    ("hourly", 3600.0, 3599.0, 3601.0),
    ("daily", DAY, DAY - 1, DAY + 1),
    # Weekday-only (trading-day) data: told apart from daily data with gaps by its weekdays
    # (`_axis`), never by its spacing; stepped over weekdays (models/times.py).
    ("business-daily", times.BUSINESS_DAY, times.BUSINESS_DAY - 1, times.BUSINESS_DAY + 1),
    ("weekly", 7 * DAY, 7 * DAY - 1, 7 * DAY + 1),
    ("monthly", MONTH, 28 * DAY, 31 * DAY + 1),
    ("quarterly", QUARTER, 89 * DAY, 92 * DAY + 1),
    ("yearly", YEAR, 365 * DAY, 366 * DAY + 1),
)
# Seasons each period implies, in steps: the day and the week, the year where it is a whole
# number of steps (daily 365.25 is used as 365, weekly 52.18 as 52).
CANDIDATES: dict[str, tuple[int, ...]] = {
    "minutely": (60, 1440),
    "5-minutely": (12, 288),
    "10-minutely": (6, 144),
    "15-minutely": (4, 96, 672),
    "half-hourly": (48, 336),
    "hourly": (24, 168),
    "daily": (7, 365),
    "business-daily": (5, 261),  # the week's five trading days; a year of weekdays (52.18 x 5)
    "weekly": (52,),
    "monthly": (12,),
    "quarterly": (4,),
    "yearly": (),
}
MIN_ACF = 0.1  # a calendar season's difference autocorrelation must be at least this
MIN_ACF_VALUES = 0.3  # a season found from the values alone (the best of many lags): at least this
Z_CALENDAR = 1.645  # one-sided 95 %: only a positive correlation confirms a season
Z_VALUES = 3.0
MIN_CYCLES = 2  # full cycles of a season in the training block
MAX_SEASON = 10_000
# Seasons that are a year (daily 365, business-daily 261, weekly 52): a yearly cycle moves a
# reading little from one step to the next, so the difference autocorrelation of daily readings
# does not see it under the day-to-day noise (a daily temperature: acf 0.00 at lag 365). When
# that test drops one, it is tested again on the series' means over twelfths of the year
# (months): whether their month-to-month changes depend on the month (`_block_evidence`), a
# second look held to BLOCKS_ALPHA.
YEARLY = frozenset({365, 261, 52})
BLOCKS_PER_CYCLE = 12
BLOCKS_ALPHA = 0.005
# A cycle from the values alone when no lag's autocorrelation clears its bound (a cycle of 9-10
# years in 80 yearly values: the difference autocorrelations at the shorter lags are large too,
# so Bartlett's bound is far above the peak): a periodogram peak tested against its neighbours.
PERIODOGRAM_ALPHA = 0.01  # over all the periods tested (Bonferroni)
PERIODOGRAM_BAND = 5  # ordinates each side of the peak, past its immediate neighbours
MIN_PERIOD = 2.5


class LongFormat(TrainingError):
    """Duplicated times that a text column tells apart: the file is several series in the long
    format. Carries that column, so the caller can train them as one global model."""

    def __init__(self, message: str, series_id: str, time_column: str) -> None:
        super().__init__(message)
        self.series_id = series_id
        self.time_column = time_column


@dataclass
class TimeInfo:
    """The time axis of a table (after sorting): what the manifest records under `time`."""

    column: str
    first: float  # unix seconds of row 0
    period_seconds: float | None  # None: not regularly spaced
    frequency: str  # "monthly", "hourly", ... or "every N s", "irregular"
    detected: bool  # found without --time-column
    sorted_rows: bool = False  # the file was not in time order and was sorted
    first_out_of_order: int | None = None  # data row (1-based) of the first row out of order
    # The order of day/month/year dates in the column (True: 31/01/2012, False: 01/31/2012;
    # None: none written so): the service reads a start_time for the model in it.
    day_first: bool | None = None
    seconds: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    # rows (after filling) that were missing from the file and filled by interpolation
    # (fill_gaps): made-up readings, never scored (training/data.prepare_forecast)
    filled_rows: tuple[int, ...] = field(default=(), repr=False)

    @property
    def regular(self) -> bool:
        return self.period_seconds is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("seconds")
        out.pop("filled_rows")
        out["first_iso"] = pd.Timestamp(self.first, unit="s", tz="UTC").isoformat()
        return out


@dataclass
class SeasonChoice:
    """The seasons used and why: recorded in the manifest under `seasons` and printed."""

    setting: str  # "auto", "off" or "given"
    seasons: list[int]
    source: str  # "flag", "calendar", "values", "none"
    candidates: list[int] = field(default_factory=list)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # season -> acf, bound, kept, why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.setting == "off":
            return "seasons: off (--season 0)"
        if self.setting == "given":
            return f"seasons: {self.seasons} (--season)"
        parts = []
        for season, e in self.evidence.items():
            if "series_confirming" in e:
                parts.append(
                    f"{season}: confirmed on {e['series_confirming']} of {e['series']} series -> {e['verdict']}"
                )
            elif "f" in e:
                parts.append(
                    f"{season}: F {e['f']:.1f}, p {e['p']:.2g} vs {e['alpha']:g} on {e['on']} -> {e['verdict']}"
                )
            elif "p" in e:
                parts.append(
                    f"{season}: peak at period {e['period']:g}, {e['ratio']:.1f}x its neighbours, p {e['p']:.2g} "
                    f"vs {e['alpha']:g} -> {e['verdict']}"
                )
            elif "acf" in e:
                parts.append(f"{season}: acf {e['acf']:.2f} vs bound {e['bound']:.2f} -> {e['verdict']}")
            else:
                parts.append(f"{season}: {e['verdict']}")
        found = str(self.seasons) if self.seasons else "none"
        how = {"calendar": "from the sampling period", "values": "from the values alone"}.get(self.source, "")
        evidence = f" ({'; '.join(parts)})" if parts else ""
        return f"seasons: {found} found {how}{evidence}".replace("  ", " ")


# ------------------------------------------------------------------------------------- time


def parse_times(raw: pd.Series) -> np.ndarray | None:
    """Unix seconds of every value, or None when the column does not hold times.

    The rules are models/times.py's `parse_times`, the parser the service reads `start_time`
    with and the Python client reads a frame's time column with, so a format that trains is a
    format a request may use. Numbers are times only as whole years (1000-3000) or epoch
    seconds/milliseconds; smaller numbers are step counters or values, not times. A column
    pandas already holds as datetimes needs no parsing."""
    if len(raw) == 0 or raw.isna().any():
        return None
    if pd.api.types.is_bool_dtype(raw):
        return None
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.to_datetime(raw, utc=True)
        return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    if pd.api.types.is_numeric_dtype(raw):
        values: list[object] = raw.tolist()
    else:
        values = [str(v) for v in raw]
    seconds = times.parse_times(values)
    return None if seconds is None else np.asarray(seconds, dtype=np.float64)


def find_time_column(frame: pd.DataFrame, skip: set[str]) -> tuple[str, np.ndarray] | None:
    """The first column that parses as times (columns named like a time first), with its seconds."""
    columns = [c for c in frame.columns if str(c) not in skip]
    named = [c for c in columns if str(c).strip().lower() in TIME_NAMES]
    # Other columns only when they hold text or datetimes: a numeric column that is not named
    # like a time is a value (sales of 1500 are not the year 1500), not a clock.
    others = [c for c in columns if c not in named and not pd.api.types.is_numeric_dtype(frame[c])]
    for column in [*named, *others]:
        seconds = parse_times(frame[column])
        if seconds is not None and len(np.unique(seconds)) > 1:
            return str(column), seconds
    return None


def frequency_of(period_seconds: float) -> str:
    """The name of a sampling period ("monthly", "hourly", ... or "every N s")."""
    return _frequency(period_seconds)[0]


def _frequency(spacing: float) -> tuple[str, float]:
    for name, seconds, low, high in UNITS:
        if low <= spacing <= high:
            return name, seconds
    return f"every {spacing:g} s", spacing


def read_time(
    frame: pd.DataFrame,
    column: str = "",
    *,
    skip: set[str] | None = None,
    report: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, TimeInfo | None]:
    """The table in time order and its time axis (None: no time column given or found).

    `--time-column` that does not parse is an error; a detected column is only used when every
    value parses. Duplicated times are refused naming the rows."""
    explicit = bool(column)
    if explicit:
        from training.data import require_columns

        require_columns(frame, [column], "time")
        seconds = parse_times(frame[column])
        if seconds is None:
            bad = _first_unreadable(frame[column])
            raise TrainingError(f"time column {column!r} does not hold timestamps{bad}; accepted: {times.FORMATS}")
    else:
        found = find_time_column(frame, skip or set())
        if found is None:
            return frame, None
        column, seconds = found
    duplicated = _duplicates(seconds)
    if duplicated:
        message = f"time column {column!r} has duplicated timestamps: {duplicated}; one row per time"
        series_id = _series_column(frame, seconds, str(column))
        if series_id:
            raise LongFormat(
                f"{message} (or this is several series in the long format: add --series-id {series_id})",
                series_id,
                str(column),
            )
        raise TrainingError(message)
    order = np.argsort(seconds, kind="stable")
    moved = bool(np.any(order != np.arange(len(order))))
    first_bad = None
    if moved:
        first_bad = int(np.flatnonzero(np.diff(seconds) < 0)[0]) + 2
        newest_first = bool(np.all(np.diff(seconds) < 0))
        how = "newest first" if newest_first else f"first out of order at data row {first_bad}"
        report(f"warning: rows are not in time order ({how}): sorted by {column!r}")
        frame = frame.iloc[order].reset_index(drop=True)
        seconds = seconds[order]
    info = _axis(str(column), seconds, detected=not explicit)
    if info.period_seconds is None:
        filled = fill_gaps(frame, str(column), seconds)
        if filled is not None:
            frame, seconds, missing = filled
            info = _axis(str(column), seconds, detected=not explicit)
            info.filled_rows = tuple(int(i) for i in np.searchsorted(seconds, missing))
            report(
                f"time column {column!r} ({info.frequency}) misses {len(missing)} time(s), first "
                f"{times.iso(missing[0])}: filled by linear interpolation between their neighbours"
            )
    info.sorted_rows, info.first_out_of_order = moved, first_bad
    if not pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_datetime64_any_dtype(frame[column]):
        info.day_first = times.date_order([str(v) for v in frame[column]])
    if info.period_seconds is None:
        report(
            f"time column {column!r} is not regularly spaced ({info.frequency}): the model gets no phase "
            "(start_time is ignored); seasons are read from the values"
        )
    return frame, info


MAX_FILLED = times.MAX_FILLED  # at most this share of a regular grid's times may be missing to be filled


def fill_gaps(
    frame: pd.DataFrame, column: str, seconds: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, list[float]] | None:
    """A series sampled at a calendar unit with a few times missing (a month dropped from a
    monthly file), reindexed onto the full grid: numeric columns interpolated linearly between
    the neighbours, others carried forward, the missing times written in the time column (ISO,
    or seconds for a numeric column). The new frame, its seconds and the times filled; None
    when the rows are not on one grid or more than MAX_FILLED of it is missing (irregular data
    is not invented)."""
    if len(seconds) < 3:
        return None
    frequency, period = _frequency(float(np.median(np.diff(seconds))))
    if frequency == "daily" and _weekdays_only(seconds) and _on_business_grid(seconds, every=False):
        frequency, period = "business-daily", times.BUSINESS_DAY  # trading days: holidays are the gaps
    if frequency not in CANDIDATES:
        return None
    found = times.grid_positions(seconds.tolist(), period)
    if found is None:
        return None
    size = found[-1] + 1
    missing_at = sorted(set(range(size)) - set(found))
    if not missing_at or len(missing_at) > MAX_FILLED * size:
        return None
    grid = [times.step(float(seconds[0]), i, period) for i in range(size)]
    positions = np.asarray(found)
    full = frame.set_axis(positions.tolist(), axis=0).reindex(range(len(grid)))
    for name in full.columns:
        if name == column:
            continue
        if pd.api.types.is_numeric_dtype(frame[name]):
            full[name] = full[name].interpolate(method="linear")
        else:
            full[name] = full[name].ffill()
    missing = [grid[i] for i in missing_at]
    if pd.api.types.is_numeric_dtype(frame[column]):
        full.loc[missing_at, column] = missing
    else:
        full[column] = full[column].astype(object)
        full.loc[missing_at, column] = [times.iso(t) for t in missing]
    return full.reset_index(drop=True), np.asarray(grid, dtype=np.float64), missing


def _series_column(frame: pd.DataFrame, seconds: np.ndarray, column: str) -> str:
    """A text column that makes every (column, time) pair unique: the file then holds many
    series, one row per series and time ("" when there is none)."""
    for other in frame.columns:
        if str(other) == column or pd.api.types.is_float_dtype(frame[other]):
            continue
        keys = frame[other].astype(str)
        if 1 < keys.nunique() < len(frame) and not pd.DataFrame({"k": keys, "t": seconds}).duplicated().any():
            return str(other)
    return ""


def _first_unreadable(raw: pd.Series) -> str:
    for i, value in enumerate(raw):
        if pd.isna(value) or parse_times(pd.Series([value])) is None:
            return f" (data row {i + 1}: {value!r})"
    return ""


def _duplicates(seconds: np.ndarray) -> str:
    """'data rows 3 and 7 (1949-03-01T00:00:00+00:00), ...' for the first few duplicated times."""
    values, inverse, counts = np.unique(seconds, return_inverse=True, return_counts=True)
    if np.all(counts == 1):
        return ""
    parts = []
    for index in np.flatnonzero(counts > 1)[:3]:
        rows = (np.flatnonzero(inverse == index) + 1).tolist()
        when = pd.Timestamp(values[index], unit="s", tz="UTC").isoformat()
        if len(rows) > 4:
            listed = f"{', '.join(map(str, rows[:3]))} and {len(rows) - 3} more"
        else:
            listed = f"{', '.join(map(str, rows[:-1]))} and {rows[-1]}"
        parts.append(f"data rows {listed} ({when})")
    more = int((counts > 1).sum()) - len(parts)
    return "; ".join(parts) + (f"; {more} more times" if more > 0 else "")


def regular_period(seconds: np.ndarray) -> float | None:
    """The sampling period of times in order when they are regularly spaced, else None."""
    if len(seconds) < 2:
        return None
    return _axis("", seconds, detected=False).period_seconds


def _weekdays_only(seconds: np.ndarray) -> bool:
    """Daily readings on weekdays only (trading days): none on a Saturday or Sunday (UTC)."""
    weekday = (np.floor(seconds / DAY).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday: 0 Monday
    return bool(np.all(weekday < 5))


def _on_business_grid(seconds: np.ndarray, every: bool) -> bool:
    """Weekday readings at one time of day, in order: each on a later weekday than the one
    before (`every`: on the next weekday, none missing)."""
    time_of_day = seconds - np.floor(seconds / DAY) * DAY
    if np.any(np.abs(time_of_day - time_of_day[0]) > 1.0):
        return False
    index = np.array([times.business_index(float(t)) for t in seconds])
    change = np.diff(index)
    return bool(np.all(change == 1)) if every else bool(np.all(change >= 1))


def _axis(column: str, seconds: np.ndarray, detected: bool) -> TimeInfo:
    spacing = float(np.median(np.diff(seconds))) if len(seconds) > 1 else 0.0
    if spacing <= 0:
        return TimeInfo(column, float(seconds[0]), None, "irregular", detected, seconds=seconds)
    frequency, period = _frequency(spacing)
    steps = np.floor((seconds - seconds[0]) / period + 0.5)
    # Calendar units wander around their mean length (months of 28-31 days): allow that much.
    tolerance = 0.2 if period >= 28 * DAY else 0.02
    regular = np.array_equal(steps, np.arange(len(seconds))) and bool(
        np.all(np.abs((seconds - seconds[0]) / period - steps) <= tolerance)
    )
    if not regular:
        gaps = int(np.sum(np.diff(steps) > 1)) if np.all(np.diff(steps) >= 1) else -1
        label = f"{frequency} with {gaps} gap(s)" if gaps > 0 else "irregular"
        if frequency == "daily" and gaps > 0 and _weekdays_only(seconds):
            if _on_business_grid(seconds, every=True):
                return TimeInfo(
                    column, float(seconds[0]), times.BUSINESS_DAY, "business-daily", detected, seconds=seconds
                )
            days = np.floor(seconds / DAY).astype("datetime64[D]")
            others = int(np.busday_count(days[0], days[-1] + 1)) - len(seconds)
            extra = f"; {others} other weekday(s) missing, such as holidays" if others else ""
            label = f"business-daily (weekdays only{extra})"
        return TimeInfo(column, float(seconds[0]), None, label, detected, seconds=seconds)
    return TimeInfo(column, float(seconds[0]), period, frequency, detected, seconds=seconds)


# ------------------------------------------------------------------------------------ seasons


def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation at lags 0..max_lag (FFT, biased estimator as in Box-Jenkins)."""
    x = x - x.mean()
    n = len(x)
    size = 1 << math.ceil(math.log2(2 * n))
    spectrum = np.fft.rfft(x, size)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[: max_lag + 1]
    return acov / acov[0] if acov[0] > 0 else np.zeros(max_lag + 1)


def _bound(acf: np.ndarray, lag: int, n: int, z: float) -> float:
    """Bartlett's large-lag standard error of the autocorrelation at `lag`, times z."""
    return float(z * math.sqrt((1.0 + 2.0 * float(np.sum(acf[1:lag] ** 2))) / n))


def candidate_seasons(info: TimeInfo | None) -> tuple[int, ...]:
    if info is None or info.period_seconds is None:
        return ()
    return CANDIDATES.get(info.frequency, ())


def choose_seasons(
    train: np.ndarray,
    info: TimeInfo | None,
    *,
    setting: str = "auto",
    given: list[int] | None = None,
) -> SeasonChoice:
    """Seasons for one series from its training block (see the module docstring).

    `setting`: "auto" (detect), "off" (none) or "given" (`given`, as typed: not checked here)."""
    if setting == "off":
        return SeasonChoice("off", [], "none")
    if setting == "given":
        return SeasonChoice("given", sorted(set(given or [])), "flag")
    y = np.asarray(train, dtype=np.float64)
    y = y[np.isfinite(y)]
    diffs = np.diff(y)
    n = len(diffs)
    candidates = candidate_seasons(info)
    evidence: dict[str, dict[str, Any]] = {}
    kept: list[int] = []
    if n < 8 or float(np.std(diffs)) <= 1e-12:
        return SeasonChoice("auto", [], "none", list(candidates), {"-": {"verdict": "too few or constant values"}})
    if candidates:
        for season in candidates:
            if MIN_CYCLES * season > len(y) - 1:
                evidence[str(season)] = {
                    "verdict": f"not tested: needs {MIN_CYCLES} cycles ({MIN_CYCLES * season + 1} training rows)"
                }
                continue
            acf = _acf(diffs, season)
            # One test per a-priori candidate: the white-noise bound z / sqrt(n).
            bound = max(Z_CALENDAR / math.sqrt(n), MIN_ACF)
            ok = bool(acf[season] > bound)
            evidence[str(season)] = {
                "acf": round(float(acf[season]), 4),
                "bound": round(bound, 4),
                "verdict": "kept" if ok else "dropped",
            }
            if not ok and season in YEARLY:
                blocks = _block_evidence(y, season)
                if blocks is not None:
                    evidence[str(season)] = blocks
                    ok = blocks["verdict"] == "kept"
            if ok:
                kept.append(season)
        if kept:
            return SeasonChoice("auto", kept, "calendar", list(candidates), evidence)
    # From the values alone: the strongest peak of the difference autocorrelation.
    top = min(MAX_SEASON, (len(y) - 1) // max(MIN_CYCLES, 3))
    if top < 2:
        return SeasonChoice("auto", [], "none", list(candidates), evidence)
    acf = _acf(diffs, top)
    lags = np.arange(2, top + 1)
    peaks = [int(lag) for lag in lags if acf[lag] >= acf[lag - 1] and (lag >= top or acf[lag] >= acf[lag + 1])]
    if not peaks:
        return SeasonChoice("auto", [], "none", list(candidates), evidence)
    best = max(peaks, key=lambda lag: acf[lag])
    bound = max(_bound(acf, best, n, Z_VALUES), MIN_ACF_VALUES)
    ok = bool(acf[best] > bound)
    evidence[f"{best} (values)"] = {
        "acf": round(float(acf[best]), 4),
        "bound": round(bound, 4),
        "verdict": "kept" if ok else "dropped",
    }
    if ok:
        return SeasonChoice("auto", [best], "values", list(candidates), evidence)
    cycle = periodogram_cycle(y)
    if cycle is not None:
        lag, found = cycle
        evidence[f"{lag} (periodogram)"] = found
        if found["verdict"] == "kept":
            return SeasonChoice("auto", [lag], "values", list(candidates), evidence)
    return SeasonChoice("auto", [], "none", list(candidates), evidence)


def _block_evidence(y: np.ndarray, season: int) -> dict[str, Any] | None:
    """A yearly `season` tested on the means of the series over twelfths of it (see YEARLY):
    the differences of those means grouped by their place in the cycle (the month), a one-way
    analysis of variance: F of the twelve group means against the spread within them, kept
    when its p-value is below BLOCKS_ALPHA. Differences, so that a trend or a random walk gives
    no month effect. None when the series holds fewer than MIN_CYCLES full cycles."""
    from scipy import stats

    cycles = len(y) // season
    if cycles < MIN_CYCLES:
        return None
    used = y[: cycles * season]
    block = (np.arange(len(used)) * BLOCKS_PER_CYCLE) // season  # twelve blocks per cycle, 30-31 days each
    means = np.bincount(block, weights=used) / np.bincount(block)
    diffs = np.diff(means)
    place = (np.arange(1, len(means)) % BLOCKS_PER_CYCLE).astype(np.int64)
    count = np.bincount(place, minlength=BLOCKS_PER_CYCLE)
    group = np.bincount(place, weights=diffs, minlength=BLOCKS_PER_CYCLE) / np.maximum(count, 1)
    within = float(np.sum((diffs - group[place]) ** 2))
    between = float(np.sum(count * (group - diffs.mean()) ** 2))
    df_between, df_within = BLOCKS_PER_CYCLE - 1, len(diffs) - BLOCKS_PER_CYCLE
    if df_within < 1 or within <= 1e-12 * max(between, 1e-300):
        return None
    f = (between / df_between) / (within / df_within)
    p = float(stats.f.sf(f, df_between, df_within))
    return {
        "f": round(f, 3),
        "p": float(f"{p:.3g}"),
        "alpha": BLOCKS_ALPHA,
        "on": f"month-to-month changes of {len(means)} means over twelfths of the season",
        "verdict": "kept" if p < BLOCKS_ALPHA else "dropped",
    }


def periodogram_cycle(y: np.ndarray) -> tuple[int, dict[str, Any]] | None:
    """The dominant cycle of a series from its values alone, with its evidence, or None when
    the series is too short to test one (fewer than 3 cycles of MIN_PERIOD).

    The series less its straight-line trend is prewhitened by its lag-1 autoregression (a
    random walk or an AR(1), whose spectra fall smoothly, become about white); the periodogram
    ordinate of each period between MIN_PERIOD and a third of the series is compared with the
    mean of PERIODOGRAM_BAND ordinates on each side past its immediate neighbours (where a
    period between two Fourier frequencies also shows): under a spectrum without a peak the ratio
    is F(2, 2 x band)-distributed. The most significant period is kept when its p-value times the
    number of periods tested is below PERIODOGRAM_ALPHA; the season is its period (refined
    between the Fourier frequencies) rounded, where the difference autocorrelation must be
    positive."""
    from scipy import stats

    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    t = np.arange(n, dtype=np.float64)
    x = y - np.polyval(np.polyfit(t, y, 1), t)
    den = float(np.dot(x[:-1], x[:-1]))
    phi = float(np.clip(np.dot(x[1:], x[:-1]) / den, -0.99, 0.99)) if den > 0 else 0.0
    r = x[1:] - phi * x[:-1]
    r = r - r.mean()
    m = len(r)
    power = np.abs(np.fft.rfft(r)) ** 2
    freq = np.fft.rfftfreq(m)
    last = len(power) - (2 if m % 2 == 0 else 1)  # the Nyquist ordinate (even length) is left out
    tested = [j for j in range(1, last + 1) if MIN_PERIOD <= 1.0 / freq[j] <= n / 3]
    best: tuple[float, int, float, int] | None = None
    for j in tested:
        band = [i for d in range(2, PERIODOGRAM_BAND + 2) for i in (j - d, j + d) if 1 <= i <= last]
        if len(band) < 3:
            continue
        noise = float(np.mean(power[band]))
        if noise <= 0:
            continue
        ratio = float(power[j] / noise)
        p = float(stats.f.sf(ratio, 2, 2 * len(band)))
        if best is None or p < best[0]:
            best = (p, j, ratio, len(band))
    if best is None:
        return None
    p, j, ratio, _ = best
    adjusted = min(1.0, p * len(tested))
    # The period between the Fourier frequencies: the peak of the periodogram zero-padded
    # sixteen-fold, within one Fourier step of the ordinate found.
    fine = np.abs(np.fft.rfft(r, 16 * m)) ** 2
    near = np.arange(max(1, 16 * j - 16), min(len(fine) - 1, 16 * j + 16) + 1)
    period = 16.0 * m / float(near[int(np.argmax(fine[near]))])
    lag = round(period)
    if lag < 2 or lag > (n - 1) // MIN_CYCLES:
        return None
    acf = _acf(np.diff(y), lag)
    ok = adjusted < PERIODOGRAM_ALPHA and acf[lag] > 0
    return lag, {
        "period": round(period, 2),
        "ratio": round(ratio, 2),
        "p": float(f"{adjusted:.3g}"),
        "alpha": PERIODOGRAM_ALPHA,
        "acf": round(float(acf[lag]), 4),
        "verdict": "kept" if ok else "dropped",
    }


def choose_for_many(trains: list[np.ndarray], period_seconds: float | None) -> SeasonChoice:
    """Seasons for one global model over many series: those kept (as `choose_seasons` keeps
    them, on each series' training block) by at least half of the series."""
    info = None
    if period_seconds is not None:
        frequency, _ = _frequency(period_seconds)
        info = TimeInfo("", 0.0, period_seconds, frequency, detected=True)
    votes: dict[int, int] = {}
    sources: dict[int, str] = {}
    for train in trains:
        choice = choose_seasons(train, info)
        for season in choice.seasons:
            votes[season] = votes.get(season, 0) + 1
            sources[season] = choice.source
    kept = sorted(s for s, n in votes.items() if n >= len(trains) / 2)
    evidence = {
        str(s): {"series_confirming": n, "series": len(trains), "verdict": "kept" if s in kept else "dropped"}
        for s, n in sorted(votes.items())
    }
    source = sources[kept[0]] if kept else "none"
    return SeasonChoice("auto", kept, source, list(candidate_seasons(info)), evidence)

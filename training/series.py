"""Many series in one long-format table: one row per (series, time), split within each series.

A global model learns from every series at once, so the data is kept as a list of per-series
arrays (`MultiSeriesData.series`), never concatenated into one stream: a model must never read
across the end of one series into the start of another, and distributed training shards the
list by rank (`MultiSeriesData.shard`).

- **Series and order**: `--series-id COL` names the series; within a series rows are ordered by
  `--time-column` when given (duplicate times in one series are refused), else kept in file
  order. Series may have different lengths and start times.
- **Split** (`split_series`): chronological *within* each series, by the same fractions as the
  single-series trainer: the last `test_fraction` of every series is its test block, the
  `val_fraction` before it its validation block, the rest its training block. A pair (input t ->
  targets t+1..t+h) belongs to a block only when all its targets lie in that block, so no
  training target of a series is one of its validation or test values.
- **Missing values**: each series starts at its first observed value and ends at its last
  (leading and trailing empty cells are dropped: that is how different start and end times look
  in a wide table reshaped to long). Gaps inside a series are filled by linear interpolation
  between its own neighbouring observations (never across series) so the stream stays regular,
  but a validation or test origin is scored only when its input row and every target row were
  observed: an interpolated value is never a target and never lends a later value to an input.
  A series missing more than MAX_MISSING_FRACTION of its span is refused, one too short for the
  split is left out (both reported).
- **Scale**: nothing per series is stored for the model; the forecaster derives each series'
  scale from its own recent history inside the graph (models/forecaster.py, `local_scale`).
  `Normalization` (pooled training rows) only describes typical inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from models.config import Normalization
from training.data import (
    MAX_MISSING_FRACTION,
    ForecastData,
    TrainingError,
    _std,
    numeric_column,
    require_columns,
)

MIN_TRAIN_PAIRS = 8  # a series with fewer training pairs than this is left out


@dataclass(frozen=True)
class SeriesSplit:
    """Where one series' rows are in the source table and where its blocks end.

    `rows` are source-table row numbers in time order (leading/trailing missing rows already
    dropped); rows[:train_rows] are the training block, rows[train_rows:val_end] validation,
    rows[val_end:] test."""

    key: str
    rows: np.ndarray
    train_rows: int
    val_end: int

    @property
    def train(self) -> np.ndarray:
        return self.rows[: self.train_rows]

    @property
    def val(self) -> np.ndarray:
        return self.rows[self.train_rows : self.val_end]

    @property
    def test(self) -> np.ndarray:
        return self.rows[self.val_end :]


@dataclass
class Series:
    """One series ready for training: its split as `ForecastData` (raw units, pair indices local
    to the series) plus what a session for it needs."""

    key: str
    data: ForecastData
    rows: np.ndarray  # source-table rows, time order
    observed: np.ndarray  # [n] bool: the target was observed (not interpolated)
    start_time: float | None  # unix seconds of the series' first row (None without a time axis)


@dataclass
class MultiSeriesData:
    """Every series of a long-format table, split within each series.

    `series` is the unit of sharding: `shard(rank, world)` keeps every world-th series."""

    series_id: str
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    horizon: int
    series: list[Series]
    normalization: Normalization
    filled: int
    dropped: dict[str, str]  # series key -> why it was left out
    period_seconds: float | None = None  # shared sampling period when the time axis is regular
    day_first: bool | None = None  # order of the time column's day/month/year dates (None: none)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f"{t}@t+{k}" for t in self.target_names for k in range(1, self.horizon + 1))

    @property
    def train_rows(self) -> int:
        """Training rows of the shortest series (what the longest season must fit in)."""
        return min(s.data.train_rows for s in self.series)

    def shard(self, rank: int, world: int) -> MultiSeriesData:
        """The series this rank trains on: every `world`-th, starting at `rank`."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        return replace(self, series=self.series[rank::world])

    def pairs(self, part: str) -> int:
        return sum(len(getattr(s.data, part)) for s in self.series)


def _order(frame: pd.DataFrame, series_id: str, time_column: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Source rows of every series in time order, and the parsed times (unix seconds) if any."""
    require_columns(frame, [series_id], "series-id")
    ids = frame[series_id]
    if ids.isna().any() or (ids.astype(str).str.strip() == "").any():
        first = int(np.flatnonzero((ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy())[0])
        raise TrainingError(f"series-id column {series_id!r} has missing values, first at data row {first + 1}")
    seconds = None
    if time_column:
        require_columns(frame, [time_column], "time")
        from training.seasons import parse_times

        seconds = parse_times(frame[time_column])
        if seconds is None:
            raise TrainingError(
                f"time column {time_column!r} does not hold timestamps (accepted: dates and date-times, quarters "
                "such as 1990Q1, years, epoch seconds), or has missing values"
            )
    groups: dict[str, np.ndarray] = {}
    for key, index in frame.groupby(ids.astype(str), sort=True).indices.items():
        rows = np.asarray(index, dtype=np.int64)
        if seconds is not None:
            rows = rows[np.argsort(seconds[rows], kind="stable")]
            if np.any(np.diff(seconds[rows]) == 0):
                raise TrainingError(f"series {key!r} has two rows with the same {time_column!r}")
        groups[str(key)] = rows
    return groups, seconds


def split_series(
    frame: pd.DataFrame,
    series_id: str,
    target: str,
    *,
    time_column: str = "",
    horizon: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    report: Callable[[str], None] = print,
) -> tuple[list[SeriesSplit], dict[str, str]]:
    """Every usable series' rows and blocks (see the module docstring), and the series left out
    with the reason. Blocks are cut on each series' own length after trimming missing ends."""
    groups, _ = _order(frame, series_id, time_column)
    values = numeric_column(frame, target)
    splits: list[SeriesSplit] = []
    dropped: dict[str, str] = {}
    for key, rows in groups.items():
        observed = np.flatnonzero(~np.isnan(values[rows]))
        if len(observed) == 0:
            dropped[key] = "no observed values"
            continue
        rows = rows[observed[0] : observed[-1] + 1]
        n = len(rows)
        gaps = int(np.isnan(values[rows]).sum())
        if gaps > MAX_MISSING_FRACTION * n:
            raise TrainingError(
                f"series {key!r} is missing {gaps} of its {n} values between its first and last observation "
                f"(more than {MAX_MISSING_FRACTION:.0%}); fill or drop them before training"
            )
        n_test = round(n * test_fraction)
        n_val = round(n * val_fraction)
        train_rows = n - n_val - n_test
        train_pairs = train_rows - horizon
        if train_pairs < MIN_TRAIN_PAIRS or n_val < horizon or n_test < horizon:
            dropped[key] = (
                f"too short: {n} rows give {max(train_pairs, 0)} training pairs (need {MIN_TRAIN_PAIRS}) and "
                f"{n_val} validation / {n_test} test rows (need {horizon} each for horizon {horizon})"
            )
            continue
        splits.append(SeriesSplit(key, rows, train_rows, train_rows + n_val))
    if dropped:
        shown = ", ".join(f"{k} ({why.split(':')[0]})" for k, why in list(dropped.items())[:5])
        more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
        report(f"{len(dropped)} series left out: {shown}{more}")
    if not splits:
        raise TrainingError(
            f"no series in {series_id!r} is long enough for horizon {horizon} and the split "
            f"(each needs about {int(np.ceil((MIN_TRAIN_PAIRS + 3 * horizon) / (1 - val_fraction - test_fraction)))} "
            "rows)"
        )
    return splits, dropped


def _series_forecast_data(
    split: SeriesSplit,
    columns: dict[str, np.ndarray],
    features: Sequence[str],
    target: str,
    horizon: int,
    observed: np.ndarray,
    normalization: Normalization,
) -> ForecastData:
    rows = split.rows
    x = np.stack([columns[c][rows] for c in features], axis=1)
    tgt = columns[target][rows][:, None]
    n = len(rows)
    pairs = np.arange(n - horizon)
    last, first = pairs + horizon, pairs + 1
    scored = np.array([observed[t] and observed[t + 1 : t + horizon + 1].all() for t in pairs], dtype=bool)
    train = pairs[last < split.train_rows]
    val = pairs[(first >= split.train_rows) & (last < split.val_end) & scored]
    test = pairs[(first >= split.val_end) & scored]
    y = np.stack([tgt[t + 1 : t + horizon + 1, 0] for t in pairs], axis=0)
    filled = int((~observed).sum())
    return ForecastData(
        (*features,), (target,), horizon, x, tgt, y, train, val, test, split.train_rows, normalization, filled
    )


def prepare_multiseries(
    frame: pd.DataFrame,
    series_id: str,
    target: str,
    features: Sequence[str] = (),
    *,
    time_column: str = "",
    horizon: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    report: Callable[[str], None] = print,
) -> MultiSeriesData:
    """Load, order, trim, fill and split every series of a long-format table."""
    if horizon < 1:
        raise TrainingError(f"horizon must be positive (got {horizon})")
    features = list(features) or [target]
    require_columns(frame, [target], "target")
    require_columns(frame, features, "feature")
    if series_id in features or series_id == target:
        raise TrainingError(f"the series-id column {series_id!r} cannot also be a feature or the target")
    splits, dropped = split_series(
        frame,
        series_id,
        target,
        time_column=time_column,
        horizon=horizon,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        report=report,
    )
    _, seconds = _order(frame, series_id, time_column)
    raw = {c: numeric_column(frame, c) for c in dict.fromkeys([*features, target])}
    filled_cols = {c: v.copy() for c, v in raw.items()}
    observed: dict[str, np.ndarray] = {}
    filled = 0
    for split in splits:
        for column, values in raw.items():
            part = values[split.rows]
            missing = np.isnan(part)
            if missing.any():
                if missing.sum() > MAX_MISSING_FRACTION * len(part):
                    raise TrainingError(
                        f"series {split.key!r}: column {column!r} is missing {int(missing.sum())} of "
                        f"{len(part)} values (more than {MAX_MISSING_FRACTION:.0%})"
                    )
                index = np.arange(len(part))
                part = part.copy()
                part[missing] = np.interp(index[missing], index[~missing], part[~missing])
                filled_cols[column][split.rows] = part
                filled += int(missing.sum())
            if column == target:
                observed[split.key] = ~missing
    if filled:
        report(f"{filled} missing value(s) inside series filled by linear interpolation within each series")

    train_x = np.concatenate([np.stack([filled_cols[c][s.train] for c in features], axis=1) for s in splits])
    train_t = np.concatenate([filled_cols[target][s.train] for s in splits])[:, None]
    norm = Normalization(
        tuple(float(v) for v in train_x.mean(axis=0)),
        tuple(float(v) for v in _std(train_x)),
        tuple(float(v) for v in np.repeat(train_t.mean(axis=0), horizon)),
        tuple(float(v) for v in np.repeat(_std(train_t), horizon)),
    )
    period = _shared_period(splits, seconds)
    series = []
    for split in splits:
        data = _series_forecast_data(split, filled_cols, features, target, horizon, observed[split.key], norm)
        if len(data.val) == 0 or len(data.test) == 0:
            dropped[split.key] = "no fully observed validation or test origin (gaps near its end)"
            report(f"series {split.key!r} left out: {dropped[split.key]}")
            continue
        start = float(seconds[split.rows[0]]) if seconds is not None and period is not None else None
        series.append(Series(split.key, data, split.rows, observed[split.key], start))
    if not series:
        raise TrainingError("no series has a fully observed validation and test origin")
    order = None
    if time_column and not pd.api.types.is_numeric_dtype(frame[time_column]):
        from models.times import date_order

        order = date_order([str(v) for v in frame[time_column]])
    return MultiSeriesData(series_id, tuple(features), (target,), horizon, series, norm, filled, dropped, period, order)


def _shared_period(splits: list[SeriesSplit], seconds: np.ndarray | None) -> float | None:
    """The sampling period when every series is regularly spaced with the same period (calendar
    units snapped as in training/seasons.py: monthly series have months of 28-31 days)."""
    if seconds is None:
        return None
    from training.seasons import regular_period

    periods = set()
    for split in splits:
        period = regular_period(seconds[split.rows])
        if period is None:
            return None
        periods.add(round(period, 0))
    return periods.pop() if len(periods) == 1 else None

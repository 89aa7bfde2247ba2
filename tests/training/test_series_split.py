"""Per-series splits of a long-format table (training/series.py): series of different lengths
and start times, rows shuffled in the file, a few empty cells. Every test row of a series is
later than all of its training and validation rows, and no series' rows appear in another's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import TrainingError, load_table
from training.series import prepare_multiseries, split_series


def long_table(seed: int = 0, series: int = 6) -> pd.DataFrame:
    """Yearly series: different starts (1950 + 3i), lengths (30 + 7i), levels and trends;
    rows shuffled; series 'S1' has two empty years inside and one at the end."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(series):
        n = 30 + 7 * i
        years = 1950 + 3 * i + np.arange(n)
        level = (1 + i) * 10.0 * np.exp(np.linspace(0, -0.5 + 0.2 * i, n))
        value = level + rng.normal(0, 0.05 * (1 + i), n)
        frames.append(pd.DataFrame({"id": f"S{i}", "year": years, "value": value}))
    frame = pd.concat(frames, ignore_index=True)
    s1 = frame.index[frame["id"] == "S1"]
    frame.loc[s1[[10, 11, -1]], "value"] = np.nan
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_every_test_row_is_later_than_the_series_train_and_validation_rows() -> None:
    frame = long_table()
    splits, dropped = split_series(frame, "id", "value", time_column="year", horizon=3, report=lambda _: None)
    assert not dropped and len(splits) == 6
    years = frame["year"].to_numpy()
    ids = frame["id"].to_numpy()
    for split in splits:
        assert {str(v) for v in ids[split.rows]} == {split.key}  # its own rows only
        assert np.all(np.diff(years[split.rows]) > 0)  # in time order although the file is shuffled
        assert years[split.test].min() > max(years[split.train].max(), years[split.val].max())
        assert years[split.val].min() > years[split.train].max()
        assert len(split.val) >= 3 and len(split.test) >= 3
    seen = np.concatenate([s.rows for s in splits])
    assert len(seen) == len(np.unique(seen))  # no row in two series
    # Different lengths give different block sizes: the split is per series, not global.
    assert len({len(s.test) for s in splits}) > 1
    # S1's last year is empty: the series ends at its last observed value.
    s1 = next(s for s in splits if s.key == "S1")
    assert len(s1.rows) == 36


def test_pairs_never_take_targets_from_a_later_block_or_an_interpolated_value() -> None:
    frame = long_table()
    data = prepare_multiseries(frame, "id", "value", time_column="year", horizon=3, report=lambda _: None)
    assert data.filled == 2 and [s.key for s in data.series] == [f"S{i}" for i in range(6)]
    years = frame["year"].to_numpy()
    for s in data.series:
        d = s.data
        assert np.all(d.train + 3 < d.train_rows)
        assert np.all(d.val + 1 >= d.train_rows) and np.all(d.test > d.val.max())
        val_end = int(d.val.max()) + 3 + 1
        assert np.all(d.test + 1 >= val_end)
        # the targets really are the series' next values, in time order
        target_years = years[s.rows][d.test[:, None] + np.arange(1, 4)]
        assert np.all(np.diff(target_years, axis=1) == 1)
        for t in np.concatenate([d.val, d.test]):
            assert s.observed[t : t + 4].all()
    assert data.shard(0, 2).series[1].key == "S2" and data.shard(1, 2).series[0].key == "S1"
    assert sum(len(data.shard(r, 3).series) for r in range(3)) == 6


def test_too_short_series_are_left_out_and_reported(tmp_path: Path) -> None:
    frame = long_table()
    short = pd.DataFrame({"id": "tiny", "year": np.arange(2000, 2010), "value": np.arange(10.0)})
    frame = pd.concat([frame, short], ignore_index=True)
    messages: list[str] = []
    data = prepare_multiseries(frame, "id", "value", time_column="year", horizon=2, report=messages.append)
    assert "tiny" in data.dropped and "tiny" not in [s.key for s in data.series]
    assert any("tiny" in m for m in messages)


def test_parquet_and_csv_give_the_same_split(tmp_path: Path) -> None:
    frame = long_table()
    frame.to_csv(tmp_path / "long.csv", index=False)
    frame.to_parquet(tmp_path / "long.parquet", index=False)
    a = prepare_multiseries(load_table(tmp_path / "long.csv"), "id", "value", time_column="year", report=print)
    b = prepare_multiseries(load_table(tmp_path / "long.parquet"), "id", "value", time_column="year", report=print)
    for sa, sb in zip(a.series, b.series, strict=True):
        assert sa.key == sb.key and np.array_equal(sa.rows, sb.rows)
        assert np.allclose(sa.data.features, sb.data.features)


def test_bad_long_tables_are_refused() -> None:
    frame = long_table()
    with pytest.raises(TrainingError, match="series-id"):
        prepare_multiseries(frame, "nope", "value", report=print)
    dup = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    with pytest.raises(TrainingError, match="same 'year'"):
        prepare_multiseries(dup, "id", "value", time_column="year", report=print)
    holes = frame.copy()
    holes.loc[holes["id"] == "S2", "value"] = holes.loc[holes["id"] == "S2", "value"].where(
        holes.loc[holes["id"] == "S2", "year"] % 2 == 0
    )
    with pytest.raises(TrainingError, match="missing"):
        prepare_multiseries(holes, "id", "value", time_column="year", report=print)


def test_the_order_of_slash_dates_is_recorded_for_many_series_too() -> None:
    """A long file with month-first dates: its order is kept (MultiSeriesData.day_first, the
    manifest's time.day_first), so the service reads a start_time written like it in that order."""
    days = pd.date_range("2012-01-01", periods=60, freq="D")
    rng = np.random.default_rng(0)
    frame = pd.concat(
        pd.DataFrame({"id": key, "day": days.strftime("%m/%d/%Y"), "value": rng.normal(size=60).cumsum()})
        for key in ("a", "b")
    )
    data = prepare_multiseries(frame, "id", "value", time_column="day", report=lambda _: None)
    assert data.day_first is False
    iso = frame.assign(day=days.strftime("%Y-%m-%d").tolist() * 2)
    assert prepare_multiseries(iso, "id", "value", time_column="day", report=lambda _: None).day_first is None

"""`client.forecast` fills a frame's missing times against the model's period, as training
fills a file's (seqserve/aio.py `fill_to_period`, models/times.py `grid_positions`); the
service-side labels are checked end to end in tests/e2e/test_forecast_times.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.times import BUSINESS_DAY, MONTH, parse_time
from seqserve.aio import fill_to_period, model_period


def _seconds(stamps: list[str]) -> np.ndarray:
    return np.asarray([parse_time(s) for s in stamps])


def test_missing_months_are_interpolated_with_a_warning_naming_how_many() -> None:
    months = pd.period_range("1990-01", periods=24, freq="M").strftime("%Y-%m").tolist()
    values = pd.DataFrame({"y": np.arange(24, dtype=np.float32) * 2.0})
    kept = [i for i in range(24) if i not in (3, 9)]
    with pytest.warns(UserWarning, match=r"misses 2 time\(s\) of model 'm''s monthly period, first 1990-04-01"):
        given = values.iloc[kept].reset_index(drop=True)
        filled, times = fill_to_period(given, _seconds([months[i] for i in kept]), MONTH, "m")
    assert times == ["1990-04-01T00:00:00Z", "1990-10-01T00:00:00Z"]
    pd.testing.assert_frame_equal(filled, values)  # a straight line: interpolation restores it


def test_trading_day_holidays_fill_one_weekday_each() -> None:
    days = pd.bdate_range("2020-01-02", periods=20)
    values = pd.DataFrame({"close": np.arange(20, dtype=np.float32)})
    open_days = [i for i in range(20) if days[i] != pd.Timestamp("2020-01-20")]  # a Monday holiday
    stamps = _seconds([days[i].strftime("%Y-%m-%d") for i in open_days])
    with pytest.warns(UserWarning, match="misses 1 time.*business-daily period, first 2020-01-20"):
        filled, times = fill_to_period(values.iloc[open_days].reset_index(drop=True), stamps, BUSINESS_DAY, "msft")
    assert times == ["2020-01-20T00:00:00Z"]
    pd.testing.assert_frame_equal(filled, values)


def test_a_complete_frame_is_sent_as_given() -> None:
    values = pd.DataFrame({"y": [1.0, 2.0, 3.0]}, dtype=np.float32)
    same, times = fill_to_period(values, _seconds(["1990-01", "1990-02", "1990-03"]), MONTH, "m")
    assert same is values and times == []


def test_times_off_the_models_period_are_refused_naming_the_row() -> None:
    values = pd.DataFrame({"y": [1.0, 2.0, 3.0]}, dtype=np.float32)
    daily = _seconds(["1990-01-01", "1990-01-02", "1990-01-03"])
    with pytest.raises(ValueError, match=r"do not fit model 'm''s monthly period: row 2 \(1990-01-02"):
        fill_to_period(values, daily, MONTH, "m")
    sparse = _seconds(["1990-01", "1990-06", "1990-12"])
    with pytest.raises(ValueError, match="misses 9 of the 12 times"):
        fill_to_period(values, sparse, MONTH, "m")


def test_the_period_comes_from_the_model_description_or_its_clock() -> None:
    assert model_period({"period_seconds": MONTH}) == MONTH
    assert model_period({"period_seconds": None, "clock": {"period_seconds": 3600.0}}) == 3600.0
    assert model_period({"clock": None}) is None

"""Time and seasons from the data (training/seasons.py), and default-flag training through them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import times
from training import cli
from training.data import TrainingError
from training.presets import DATASETS
from training.seasons import MONTH, QUARTER, LongFormat, candidate_seasons, choose_seasons, parse_times, read_time

from .conftest import settings_from

RNG = np.random.default_rng(7)


def quiet(_: str) -> None:
    return None


def monthly(n: int, seed: int = 0) -> pd.DataFrame:
    """Trend + yearly cycle + noise, `month` as 'YYYY-MM'."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 100 + 0.8 * t + 12 * np.sin(2 * np.pi * t / 12) + 6 * np.cos(2 * np.pi * t / 6) + rng.normal(0, 1.5, n)
    months = pd.period_range("1990-01", periods=n, freq="M").strftime("%Y-%m")
    return pd.DataFrame({"month": months, "sales": np.round(y, 3)})


def hourly(n: int) -> pd.DataFrame:
    t = np.arange(n)
    y = 50 + 10 * np.sin(2 * np.pi * t / 24) + 8 * ((t % 168) >= 120) + RNG.normal(0, 1, n)
    stamps = pd.date_range("2021-03-01", periods=n, freq="h").strftime("%Y/%m/%d %H:%M")
    return pd.DataFrame({"when": stamps, "load": y})


def seasons_of(frame: pd.DataFrame, target: str, column: str = "") -> tuple[list[int], str]:
    frame, info = read_time(frame, column, skip={target}, report=quiet)
    y = frame[target].to_numpy(float)
    choice = choose_seasons(y[: int(0.7 * len(y))], info)
    return choice.seasons, choice.source


# ----------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("values", "expected_first", "spacing"),
    [
        (["1949-01", "1949-02", "1949-03"], "1949-01-01T00:00:00", MONTH),
        (["1949-01-01", "1949-02-01", "1949-03-01"], "1949-01-01T00:00:00", MONTH),
        (["2010/01/01 00:00", "2010/01/01 01:00", "2010/01/01 02:00"], "2010-01-01T00:00:00", 3600),
        (["1990Q1", "1990Q2", "1990Q3"], "1990-01-01T00:00:00", QUARTER),
        (["1990-Q1", "1990-Q2", "1990-Q3"], "1990-01-01T00:00:00", QUARTER),
        ([1262304000, 1262307600, 1262311200], "2010-01-01T00:00:00", 3600),
        (["2010-01-01T01:00+01:00", "2010-01-01T02:00+01:00", "2010-01-01T03:00+01:00"], "2010-01-01T00:00:00", 3600),
        ([1949, 1950, 1951], "1949-01-01T00:00:00", 12 * MONTH),
        (["31/01/1949", "28/02/1949", "31/03/1949"], "1949-01-31T00:00:00", MONTH),
        (["01/01/1949", "01/02/1949", "01/03/1949"], "1949-01-01T00:00:00", MONTH),  # day first
        (["Jan 1949", "Feb 1949", "Mar 1949"], "1949-01-01T00:00:00", MONTH),
    ],
)
def test_time_formats_parse_to_utc_seconds(values: list, expected_first: str, spacing: float) -> None:
    seconds = parse_times(pd.Series(values))
    assert seconds is not None
    assert seconds[0] == pd.Timestamp(expected_first, tz="UTC").timestamp()
    _, info = read_time(pd.DataFrame({"t": values, "y": [1.0, 2.0, 3.0]}), "t", report=quiet)
    assert info is not None and info.period_seconds == pytest.approx(spacing)


def test_training_reads_a_time_column_with_the_service_parser() -> None:
    """One parser (models/times.py): every value of a column that trains is a start_time the
    service takes, to the same instant."""
    from models.times import parse_time

    for values in (["31/01/1949", "28/02/1949"], ["1990Q1", "1990Q2"], ["2010/01/01 00:00", "2010/01/01 01:00"]):
        seconds = parse_times(pd.Series(values))
        assert seconds is not None and seconds.tolist() == [parse_time(v) for v in values]


def test_values_that_are_not_times_are_not_a_time_column() -> None:
    frame = pd.DataFrame({"step": [1, 2, 3, 4], "sales": [1500.0, 1700.0, 1600.0, 1800.0], "code": list("abcd")})
    assert parse_times(frame["step"]) is None
    _, info = read_time(frame, "", skip={"sales"}, report=quiet)
    assert info is None
    with pytest.raises(TrainingError, match=r"time column 'code' does not hold timestamps \(data row 1: 'a'\)"):
        read_time(frame, "code", report=quiet)


def test_newest_first_is_sorted_with_a_warning() -> None:
    frame = monthly(30).iloc[::-1].reset_index(drop=True)
    said: list[str] = []
    ordered, info = read_time(frame, "", skip={"sales"}, report=said.append)
    assert info is not None and info.sorted_rows and info.frequency == "monthly"
    assert ordered["month"].iloc[0] == "1990-01"
    assert any("not in time order (newest first): sorted by 'month'" in m for m in said)


def test_duplicated_timestamps_are_refused_naming_the_rows() -> None:
    frame = monthly(20)
    frame.loc[7, "month"] = frame.loc[3, "month"]
    with pytest.raises(TrainingError, match=r"duplicated timestamps: data rows 4 and 8 \(1990-04-01"):
        read_time(frame, "", skip={"sales"}, report=quiet)


# ----------------------------------------------------------------------------------- seasons


def test_monthly_series_finds_12() -> None:
    assert seasons_of(monthly(120), "sales") == ([12], "calendar")


def test_hourly_series_finds_24_and_168() -> None:
    assert seasons_of(hourly(24 * 7 * 8), "load") == ([24, 168], "calendar")


def test_white_noise_and_random_walk_find_none() -> None:
    for y in (RNG.normal(size=400), RNG.normal(size=400).cumsum()):
        stamps = pd.date_range("2000-01-01", periods=400, freq="D").strftime("%Y-%m-%d")
        assert seasons_of(pd.DataFrame({"date": stamps, "y": y}), "y")[0] == []
        assert seasons_of(pd.DataFrame({"y": y}), "y")[0] == []


def test_without_a_time_column_the_season_comes_from_the_values() -> None:
    assert seasons_of(monthly(120).drop(columns="month"), "sales") == ([12], "values")


def daily_years(years: float, yearly: float, seed: int) -> pd.DataFrame:
    """Daily readings like a day's maximum temperature: a yearly cycle of amplitude `yearly`
    (0: none) under day-to-day AR(1) weather, no weekly effect."""
    rng = np.random.default_rng(seed)
    n = int(365.25 * years)
    weather = np.zeros(n)
    for t in range(1, n):
        weather[t] = 0.7 * weather[t - 1] + rng.normal(0, 2.5)
    y = 15 + yearly * np.sin(2 * np.pi * np.arange(n) / 365.25) + weather
    return pd.DataFrame({"date": pd.date_range("2012-01-01", periods=n, freq="D").strftime("%Y-%m-%d"), "y": y})


def test_daily_series_over_years_finds_the_yearly_season_on_monthly_means() -> None:
    """The day-to-day differences do not show a yearly cycle under the weather (acf ~0 at lag
    365); its month-to-month changes do. Weather without a cycle, or a random walk, finds none."""
    frame, info = read_time(daily_years(4.3, 8.0, 1), "", skip={"y"}, report=quiet)
    y = frame["y"].to_numpy(float)
    choice = choose_seasons(y[: int(0.7 * len(y))], info)
    assert choice.seasons == [365] and choice.source == "calendar", choice.describe()
    evidence = choice.evidence["365"]
    assert evidence["verdict"] == "kept" and evidence["p"] < 0.005 and "twelfths" in evidence["on"]
    assert "365: F" in choice.describe()
    for seed in (2, 3):
        frame, info = read_time(daily_years(4.3, 0.0, seed), "", skip={"y"}, report=quiet)
        y = frame["y"].to_numpy(float)
        assert choose_seasons(y[: int(0.7 * len(y))], info).seasons == []
        walk = np.cumsum(np.random.default_rng(seed).normal(size=len(y)))
        assert choose_seasons(walk[: int(0.7 * len(y))], info).seasons == []


def test_a_cycle_from_the_values_alone_is_found_by_its_periodogram_peak() -> None:
    """80 values without dates with a cycle of 9.6 steps (a population cycle in yearly counts):
    the difference autocorrelations at the shorter lags are large too, so no lag clears
    Bartlett's bound; the periodogram's peak against its neighbours does. Noise, a random walk
    and an AR(1) find none."""
    rng = np.random.default_rng(0)
    t = np.arange(80)
    choice = choose_seasons(5 + 2 * np.sin(2 * np.pi * t / 9.6) + rng.normal(0, 1, 80), None)
    assert choice.seasons == [10] and choice.source == "values", choice.describe()
    evidence = choice.evidence["10 (periodogram)"]
    assert evidence["verdict"] == "kept" and evidence["p"] < 0.01 and 9 < evidence["period"] < 10.5
    assert "peak at period" in choice.describe()
    ar = np.zeros(80)
    for k in range(1, 80):
        ar[k] = 0.6 * ar[k - 1] + rng.normal()
    for y in (rng.normal(size=80), rng.normal(size=80).cumsum(), ar, 0.1 * t + rng.normal(size=80)):
        assert choose_seasons(y, None).seasons == []


def test_off_and_given_are_taken_as_said() -> None:
    y = monthly(120)["sales"].to_numpy()
    assert choose_seasons(y, None, setting="off").seasons == []
    assert choose_seasons(y, None, setting="given", given=[7]).seasons == [7]


@pytest.mark.parametrize(
    ("path", "target", "expected"),
    [
        ("electricity_halfhourly/electricity_halfhourly.csv", "demand_mw", [48, 336]),
        ("co2_weekly/co2_weekly.csv", "co2_ppm", [52]),
        ("sunspots_yearly/sunspots_yearly.csv", "sunactivity", [11]),
        ("us_macro_quarterly/us_macro_quarterly.csv", "realgdp", []),  # seasonally adjusted
    ],
)
def test_bundled_series(path: str, target: str, expected: list[int]) -> None:
    assert seasons_of(pd.read_csv(DATASETS / path), target)[0] == expected


def test_season_flag_values() -> None:
    assert settings_from(["--data", "x.csv", "--target", "y"]).season_auto
    off = settings_from(["--data", "x.csv", "--target", "y", "--season", "0"])
    assert (off.season, off.season_auto) == ([], False)
    given = settings_from(["--data", "x.csv", "--target", "y", "--season", "12,4"])
    assert (given.season, given.season_auto) == ([4, 12], False)
    assert settings_from(["--data", "x.csv", "--target", "y", "--season", "auto"]).season_auto
    assert "hidden" in given.defaulted and "target" not in given.defaulted


# ------------------------------------------------------------------------- default-flag runs


def train(tmp_path: Path, frame: pd.DataFrame, name: str, *extra: str) -> tuple[int, dict]:
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    repo = tmp_path / "repo"
    argv = ["--data", str(path), "--target", "sales", "--repository", str(repo), "--quiet", *extra]
    parser = __import__("argparse").ArgumentParser()
    cli.add_arguments(parser)
    code = cli.train(parser.parse_args(argv))
    manifests = sorted((repo / name).glob("*/manifest.json"))
    return code, json.loads(manifests[-1].read_text()) if manifests else {}


def test_36_row_monthly_series_trains_with_default_flags_and_beats_naive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, manifest = train(tmp_path, monthly(36), "short")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "seasons: [12] found from the sampling period (12: acf" in out
    assert manifest["seasons"]["seasons"] == [12] and manifest["seasons"]["setting"] == "auto"
    assert manifest["seasons"]["evidence"]["12"]["verdict"] == "kept"
    assert manifest["time"]["column"] == "month" and manifest["time"]["frequency"] == "monthly"
    metrics = manifest["metrics"]
    assert metrics["streaming"]["mae"] < metrics["naive"]["mae"]
    assert "seasonal_naive_12" in metrics and "autoets" in metrics  # baselines use the season found
    assert manifest["config"]["clock"]["period_seconds"] == MONTH


@pytest.mark.slow
def test_newest_first_file_gives_the_same_model_as_the_sorted_one(tmp_path: Path) -> None:
    frame = monthly(60, seed=3)
    args = ("--epochs", "4", "--baselines", "naive")
    _, ordered = train(tmp_path, frame, "ordered", *args)
    _, reverse = train(tmp_path, frame.iloc[::-1], "reverse", *args)
    assert reverse["time"]["sorted_rows"] and not ordered["time"]["sorted_rows"]
    assert ordered["metrics"]["streaming"] == reverse["metrics"]["streaming"]
    assert ordered["config"] == {**reverse["config"]}
    assert ordered["training"]["val_loss"] == reverse["training"]["val_loss"]


def test_duplicated_timestamps_refuse_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = monthly(40)
    frame.loc[20, "month"] = frame.loc[10, "month"]
    code, manifest = train(tmp_path, frame, "dup")
    assert code == 2 and not manifest
    assert "duplicated timestamps: data rows 11 and 21 (1990-11-01" in capsys.readouterr().err


def test_a_long_file_without_series_id_is_told_to_use_it() -> None:
    frame = pd.DataFrame({"shop": ["a", "b"] * 6, "month": np.repeat(monthly(6)["month"].to_numpy(), 2)})
    frame["sales"] = np.arange(12.0)
    with pytest.raises(LongFormat, match=r"data rows 1 and 2 .*add --series-id shop") as caught:
        read_time(frame, "", skip={"sales"}, report=quiet)
    assert (caught.value.series_id, caught.value.time_column) == ("shop", "month")


def test_bundled_many_series_file_finds_no_season() -> None:
    """world_fertility: 194 yearly series; no calendar season, and no lag confirmed on half of them."""
    from training.seasons import choose_for_many
    from training.series import prepare_multiseries

    frame = pd.read_csv(DATASETS / "world_fertility" / "world_fertility.csv")
    data = prepare_multiseries(frame, "country_code", "fertility", time_column="year", report=quiet)
    choice = choose_for_many([s.data.targets[: s.data.train_rows, 0] for s in data.series], data.period_seconds)
    assert choice.seasons == [] and choice.setting == "auto"
    assert data.period_seconds == pytest.approx(12 * MONTH)


@pytest.mark.slow
def test_long_file_without_series_id_trains_one_global_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = [monthly(48, seed=i).assign(shop=f"s{i}") for i in range(3)]
    code, manifest = train(tmp_path, pd.concat(parts, ignore_index=True), "shops", "--epochs", "2")
    out = capsys.readouterr().out
    assert code in (0, 3), out
    assert "several series in the long format (one row per 'shop' and 'month')" in out
    assert manifest["training_args"]["series_id"] == "shop"
    assert sorted(manifest["metrics"]["per_series"]) == ["s0", "s1", "s2"]
    assert manifest["time"]["frequency"] == "monthly" and manifest["seasons"]["setting"] == "auto"
    assert manifest["time"]["day_first"] is None  # ISO months: no day/month order to keep


def test_a_few_missing_months_are_filled_and_the_model_keeps_its_clock() -> None:
    """Three months dropped from a 144-month file: reindexed onto the monthly grid (said, with
    the first time filled), the missing values interpolated, so the series stays regular and
    gets a phase. A third of the times missing is not invented: irregular, as before."""
    n = 144
    full = pd.DataFrame(
        {
            "month": pd.period_range("1949-01", periods=n, freq="M").strftime("%Y-%m"),
            "pax": np.arange(n, dtype=float) * 2.0,
        }
    )
    said: list[str] = []
    frame, info = read_time(full.drop([10, 50, 51]).reset_index(drop=True), "", skip={"pax"}, report=said.append)
    assert info is not None and info.frequency == "monthly" and info.period_seconds == MONTH
    assert len(frame) == n and frame["pax"].tolist() == full["pax"].tolist()
    assert info.seconds[10] == pd.Timestamp("1949-11-01", tz="UTC").timestamp()
    assert said == [
        "time column 'month' (monthly) misses 3 time(s), first 1949-11-01T00:00:00Z: "
        "filled by linear interpolation between their neighbours"
    ]
    sparse = full.iloc[[i for i in range(n) if i % 3]].reset_index(drop=True)
    frame, info = read_time(sparse, "", skip={"pax"}, report=quiet)
    assert info is not None and info.period_seconds is None and len(frame) == len(sparse)


def test_the_order_of_slash_dates_is_recorded_for_the_service() -> None:
    """A month-first file (01/31/2012) is read silently; its order goes into the manifest's
    `time.day_first`, so the service reads a start_time written like the file in that order."""
    days = pd.date_range("2012-01-01", periods=60, freq="D")
    us = pd.DataFrame({"day": days.strftime("%m/%d/%Y"), "temp": np.arange(60.0)})
    _, info = read_time(us, "", skip={"temp"}, report=quiet)
    assert info is not None and info.day_first is False and info.to_dict()["day_first"] is False
    _, info = read_time(us.assign(day=days.strftime("%d/%m/%Y")), "", skip={"temp"}, report=quiet)
    assert info is not None and info.day_first is True
    _, info = read_time(us.assign(day=days.strftime("%Y-%m-%d")), "", skip={"temp"}, report=quiet)
    assert info is not None and info.day_first is None


def test_trading_days_are_business_daily_with_holidays_filled() -> None:
    """Weekday-only readings are business-daily, not "daily with gaps": a complete run of
    weekdays is regular at once; two weekday holidays are filled like missing months, so the
    series keeps its business-day grid (weekends are not invented)."""
    days = pd.bdate_range("2020-01-01", periods=300)
    whole = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "close": np.arange(300.0)})
    _, info = read_time(whole, "", skip={"close"}, report=quiet)
    assert info is not None and info.frequency == "business-daily" and info.period_seconds == times.BUSINESS_DAY
    said: list[str] = []
    frame = whole.drop([10, 100]).reset_index(drop=True)
    filled, info = read_time(frame, "", skip={"close"}, report=said.append)
    assert info is not None and info.frequency == "business-daily" and info.period_seconds == times.BUSINESS_DAY
    assert len(filled) == 300 and filled["close"].tolist() == whole["close"].tolist()
    assert filled["date"][10] == "2020-01-15T00:00:00Z"  # the holiday, written back on the grid
    assert said == [
        "time column 'date' (business-daily) misses 2 time(s), first 2020-01-15T00:00:00Z: "
        "filled by linear interpolation between their neighbours"
    ]
    assert candidate_seasons(info) == (5, 261)


def test_trading_days_with_a_weekday_effect_find_the_five_day_week() -> None:
    rng = np.random.default_rng(4)
    days = pd.bdate_range("2021-01-04", periods=400)
    effect = np.array([3.0, 1.0, 0.0, -1.0, -3.0])[days.dayofweek]
    close = 100 + np.cumsum(rng.normal(0, 0.5, 400)) + effect + rng.normal(0, 0.3, 400)
    frame = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "close": close})
    _, info = read_time(frame, "", skip={"close"}, report=quiet)
    choice = choose_seasons(close[:280], info)
    assert 5 in choice.seasons and choice.source == "calendar", choice


def test_business_day_file_trains_with_a_weekly_phase_and_labels_forecasts_on_trading_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trading days with a weekday effect and two holidays, only --data and --target (and a
    small step budget): business-daily, the five-day week found, a clock whose phase is the
    weekday of each row, and forecasts labelled with the next trading days (Friday -> Monday)."""
    from models.config import ModelConfig
    from seqserve.cli import main

    rng = np.random.default_rng(5)
    days = pd.bdate_range("2021-01-04", periods=402).delete([30, 200])  # two holidays
    effect = np.array([3.0, 1.0, 0.0, -1.0, -3.0])[days.dayofweek]
    close = 100 + np.cumsum(rng.normal(0, 0.5, len(days))) + effect + rng.normal(0, 0.3, len(days))
    path = tmp_path / "close.csv"
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "close": close}).to_csv(path, index=False)
    repo = tmp_path / "repo"
    argv = ["train", "--data", str(path), "--target", "close", "--epochs", "2", "--baselines", "naive"]
    code = main([*argv, "--repository", str(repo), "--quiet"])
    assert code in (0, 3), capsys.readouterr().out
    manifest = json.loads((repo / "close" / "1" / "manifest.json").read_text())
    assert manifest["time"]["frequency"] == "business-daily"
    # both holidays are in the training block: every validation and test origin is scored
    split = manifest["data"]["split"]
    assert split["test_pairs_filled_not_scored"] == manifest["metrics"]["test_excluded_filled"] == 0
    assert split["val_pairs_filled_not_scored"] == 0 and split["test_pairs"] == manifest["metrics"]["test_pairs"]
    assert 5 in manifest["seasons"]["seasons"]
    config = ModelConfig.from_dict(manifest["config"])
    clock = config.clock
    assert clock is not None and clock.period_seconds == times.BUSINESS_DAY and clock.cycle % 5 == 0
    first = pd.Timestamp(days[0], tz="UTC").timestamp()
    for day in (days[0], days[1], days[4], days[5], days[250]):  # rows after the holidays keep the weekday
        row = int(np.busday_count(days[0].date(), day.date()))
        phase = clock.phase(pd.Timestamp(day, tz="UTC").timestamp())
        assert phase == row % clock.cycle and phase % 5 == day.dayofweek
    friday = next(d for d in days if d.dayofweek == 4)
    labels = times.forecast_times(pd.Timestamp(friday, tz="UTC").timestamp(), 1, 1, clock.period_seconds)
    assert labels == [[(friday + pd.Timedelta(days=3)).strftime("%Y-%m-%dT00:00:00Z")]]
    assert first == clock.epoch + clock.period_seconds / 2

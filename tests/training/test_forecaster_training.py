"""The history-state forecaster trained from the CLI with default flags (only --data, --target,
--season, plus a small step budget): it beats naive and every seasonal naive at one step on a
seasonal series (electricity: the session's shared training of it, tests/training/conftest.py,
small network, --transform auto) and a trending one (co2), served from the exported file with
and without a start_time; deeper models with dropout export and pass parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from models.chunks import run_in_time_chunks
from models.config import ModelConfig
from models.export import input_names, output_names
from models.forecast_spec import LAYOUT
from models.forecaster import history_parts
from training.pipeline import Outcome

from .conftest import CO2, ELECTRICITY, SUNSPOTS, settings_from


def _train(tmp_path: Path, data: Path, target: str, season: str, *extra: str) -> tuple[Path, dict]:
    from training.pipeline import train_and_publish

    argv = ["--data", str(data), "--target", target, "--season", season, "--epochs", "4", "--quiet", *extra]
    argv += ["--baselines", "naive"]  # statsforecast baselines: test_quality.py
    settings = settings_from([*argv, "--repository", str(tmp_path), "--name", "m"])
    train_and_publish(settings)
    entry = tmp_path / "m" / "1"
    return entry, json.loads((entry / "manifest.json").read_text())


def _beats_baselines(metrics: dict) -> None:
    model = metrics["streaming"]["mae"]
    baselines = {k: v["mae"] for k, v in metrics.items() if k == "naive" or k.startswith("seasonal_naive")}
    assert len(baselines) >= 2, baselines
    assert all(model < value for value in baselines.values()), (model, baselines)


@pytest.fixture(scope="module")
def electricity(forecast_run: tuple[Path, list[Outcome]]) -> tuple[Path, dict]:
    """The LSTM of the session's electricity training (tests/training/conftest.py: seasons 48
    and 336, the time column, --transform auto), not a second training of the same series."""
    repo, _ = forecast_run
    entry = repo / "elec-lstm" / "1"
    return entry, json.loads((entry / "manifest.json").read_text())


@pytest.mark.slow
def test_seasonal_series_beats_naive_and_seasonal_naive(electricity: tuple[Path, dict]) -> None:
    _, manifest = electricity
    metrics = manifest["metrics"]
    _beats_baselines(metrics)
    assert metrics["streaming"]["mae"] < 0.5 * metrics["seasonal_naive_336"]["mae"]
    choice = metrics["transform"]
    scores = choice["baseline_validation_mae"]
    assert choice["chosen"] == min(scores, key=scores.__getitem__) == "holt_winters_mult", scores  # best on validation
    assert scores["holt_winters_mult"] < 0.9 * scores["seasonal_diff"], scores


@pytest.mark.slow
def test_time_column_is_detected_and_sets_the_phase(electricity: tuple[Path, dict]) -> None:
    _, manifest = electricity
    config = ModelConfig.from_dict(manifest["config"])
    assert config.clock is not None and config.clock.period_seconds == 1800.0 and config.clock.cycle == 336
    stamps = pd.to_datetime(pd.read_csv(ELECTRICITY)["timestamp"], utc=True)
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    for row in (0, 1, 47, 48, 335, 336, 1000):
        assert config.clock.phase(seconds[row]) == row % 336
    # one packed history (count, "pending": the next reading's forecast interval with the
    # default quantile levels' anomaly flags, "run": the far readings in a row the robust update
    # has replaced (layout 3), the ring), then the phase the clock sets, then the Holt-Winters
    # formula's level and seasonal components (the baseline chosen)
    assert config.state_names == ("h", "c", "history", "phase", "smoothed")
    assert [s["name"] for s in manifest["config"]["extra_states"]] == ["history", "phase", "smoothed"]
    assert manifest["config"]["extra"]["forecaster"]["layout"] == LAYOUT
    parts = ["count", "pending", "run", "ring", "phase", "smoothed"]
    assert list(history_parts(config, config.initial_state(1))) == parts


@pytest.mark.slow
def test_served_file_streams_with_and_without_start_time(electricity: tuple[Path, dict]) -> None:
    """From a fresh session at row 0, as a client would: the whole series through ONNX Runtime
    in the chunks the service feeds it (models/chunks.py: a robust forecaster's fixed point is
    bounded by its chunk), with start_time (phase known) and without (phase unknown): both beat
    the baselines."""
    entry, manifest = electricity
    config = ModelConfig.from_dict(manifest["config"])
    demand = pd.read_csv(ELECTRICITY)["demand_mw"].to_numpy(np.float64)
    first = pd.Timestamp(pd.read_csv(ELECTRICITY)["timestamp"][0], tz="UTC").timestamp()
    session = ort.InferenceSession(str(entry / "model.onnx"), providers=["CPUExecutionProvider"])
    x = demand[None, :, None].astype(np.float32)
    test = np.arange(3426, 4031)
    actual = demand[test + 1]
    errors = {}
    for label, start in (("known", first), ("unknown", None)):

        def call(inputs: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
            feeds = dict(zip(input_names(config), [inputs, *state], strict=True))
            out, *new_state = session.run(output_names(config), feeds)
            return out, tuple(new_state)

        y = run_in_time_chunks(call, x, config.initial_state(1, start), 0, config.max_chunk_steps)[0][0, :, 0]
        errors[label] = float(np.abs(y[test] - actual).mean())
    assert errors["known"] == pytest.approx(manifest["metrics"]["streaming"]["mae"], rel=1e-3)
    seasonal = float(np.abs(demand[test + 1 - 336] - actual).mean())
    naive = float(np.abs(demand[test] - actual).mean())
    assert errors["unknown"] < 0.5 * min(seasonal, naive), errors


def test_trending_series_beats_naive_and_seasonal_naive(tmp_path: Path) -> None:
    _, manifest = _train(tmp_path, CO2, "co2_ppm", "52")
    _beats_baselines(manifest["metrics"])
    assert manifest["metrics"]["streaming"]["mase"] < 1.0


def test_two_layers_with_dropout_export_and_pass_parity(tmp_path: Path) -> None:
    entry, manifest = _train(tmp_path, SUNSPOTS, "sunactivity", "11", "--layers", "2", "--dropout", "0.2")
    config = ModelConfig.from_dict(manifest["config"])
    assert config.num_layers == 2 and config.dropout == 0.2
    # Export passed its parity check (it raises otherwise); the NumPy reference agrees too.
    from models.reference import load_reference, tolerance

    spots = pd.read_csv(SUNSPOTS)["sunactivity"].to_numpy(np.float32)[None, :, None]
    session = ort.InferenceSession(str(entry / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = dict(zip(input_names(config), [spots, *config.initial_state(1)], strict=True))
    y = session.run(output_names(config), feeds)[0]
    y_ref, _ = load_reference(entry / "model.onnx").run(spots)
    assert np.abs(y - y_ref).max() <= tolerance(y_ref)


def test_noisy_level_is_forecast_by_exponential_smoothing_and_promoted(tmp_path: Path) -> None:
    """A local level (a random walk observed with noise three times its steps): the last value
    chases the noise, exponential smoothing does not. With only --data and --target (and a
    small step budget) the
    smoothing formula is chosen on validation, its constant fitted near the optimal one for
    that noise ratio, and the version beats naive on test and is promoted."""
    from seqserve.cli import main

    rng = np.random.default_rng(7)
    level = 100 + np.cumsum(rng.normal(0, 1.0, 400))
    dates = pd.date_range("2000-01-01", periods=400, freq="D").strftime("%Y-%m-%d")
    path = tmp_path / "level.csv"
    pd.DataFrame({"date": dates, "level": level + rng.normal(0, 3.0, 400)}).to_csv(path, index=False)
    repo = tmp_path / "repo"
    argv = ["train", "--data", str(path), "--target", "level", "--epochs", "4"]
    assert main([*argv, "--baselines", "naive", "--repository", str(repo), "--quiet"]) == 0
    manifest = json.loads((repo / "level" / "1" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["transform"]["chosen"] == "smooth", metrics["transform"]
    spec = ModelConfig.from_dict(manifest["config"]).extra["forecaster"]
    # signal-to-noise q = 1/9: the optimal constant is (-q + sqrt(q^2 + 4q)) / 2 = 0.28
    assert 0.1 <= spec["smooth_alpha"] <= 0.5, spec["smooth_alpha"]
    assert metrics["streaming"]["mae"] < 0.92 * metrics["naive"]["mae"], (metrics["streaming"], metrics["naive"])
    assert manifest["gate"]["promoted"] is True


def _monthly(values: np.ndarray) -> pd.DataFrame:
    months = pd.period_range("1990-01", periods=len(values), freq="M").strftime("%Y-%m")
    return pd.DataFrame({"month": months, "sales": values})


def _seasonal(n: int, multiplicative: bool, seed: int = 3) -> np.ndarray:
    """A monthly series whose level grows threefold; its yearly swing grows with the level
    (multiplicative) or stays the same size (additive)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    level = 100 * np.exp(t * np.log(3.0) / n)
    swing = np.sin(2 * np.pi * t / 12) + 0.5 * np.cos(4 * np.pi * t / 12)
    if multiplicative:
        return level * (1 + 0.25 * swing) * np.exp(rng.normal(0, 0.02, n))
    return level + 25 * swing + rng.normal(0, 2.0, n)


def test_multiplicative_season_is_recognised_on_the_training_block() -> None:
    from training.transforms import multiplicative_season

    found = multiplicative_season(_seasonal(144, True), [12])
    assert found["offered"] and found["season"] == 12 and found["cycles"] == 12
    assert 0.8 <= found["slope"] <= 1.2 and found["level_ratio"] > 2
    additive = multiplicative_season(_seasonal(144, False), [12])
    assert not additive["offered"] and abs(additive["slope"]) < 0.3, additive
    assert "does not grow" in additive["reason"]
    shifted = _seasonal(144, True) - 150  # the same shape, not positive
    assert multiplicative_season(shifted, [12])["reason"] == "the series is not positive"
    assert not multiplicative_season(_seasonal(36, True), [12])["offered"]  # 3 cycles: too few to tell
    assert not multiplicative_season(_seasonal(144, True), [])["offered"]


def test_multiplicative_series_is_forecast_in_logs(tmp_path: Path) -> None:
    """With --data, --target and a formula (and a small step budget): logs are offered and chosen, the
    exported file forecasts in logs and answers in raw units, and the NumPy reference agrees.
    (With --transform auto, multiplicative Holt-Winters, whose seasons grow with the level
    by themselves, forecasts this series best on validation without logs.)"""
    from models.reference import load_reference, tolerance
    from seqserve.cli import main

    path = tmp_path / "sales.csv"
    values = _seasonal(180, True)
    _monthly(values).to_csv(path, index=False)
    repo = tmp_path / "repo"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--target",
                "sales",
                "--epochs",
                "2",
                "--transform",
                "seasonal_diff",
                "--baselines",
                "naive",
                "--repository",
                str(repo),
                "--quiet",
            ]
        )
        == 0
    )
    manifest = json.loads((repo / "sales" / "1" / "manifest.json").read_text())
    choice = manifest["metrics"]["transform"]
    assert choice["log"]["offered"] and choice["log"]["used"], choice
    assert any(key.endswith(" (log)") for key in choice["baseline_validation_mae"])
    config = ModelConfig.from_dict(manifest["config"])
    assert config.extra["forecaster"]["log"] is True
    x = values[None, :, None].astype(np.float32)
    session = ort.InferenceSession(str(repo / "sales" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = dict(zip(input_names(config), [x, *config.initial_state(1)], strict=True))
    y = session.run(output_names(config), feeds)[0]
    y_ref, state = load_reference(repo / "sales" / "1" / "model.onnx").run(x)
    assert np.abs(y - y_ref).max() <= tolerance(y_ref)
    assert np.abs(y[0, -20:-1, 0] / values[-19:] - 1).max() < 0.3  # raw units, near the next reading
    ring = config.extra["forecaster"]["ring"]
    from models.forecaster import history_parts

    np.testing.assert_allclose(history_parts(config, list(state))["ring"][0, 0], values[-ring:], rtol=1e-6)  # raw
    assert manifest["metrics"]["streaming"]["mae"] < manifest["metrics"]["naive"]["mae"]


def test_persistent_changes_are_forecast_by_a_damped_trend_and_promoted(tmp_path: Path) -> None:
    """A series whose changes persist (each quarter's change 0.7 of the last one's plus noise,
    like unemployment): the last value and simple smoothing both lag behind, the damped trend
    does not. It is chosen on validation, beats naive on test and is promoted."""
    from seqserve.cli import main

    rng = np.random.default_rng(11)
    change = np.zeros(300)
    for t in range(1, 300):
        change[t] = 0.7 * change[t - 1] + rng.normal(0, 1.0)
    quarters = pd.period_range("1950Q1", periods=300, freq="Q").strftime("%YQ%q")
    path = tmp_path / "rate.csv"
    pd.DataFrame({"quarter": quarters, "rate": 50 + np.cumsum(change)}).to_csv(path, index=False)
    repo = tmp_path / "repo"
    argv = ["train", "--data", str(path), "--target", "rate", "--season", "0", "--epochs", "4"]
    assert main([*argv, "--baselines", "naive", "--repository", str(repo), "--quiet"]) == 0
    manifest = json.loads((repo / "rate" / "1" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["transform"]["chosen"] == "trend", metrics["transform"]
    scores = metrics["transform"]["baseline_validation_mae"]
    assert scores["trend"] < 0.9 * min(scores["diff"], scores["smooth"]), scores
    assert metrics["streaming"]["mae"] < 0.9 * metrics["naive"]["mae"], (metrics["streaming"], metrics["naive"])
    assert manifest["gate"]["promoted"] is True


def test_multiplicative_double_season_is_forecast_by_holt_winters(tmp_path: Path) -> None:
    """Two seasons whose swing grows with a wandering level (multiplicative), under noise: with
    --season and default flags otherwise (a small step budget), validation chooses a Holt-Winters
    formula among the baselines, its constants are fitted and recorded, the served file streams
    with its `smoothed` state, and the version beats naive and seasonal naive on test."""
    rng = np.random.default_rng(3)
    n = 900
    t = np.arange(n)
    level = 200 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    daily = 1 + 0.3 * np.sin(2 * np.pi * t / 6)
    weekly = 1 + 0.15 * np.array([1, 1, 1, 0.8, -1.5, -1.3])[(t // 6) % 6]
    y = level * daily * weekly * (1 + rng.normal(0, 0.01, n))
    path = tmp_path / "load.csv"
    pd.DataFrame({"load": y}).to_csv(path, index=False)
    entry, manifest = _train(tmp_path, path, "load", "6,36", "--horizon", "6")
    metrics = manifest["metrics"]
    choice = metrics["transform"]
    assert {"holt_winters", "holt_winters_mult"} <= set(choice["baseline_validation_mae"]), choice
    assert choice["chosen"] in ("holt_winters", "holt_winters_mult"), choice
    spec = ModelConfig.from_dict(manifest["config"]).extra["forecaster"]
    assert 0.0 <= spec["hw_alpha"] <= 1.0 and len(spec["hw_gamma"]) == 2 and abs(spec["hw_phi"]) < 1.0
    config = ModelConfig.from_dict(manifest["config"])
    assert config.state_names[-1] == "smoothed"
    session = ort.InferenceSession(str(entry / "model.onnx"), providers=["CPUExecutionProvider"])
    x = y[None, :, None].astype(np.float32)
    feeds = dict(zip(input_names(config), [x, *config.initial_state(1)], strict=True))
    whole = session.run(output_names(config), feeds)[0]
    from models.reference import load_reference, tolerance

    want, _ = load_reference(entry / "model.onnx").run(x.astype(np.float64))
    assert np.abs(whole - want).max() <= tolerance(want)
    _beats_baselines(metrics)


def test_a_served_holt_winters_formula_is_refitted_before_the_test_block() -> None:
    """Serving its formula, a version's Holt-Winters constants are refitted on every row before
    the test block (training and validation); the heads, calibration and the rest stay."""
    from models.config import ModelConfig as Config
    from models.forecast_spec import make_spec
    from models.forecaster import Forecaster, fit_spec, forecaster_config
    from training.data import prepare_forecast
    from training.forecaster_run import refit_formula

    rng = np.random.default_rng(5)
    t = np.arange(600)
    y = 100 + 10 * np.sin(2 * np.pi * t / 6) + np.cumsum(rng.normal(0, 0.5, 600)) + rng.normal(0, 1.0, 600)
    y[420:] += 5 * np.sin(2 * np.pi * t[420:] / 30)  # the validation block differs from training
    data = prepare_forecast(pd.DataFrame({"y": y}), ["y"], ["y"], horizon=2, window=12, report=lambda _: None)
    spec = make_spec(target_index=0, num_features=1, horizon=2, seasons=(6,), transform="holt_winters", phase=False)
    base = Config(cell="gru", input_size=1, hidden_size=4, output_size=2, num_layers=1, horizon=2)
    model = Forecaster(fit_spec(forecaster_config(base, spec, None), data.features, data.train_rows)).eval()
    model.start_time, model.calibration = None, {"kept": True}
    refitted, record = refit_formula(model, data)
    rows = int(data.test[0]) + 1
    assert record["rows"] == rows > data.train_rows
    assert record["before"]["alpha"] == model.spec.hw_alpha and record["after"]["alpha"] == refitted.spec.hw_alpha
    assert record["before"] != record["after"]
    assert refitted.calibration == {"kept": True} and refitted.spec.scale == model.spec.scale
    from models import holt_winters

    s = model.spec  # the refit starts from the training block's constants
    start = holt_winters.Smoothing(s.seasons, False, s.hw_alpha, s.hw_gamma, s.hw_phi, s.level_std)
    want = holt_winters.fit([y[:rows]], (6,), False, s.level_std, start=start)
    assert refitted.spec.hw_gamma == want.gamma and refitted.spec.hw_phi == want.phi

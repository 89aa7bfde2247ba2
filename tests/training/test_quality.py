"""Honest evaluation: baselines with known answers, the quality gate end to end, transforms,
export fixes (dropout with stacked layers; one failing cell of --cell both), plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest

from seqserve.cli import main
from training import evaluate, gate, transforms
from training.baselines import compute_baselines
from training.data import TrainingError, prepare_forecast

from .conftest import CO2, SUNSPOTS, settings_from

FAST = ["--quiet", "--baselines", "naive"]


def _data(values: np.ndarray, horizon: int = 1, window: int = 8) -> Any:
    frame = pd.DataFrame({"y": values})
    return prepare_forecast(frame, ["y"], ["y"], horizon=horizon, window=window, report=lambda m: None)


# ------------------------------------------------------------------------------------ baselines


def test_seasonal_naive_is_exact_on_a_pure_weekly_pattern() -> None:
    pattern = np.array([3.0, 9.0, 4.0, 8.0, 1.0, 7.0, 5.0])
    data = _data(np.tile(pattern, 60), horizon=3)
    baselines = compute_baselines(data, data.test, [7, 3], statistical=False, report=lambda m: None)
    assert list(baselines.predictions) == ["naive", "seasonal_naive_3", "seasonal_naive_7"]
    report = evaluate.forecast_report(data, {"streaming": baselines.predictions["naive"]}, baselines)
    assert report["seasonal_naive_7"]["mae"] == 0.0 and report["seasonal_naive_7"]["mape"] == 0.0
    assert report["seasonal_naive_3"]["mae"] > 1.0 and report["naive"]["mae"] > 1.0
    assert report["best_baseline"] == report["best_naive_baseline"] == "seasonal_naive_7"
    assert report["seasonal_naive_7"]["by_lead"]["mae"] == [0.0, 0.0, 0.0]
    assert report["test_origins"] == [int(data.test[0]), int(data.test[-1])]


def test_naive_error_by_lead_on_a_straight_line() -> None:
    """y = 2t: the last value is 2k too low at lead k; MAPE and MASE follow by hand."""
    t = np.arange(300, dtype=float)
    data = _data(2.0 * t + 10.0, horizon=3)
    baselines = compute_baselines(data, data.test, [], statistical=False, report=lambda m: None)
    report = evaluate.forecast_report(data, {"streaming": baselines.predictions["naive"]}, baselines)
    naive = report["naive"]
    assert naive["by_lead"]["mae"] == pytest.approx([2.0, 4.0, 6.0])
    assert naive["mae"] == pytest.approx(4.0) and naive["rmse"] == pytest.approx(np.sqrt((4 + 16 + 36) / 3))
    assert naive["mase"] == pytest.approx(4.0 / 2.0)  # in-sample one-step naive MAE is 2
    actual = data.y[data.test]
    want_mape = 100 * np.mean(np.abs(np.repeat(data.targets[data.test], 3, axis=1) - actual) / actual)
    assert naive["mape"] == pytest.approx(want_mape)


def test_statistical_baselines_on_the_same_origins() -> None:
    """A noisy seasonal series with a trend: statsforecast models beat naive, forecasts are causal."""
    rng = np.random.default_rng(0)
    t = np.arange(240, dtype=float)
    y = 50 + 0.05 * t + 10 * np.sin(2 * np.pi * t / 6) + rng.normal(0, 0.5, len(t))
    data = _data(y, horizon=2)
    baselines = compute_baselines(data, data.test, [6], report=lambda m: None)
    assert baselines.skipped == {}
    assert {"mstl_autoets", "autoets", "autoarima"} <= set(baselines.predictions)
    report = evaluate.forecast_report(data, {"streaming": baselines.predictions["naive"]}, baselines)
    for name in ("mstl_autoets", "autoets", "autoarima"):
        assert report[name]["mae"] < 0.5 * report["naive"]["mae"], (name, report[name], report["naive"])
        assert baselines.predictions[name].shape == (len(data.test), 2)
    assert report["best_baseline"] in ("mstl_autoets", "autoets", "autoarima")
    # Causal: changing the data after the last test origin's targets changes nothing.
    later = y.copy()
    later[int(data.test[-1]) + 3 :] += 1000.0
    again = compute_baselines(_data(later, horizon=2), data.test, [6], report=lambda m: None)
    for name in ("mstl_autoets", "autoets", "autoarima"):
        np.testing.assert_allclose(again.predictions[name], baselines.predictions[name])
    # Changing a test value changes the forecasts from origins after it, not before it.
    moved = y.copy()
    origin = int(data.test[10])
    moved[origin + 1] += 50.0
    third = compute_baselines(_data(moved, horizon=2), data.test, [6], report=lambda m: None)
    np.testing.assert_allclose(third.predictions["autoets"][:11], baselines.predictions["autoets"][:11])
    assert not np.allclose(third.predictions["autoets"][11:], baselines.predictions["autoets"][11:])


# ---------------------------------------------------------------------------------------- gate


def _forecast_metrics(model_mae: float) -> dict[str, Any]:
    return {
        "streaming": {"mae": model_mae},
        "naive": {"mae": 5.0},
        "seasonal_naive_7": {"mae": 4.0},
        "mstl_autoets": {"mae": 1.0},
        "best_naive_baseline": "seasonal_naive_7",
    }


def test_gate_compares_with_the_best_naive_baseline() -> None:
    worse = gate.decide("forecast", _forecast_metrics(4.0))
    assert worse == {
        "promoted": False,
        "reason": worse["reason"],
        "metric": "mae",
        "model": 4.0,
        "best_baseline": "seasonal_naive_7",
        "best_baseline_value": 4.0,
        "ties_baseline": True,  # exactly the baseline's MAE: the gate says it serves that baseline
    }
    assert "does not beat" in worse["reason"]
    assert gate.decide("forecast", _forecast_metrics(3.9))["promoted"] is True  # MSTL is not the bar
    forced = gate.decide("forecast", _forecast_metrics(4.5), allow_worse=True)
    assert forced["promoted"] is True and "--allow-worse" in forced["reason"]
    classify = {"model": {"accuracy": 0.5}, "majority": {"accuracy": 0.5}}
    assert gate.decide("classify", classify)["promoted"] is False


def _gate_files(entry: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = json.loads((entry / "manifest.json").read_text())
    props = {p.key: p.value for p in onnx.load(str(entry / "model.onnx")).metadata_props}
    return manifest["gate"], json.loads(props[gate.GATE_KEY])


@pytest.mark.slow
def test_undertrained_model_is_written_but_not_promoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    argv = ["train", "--data", str(SUNSPOTS), "--target", "sunactivity", "--window", "11", "--season", "11"]
    argv += ["--hidden", "4", "--epochs", "1", "--lr", "1e-5", "--transform", "none", "--repository", str(repo)]
    argv += ["--name", "spots", *FAST]
    assert main(argv) == gate.EXIT_NOT_PROMOTED
    err = capsys.readouterr().err
    assert "spots v1 was written but NOT promoted" in err and "--allow-worse" in err
    in_manifest, in_onnx = _gate_files(repo / "spots" / "1")
    assert in_manifest == in_onnx
    assert in_manifest["promoted"] is False and in_manifest["metric"] == "mae"
    assert in_manifest["best_baseline"] in ("naive", "seasonal_naive_11")
    assert in_manifest["model"] >= in_manifest["best_baseline_value"]

    assert main([*argv, "--allow-worse"]) == 0
    in_manifest, in_onnx = _gate_files(repo / "spots" / "2")
    assert in_manifest == in_onnx and in_manifest["promoted"] is True
    assert "--allow-worse" in in_manifest["reason"]

    # A later version that fails the gate again: the service keeps serving v2 by default.
    assert main(argv) == gate.EXIT_NOT_PROMOTED
    capsys.readouterr()
    assert main(["models", "--json", "--model-repository", str(repo)]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [(e["version"], e["promoted"]) for e in listing] == [(1, False), (2, True), (3, False)]
    assert listing[0]["gate"]["reason"].startswith("does not beat")

    from service.core.registry import ModelRegistry
    from service.core.settings import Settings

    registry = ModelRegistry(Settings(model_repository=str(repo)))
    registry.load_all()
    assert registry.versions("spots") == [1, 2, 3]
    assert registry.default_version("spots")[0] == 2
    assert registry.get("spots", 3).promoted is False  # still served when asked for by number


def test_models_listing_counts_a_version_without_gate_as_promoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = tmp_path / "old" / "1"
    entry.mkdir(parents=True)
    (entry / "model.onnx").write_bytes(b"x")
    (entry / "manifest.json").write_text(json.dumps({"name": "old"}))
    assert main(["models", "--json", "--model-repository", str(tmp_path)]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing[0]["promoted"] is True and "no gate recorded" in listing[0]["gate"]["reason"]


# ------------------------------------------------------------------------------ export fixes


def test_two_layers_with_dropout_export_and_pass_parity(tmp_path: Path) -> None:
    """torch.onnx.export leaves the model in training mode; parity must still run with dropout off.
    (The plain RecurrentModel, here through classification; the forecaster has its own test.)"""
    argv = ["train", "--preset", "vowels", "--layers", "2", "--dropout", "0.2", "--hidden", "8", "--epochs", "1"]
    assert main([*argv, "--quiet", "--allow-worse", "--repository", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "vowels" / "1" / "manifest.json").read_text())
    assert manifest["config"]["num_layers"] == 2 and manifest["config"]["dropout"] == 0.2
    assert manifest["training"]["onnx_parity_max_abs_error"] < 1e-3
    assert manifest["gate"]["metric"] == "accuracy" and manifest["gate"]["best_baseline"] == "majority"


@pytest.mark.slow
def test_cell_both_publishes_the_cell_that_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import models.export

    real = models.export.export_onnx

    def gru_fails(model: Any, path: Any, **kwargs: Any) -> float:
        if model.config.cell == "gru":
            raise models.export.ExportError("output differs between torch and ONNX Runtime by 1 (injected)")
        return real(model, path, **kwargs)

    monkeypatch.setattr(models.export, "export_onnx", gru_fails)
    argv = ["train", "--data", str(SUNSPOTS), "--target", "sunactivity", "--window", "11", "--cell", "both"]
    argv += ["--hidden", "8", "--epochs", "2", "--transform", "none", "--allow-worse", "--name", "s"]
    assert main([*argv, *FAST, "--repository", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "export of s-gru failed its parity check" in captured.err
    assert "export failed" in captured.out  # the comparison table says which cell
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-lstm"]
    assert sorted(p.name for p in (tmp_path / "s-lstm").iterdir()) == ["1"]
    assert (tmp_path / "s-lstm" / "1" / "model.onnx").is_file()


# -------------------------------------------------------------------------------- transforms


@pytest.fixture
def two_targets(tmp_path: Path) -> Path:
    """co2 and its yearly running mean as two targets: the plain RecurrentModel path (the
    history-state forecaster takes one target)."""
    frame = pd.read_csv(CO2)
    frame["co2_ppm"] = frame["co2_ppm"].interpolate(limit_direction="both")
    frame["co2_trend"] = frame["co2_ppm"].rolling(52, min_periods=1).mean()
    path = tmp_path / "co2_two.csv"
    frame.to_csv(path, index=False)
    return path


def test_diff_transform_predicts_changes_and_exports(tmp_path: Path, two_targets: Path) -> None:
    """diff: the graph adds the latest reading back; ONNX Runtime, torch and NumPy agree."""
    from models.verify import verify_file

    frame = pd.read_csv(two_targets)
    targets = ["co2_ppm", "co2_trend"]
    data = prepare_forecast(frame, targets, targets, horizon=2, window=52, report=lambda m: None)
    shaped, extra = transforms.prepare(data, "diff")
    assert extra == {"transform": "diff", "anchor_inputs": [0, 0, 1, 1]}
    np.testing.assert_allclose(shaped.offset[:, 2], data.targets[: len(data.y), 1])
    change = data.y[data.train] - shaped.offset[data.train]
    assert shaped.normalization.output_mean[1] == pytest.approx(change[:, 1].mean())
    assert transforms.candidates("auto", data) == ["none", "diff"]
    other_data = prepare_forecast(frame, ["co2_ppm"], ["co2_trend"], horizon=1, window=52, report=lambda m: None)
    assert transforms.candidates("auto", other_data) == ["none"]  # diff needs the target's latest reading
    with pytest.raises(TrainingError, match="--transform diff needs every --target among the --features"):
        transforms.candidates("diff", other_data)
    with pytest.raises(TrainingError, match="seasonal_diff is not available"):
        transforms.candidates("seasonal_diff", data)

    # --features keeps one multivariate model (without it, two targets are two series: training/wide.py)
    argv = ["train", "--data", str(two_targets), "--target", "co2_ppm,co2_trend", "--features", "co2_ppm,co2_trend"]
    argv += ["--window", "52"]
    argv += ["--hidden", "8", "--epochs", "2", "--transform", "diff", "--allow-worse", "--name", "two"]
    assert main([*argv, *FAST, "--repository", str(tmp_path / "repo")]) == 0
    entry = tmp_path / "repo" / "two" / "1"
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["config"]["extra"]["transform"] == "diff"
    assert manifest["metrics"]["transform"]["chosen"] == "diff"
    verdict = verify_file(entry / "model.onnx")
    assert verdict.ok, verdict
    # Raw levels in, raw levels out: forecasts stay near the readings far above the training range.
    import onnxruntime as ort

    session = ort.InferenceSession(str(entry / "model.onnx"), providers=["CPUExecutionProvider"])
    high = np.full((1, 30, 2), 600.0, np.float32)  # training saw about 315-375 ppm
    zeros = np.zeros((1, 1, 8), np.float32)
    out = session.run(None, {"input": high, "h0": zeros, "c0": zeros})[0]
    assert np.all(np.abs(out - 600.0) < 20.0), out[0, -1]


def test_auto_transform_records_every_candidate(tmp_path: Path, two_targets: Path) -> None:
    argv = ["train", "--data", str(two_targets), "--target", "co2_ppm,co2_trend", "--window", "52", "--name", "two"]
    argv += ["--features", "co2_ppm,co2_trend"]  # one multivariate model (training/wide.py)
    argv += ["--hidden", "8", "--epochs", "2", "--allow-worse", "--repository", str(tmp_path / "repo")]
    assert main([*argv, *FAST]) == 0
    manifest = json.loads((tmp_path / "repo" / "two" / "1" / "manifest.json").read_text())
    chosen = manifest["metrics"]["transform"]
    assert chosen["setting"] == "auto" and set(chosen["validation_mae"]) == {"none", "diff"}
    assert chosen["chosen"] == min(chosen["validation_mae"], key=chosen["validation_mae"].get)
    assert manifest["config"]["extra"]["transform"] == chosen["chosen"]


def test_season_takes_several_values() -> None:
    settings = settings_from(["--data", str(SUNSPOTS), "--target", "sunactivity", "--season", "336,48"])
    assert settings.season == [48, 336]
    assert settings_from(["--preset", "electricity"]).season == [48, 336]
    with pytest.raises(TrainingError, match="season lengths must be integers >= 2"):
        settings_from(["--data", str(SUNSPOTS), "--target", "sunactivity", "--season", "48,x"])


# ------------------------------------------------------------------------------------- plots


@pytest.mark.slow
def test_plots_for_a_multi_step_horizon_with_timestamps(tmp_path: Path) -> None:
    argv = ["train", "--preset", "co2", "--hidden", "8", "--epochs", "2", "--allow-worse"]
    assert main([*argv, *FAST, "--repository", str(tmp_path)]) == 0
    entry = tmp_path / "co2" / "1"
    files = sorted(p.name for p in entry.iterdir())
    assert files == ["error_by_lead.png", "forecast.png", "loss.png", "manifest.json", "model.onnx"]
    for name in ("error_by_lead.png", "forecast.png"):
        assert (entry / name).read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["files"] == ["model.onnx", "manifest.json", "loss.png", "forecast.png", "error_by_lead.png"]
    assert len(manifest["metrics"]["streaming"]["by_lead"]["mae"]) == 4


def test_bad_time_column_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--data", str(SUNSPOTS), "--target", "sunactivity", "--time-column", "when", *FAST]
    assert main([*argv, "--repository", str(tmp_path)]) == 2
    assert "unknown time column(s) ['when']" in capsys.readouterr().err


def test_filled_readings_are_not_scored_for_the_model_or_any_baseline() -> None:
    """A trading-day file with holidays: the filled (interpolated) days are no test origin and
    no target, for naive, seasonal naive and MSTL+AutoETS alike, and the report says how many
    test origins were left out. Naive is scored on observed readings only (the straight line
    through a holiday is easier than any real day)."""
    from training.baselines import mstl_origins
    from training.seasons import read_time

    rng = np.random.default_rng(3)
    days = pd.bdate_range("2020-01-01", periods=400)
    close = 100 + np.cumsum(rng.normal(0, 1.0, 400)) + np.array([2.0, 1, 0, -1, -2])[days.dayofweek]
    holidays = [40, 150, 345, 360, 361, 380]  # four in the test block (rows 340..)
    kept = np.delete(np.arange(400), holidays)
    frame = pd.DataFrame({"date": days[kept].strftime("%Y-%m-%d"), "close": close[kept]})
    frame, info = read_time(frame, "", skip={"close"}, report=lambda m: None)
    assert info is not None and info.filled_rows == tuple(holidays)
    said: list[str] = []
    data = prepare_forecast(
        frame, ["close"], ["close"], horizon=1, window=8, report=said.append, filled_rows=info.filled_rows
    )
    whole_test = np.arange(340 - 1, 399)  # origins whose target is in the test block
    # an origin is scored when its reading and its target were observed
    expect = [t for t in whole_test if t not in holidays and t + 1 not in holidays]
    assert data.test.tolist() == expect and data.excluded_test == len(whole_test) - len(expect) == 7
    assert not set(holidays) & set(data.val.tolist()) and data.excluded_val == 0
    assert any("7 test and 0 validation origin(s) have a filled" in m for m in said), said
    baselines = compute_baselines(data, data.test, [5], report=lambda m: None)
    report = evaluate.forecast_report(data, {"streaming": baselines.predictions["naive"]}, baselines)
    observed_naive = np.mean([abs(frame["close"][t + 1] - frame["close"][t]) for t in expect])
    assert report["naive"]["mae"] == pytest.approx(observed_naive)
    assert report["test_excluded_filled"] == 7 and report["test_pairs"] == len(expect)
    assert "mstl_autoets" in baselines.predictions, baselines.skipped
    # MSTL+AutoETS rolled over origins with holes: one seasonal forecast per origin, past only
    y = data.targets[:, 0].astype(np.float64)
    sparse = list(mstl_origins(y, data.train_rows, [5], data.test, 1))
    assert [row for row, *_ in sparse] == list(range(len(expect)))
    assert all(
        len(history) == t + 1 and np.shape(f) == (1,) for (_, _, history, f), t in zip(sparse, expect, strict=True)
    )


def test_mstl_decompositions_are_bounded_on_a_long_test_block() -> None:
    """The electricity preset (605 test origins, seasons 48 and 336; day ahead 1297) keeps
    decomposing its whole history every shortest season (13 times, ~48k readings); a year of hourly readings (1314
    origins, seasons 24 and 168: 55 decompositions of ~8k readings) decomposes only the latest
    readings at each refresh after the first, within the bound, and stays past-only."""
    from training import baselines as b

    assert b.decompose_window([48, 336], np.arange(3426, 4031)) is None
    assert b.decompose_window([48, 336], np.arange(2687, 3984)) is None  # day ahead, Taylor's design
    hourly = np.arange(7445, 8759)
    window = b.decompose_window([24, 168], hourly)
    assert window is not None and window >= 4 * 168 and 54 * window <= b.MAX_DECOMPOSED_ROWS
    # On a short seasonal series: a window changes little, and nothing after an origin is read.
    rng = np.random.default_rng(2)
    t = np.arange(1200, dtype=float)
    y = 20 + 0.01 * t + 5 * np.sin(2 * np.pi * t / 12) + 2 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 0.3, 1200)
    pairs = np.arange(999, 1199)
    whole = b._mstl_autoets(y, 800, [12, 48], pairs, 1)
    latest = b._mstl_autoets(y, 800, [12, 48], pairs, 1, window=200)
    actual = y[pairs + 1]
    assert np.abs(latest[:, 0] - actual).mean() < 1.1 * np.abs(whole[:, 0] - actual).mean()
    assert not np.allclose(latest, whole)
    later = y.copy()
    later[1100:] += 100.0
    again = b._mstl_autoets(later, 800, [12, 48], pairs, 1, window=200)
    np.testing.assert_allclose(again[: 1100 - 999], latest[: 1100 - 999])


def test_statistical_baselines_say_what_runs_and_stop_over_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each statistical baseline prints when it starts and where it is while it runs; one past
    its time budget is left out and the report says "over budget", the naive ones stay."""
    from training import baselines as b

    rng = np.random.default_rng(1)
    t = np.arange(240, dtype=float)
    data = _data(50 + 10 * np.sin(2 * np.pi * t / 6) + rng.normal(0, 0.5, len(t)))
    said: list[str] = []
    monkeypatch.setattr(b, "PROGRESS_SECONDS", 0.0)
    done = compute_baselines(data, data.test, [6], report=said.append)
    assert {"mstl_autoets", "autoets", "autoarima"} <= set(done.predictions), done.skipped
    for name in ("mstl_autoets", "autoets", "autoarima"):
        assert f"baseline {name}: running over {len(data.test)} test origins" in "\n".join(said)
        assert f"baseline {name}: 1 of {len(data.test)} test origins" in "\n".join(said), said
    monkeypatch.setattr(b, "BASELINE_BUDGET_SECONDS", 0.0)
    said.clear()
    over = compute_baselines(data, data.test, [6], report=said.append)
    assert set(over.predictions) == {"naive", "seasonal_naive_6"}
    for name in ("mstl_autoets", "autoets", "autoarima"):
        assert over.skipped[name].startswith("over budget: 0 of") or over.skipped[name].startswith("over budget: 1 of")
        assert any(line.startswith(f"baseline {name} skipped: over budget") for line in said), said
    report = evaluate.forecast_report(data, {"streaming": over.predictions["naive"]}, over)
    assert report["best_baseline"] in over.naive_names and "over budget" in report["baselines_skipped"]["autoets"]


def test_autoets_and_autoarima_say_when_a_long_season_is_left_to_mstl() -> None:
    """A short series with a season of 52 (weekly readings, yearly cycle): AutoETS and AutoARIMA
    are fitted with their shortest season of at most 24 (here none: season 1), and the trainer
    says so instead of silently fitting a non-seasonal model or spending minutes on season 52."""
    rng = np.random.default_rng(6)
    t = np.arange(400, dtype=float)
    data = _data(10 + np.sin(2 * np.pi * t / 52) + rng.normal(0, 0.2, len(t)))
    said: list[str] = []
    done = compute_baselines(data, data.test, [52], report=said.append)
    assert "autoarima" in done.predictions and "season 1" in done.descriptions["autoarima"]
    assert any("season(s) [52] longer than 24" in line and "season 1 used" in line for line in said), said


def test_autoarima_search_is_bounded_for_seasons_of_24_and_more() -> None:
    """AutoARIMA's default search over a season of 24 took minutes on a 1,000-row hourly series;
    from season 24 on it runs a restricted search by design, says so, and still reports its
    forecasts (orders within the bounds)."""
    from training import baselines as b

    rng = np.random.default_rng(8)
    t = np.arange(300, dtype=float)
    data = _data(40 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.5, len(t)))
    said: list[str] = []
    done = compute_baselines(data, data.test, [24], report=said.append)
    assert "autoarima" in done.predictions, done.skipped
    assert "restricted search" in done.descriptions["autoarima"], done.descriptions["autoarima"]
    assert any(line.startswith("baseline autoarima: running") and "season 24 >= 24" in line for line in said), said
    [model] = [m for key, m in b._FITTED.items() if key[0] == "AutoARIMA" and key[1] == 24]
    p, q, big_p, big_q = model.model_["arma"][:4]  # type: ignore[attr-defined]
    assert p <= 2 and q <= 2 and big_p <= 1 and big_q <= 1 and p + q + big_p + big_q <= 4


def test_statistical_baselines_in_a_worker_process_equal_those_computed_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """`start` on a long series runs the statistical baselines in a worker process (the network
    trains meanwhile): the same forecasts and lines as computing them here; a worker that dies
    is replaced by computing them here, and the report says so."""
    from training import baselines as b

    rng = np.random.default_rng(3)
    t = np.arange(240, dtype=float)
    data = _data(50 + 10 * np.sin(2 * np.pi * t / 6) + rng.normal(0, 0.5, len(t)))
    here = compute_baselines(data, data.test, [6], report=lambda m: None)
    monkeypatch.setattr(b, "BACKGROUND_MIN_ROWS", 100)
    monkeypatch.setattr(b, "_cores", lambda: 2)
    said: list[str] = []
    pending = b.start(data, data.test, [6], report=said.append)
    assert pending._worker is not None and "worker process" in said[0]
    there = pending.result()
    assert list(there.predictions) == list(here.predictions) and {"mstl_autoets", "autoets"} <= set(there.predictions)
    for name, prediction in here.predictions.items():
        np.testing.assert_allclose(there.predictions[name], prediction)
    assert any(line.startswith("baseline autoarima: done in") for line in said), said
    assert pending.result() is there  # collected once
    said.clear()
    dying = b.start(data, data.test, [6], report=said.append)
    dying._worker.terminate()
    rescued = dying.result()
    assert any("worker process failed" in line for line in said), said
    np.testing.assert_allclose(rescued.predictions["autoets"], here.predictions["autoets"])
    monkeypatch.setattr(b, "_cores", lambda: 1)  # one core: nothing to gain, computed here
    assert b.start(data, data.test, [6], report=lambda m: None)._worker is None


def test_a_long_seasonal_series_keeps_autoets_beside_mstl() -> None:
    """Over 1000 training rows with a season, AutoETS is fitted beside MSTL+AutoETS (not AutoARIMA):
    the report's best baseline is then the better of the two, as a user would compare."""
    rng = np.random.default_rng(8)
    t = np.arange(1500, dtype=float)
    data = _data(20 + 3 * np.sin(2 * np.pi * t / 6) + np.cumsum(rng.normal(0, 0.3, len(t))))
    assert data.train_rows > 1000
    done = compute_baselines(data, data.test[:12], [6], report=lambda m: None)
    assert {"mstl_autoets", "autoets"} <= set(done.predictions) and "autoarima" not in done.predictions
    assert "season 6" in done.descriptions["autoets"]

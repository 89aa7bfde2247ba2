"""The verdict in words (training/verdict.py) and `--gate statistical` (training/gate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqserve.cli import main
from training.data import TrainingError
from training.gate import decide
from training.verdict import forecast_verdict

from .conftest import settings_from


def metrics(model: float, naive: float, autoets: float | None = None, formula: float | None = None) -> dict:
    out: dict = {
        "streaming": {"mae": model},
        "naive": {"mae": naive},
        "baselines": {"naive": {}},
        "best_naive_baseline": "naive",
    }
    if autoets is not None:
        out["autoets"] = {"mae": autoets}
        out["baselines"]["autoets"] = {}
    if formula is not None:
        out["formula"] = {"mae": formula}
    return out


LEARNED = {"serves_formula": False, "formula": "seasonal", "formula_description": "the value one season ago"}


def test_improvement_is_said_in_words_with_the_ratio() -> None:
    v = forecast_verdict(metrics(8.0, 12.0, autoets=10.0, formula=10.0), LEARNED)
    assert v["text"] == "the network improved on its baseline (the value one season ago) by 20.0 % on test"
    assert v["learned"] is True and v["improvement_pct"] == 20.0
    assert v["ratio_to_best_baseline"] == 0.8 and v["best_baseline"] == "autoets"
    assert v["warning"] is None


def test_served_formula_and_a_stronger_statistical_baseline_are_said() -> None:
    v = forecast_verdict(metrics(10.0, 12.0, autoets=9.0, formula=10.0), {**LEARNED, "serves_formula": True})
    assert (
        v["text"]
        == "the network did not improve on its baseline; this version serves the formula (the value one season ago)"
    )
    assert v["learned"] is False and v["serves_formula"] is True
    assert v["warning"] == "the statistical baseline autoets beats the model on test: MAE 9 against 10 (ratio 1.111)"
    assert v["ratio_to_best_statistical"] == pytest.approx(1.1111, abs=1e-4)


def test_better_on_validation_but_not_on_test_is_not_called_an_improvement() -> None:
    v = forecast_verdict(metrics(11.0, 12.0, formula=10.0), LEARNED)
    assert "not on test: 10.0 % worse" in v["text"] and v["learned"] is False


def test_gate_statistical_needs_the_statistical_baseline_beaten_too() -> None:
    m = metrics(10.0, 12.0, autoets=9.0)
    assert decide("forecast", m)["promoted"]
    strict = decide("forecast", m, gate="statistical")
    assert not strict["promoted"]
    assert "does not beat the best naive and statistical baselines" in strict["reason"]
    assert strict["best_baseline"] == "autoets" and strict["best_baseline_value"] == 9.0
    assert decide("forecast", metrics(8.0, 12.0, autoets=9.0), gate="statistical")["promoted"]


def test_gate_statistical_needs_statistical_baselines() -> None:
    with pytest.raises(TrainingError, match="--gate statistical is for forecasting with the statistical baselines"):
        settings_from(["--data", "x.csv", "--target", "y", "--gate", "statistical", "--baselines", "naive"])


@pytest.mark.slow
def test_white_noise_is_labelled_as_serving_its_formula(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    dates = pd.date_range("2020-01-01", periods=300, freq="D").strftime("%Y-%m-%d")
    path = tmp_path / "noise.csv"
    pd.DataFrame({"date": dates, "sales": 50 + rng.normal(0, 5, 300)}).to_csv(path, index=False)
    repo = tmp_path / "repo"
    code = main(["train", "--data", str(path), "--target", "sales", "--repository", str(repo), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    manifest = json.loads((repo / "noise" / "1" / "manifest.json").read_text())
    verdict = manifest["verdict"]
    assert verdict["serves_formula"] is True and verdict["formula"] == "none"
    assert verdict["text"] == (
        "the network did not improve on its baseline; this version serves the formula (the training mean)"
    )
    assert f"lstm: verdict: {verdict['text']}" in out
    assert manifest["gate"]["verdict"] == verdict["text"]
    ratio = manifest["metrics"]["streaming"]["mae"] / manifest["metrics"][verdict["best_baseline"]]["mae"]
    assert manifest["gate"]["ratio_to_best_baseline"] == pytest.approx(ratio, abs=1e-4)
    # serving the formula means exactly the formula's forecasts
    assert manifest["metrics"]["streaming"]["mae"] == pytest.approx(manifest["metrics"]["formula"]["mae"], rel=1e-6)


def test_many_series_gate_needs_half_of_the_series_beaten() -> None:
    m = metrics(1.0, 1.2) | {"gate_metric": "mase", "beats": {"naive": 0.4}}
    m["streaming"]["mase"], m["naive"]["mase"] = 1.0, 1.2
    gate = decide("forecast", m)
    assert not gate["promoted"] and gate["share_beaten"] == 0.4
    assert "better than naive on 40% of series (< 50%)" in gate["reason"]
    m["beats"]["naive"] = 0.5
    assert decide("forecast", m)["promoted"]


def test_wide_file_reports_per_column_wins_and_gates_on_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(5)
    n = 120
    t = np.arange(n)
    frame = pd.DataFrame({"month": pd.period_range("2000-01", periods=n, freq="M").strftime("%Y-%m")})
    for i in range(3):  # seasonal columns: a model can beat naive on these
        frame[f"shop{i}"] = 100 + 20 * np.sin(2 * np.pi * (t + i) / 12) + rng.normal(0, 2, n)
    path = tmp_path / "shops.csv"
    frame.to_csv(path, index=False)
    repo = tmp_path / "repo"
    argv = ["train", "--data", str(path), "--target", "shop0,shop1,shop2", "--repository", str(repo), "--quiet"]
    code = main([*argv, "--epochs", "6", "--baselines", "naive"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 target columns are 3 series" in out and "--series-id" in out  # the long-format hint
    assert "per column (test MASE), wins against" in out
    for column in ("shop0", "shop1", "shop2"):
        assert f"  {column}: MASE " in out
    manifest = json.loads((repo / "shops" / "1" / "manifest.json").read_text())
    assert sorted(manifest["metrics"]["per_series"]) == ["shop0", "shop1", "shop2"]
    assert manifest["wide"]["columns"] == ["shop0", "shop1", "shop2"]
    assert manifest["seasons"]["seasons"] == [12]
    gate = manifest["gate"]
    assert gate["metric"] == "mase" and "share_beaten" in gate and "of series" in gate["reason"]
    assert gate["promoted"] == (gate["share_beaten"] >= 0.5 and gate["model"] < gate["best_baseline_value"])


def test_a_tie_with_naive_says_the_version_is_naive_and_how_to_serve_it(tmp_path: Path) -> None:
    """Validation chose the last-value formula: test MAE equals naive's to the last digit. The
    gate still holds it back, but the reason says it learned nothing beyond naive (serving it
    serves naive), and the trainer's note offers --allow-worse or the manifest edit (no
    retraining) to serve it anyway, or more data / a season to beat naive, instead of
    "Retrain with --allow-worse" alone."""
    from training.cli import default_note

    tie = decide("forecast", metrics(2.25342, 2.25342))
    assert not tie["promoted"] and tie["ties_baseline"] is True
    assert "learned nothing beyond naive on this series, the baseline it is gated against" in tie["reason"]
    assert "serving this version serves the naive forecast" in tie["reason"]
    worse = decide("forecast", metrics(2.5, 2.25342))
    assert not worse["promoted"] and "ties_baseline" not in worse and "learned nothing" not in worse["reason"]
    note = default_note(str(tmp_path), "daily", 1, ties=True)
    assert "serve the naive forecast): retrain with --allow-worse" in note
    assert '"promoted": true in the gate of daily/1/manifest.json and reload (no retraining)' in note
    assert "more data, or a season" in note
    assert "Retrain with --allow-worse to promote it" in default_note(str(tmp_path), "daily", 1)


def test_gate_record_names_the_baseline_its_ratio_is_against() -> None:
    """A statistical baseline better than the best naive one: the gate keeps the naive one it was
    decided against and names the ratio's own baseline and value, so each pair of fields agrees."""
    from types import SimpleNamespace

    from training.verdict import attach_verdict

    m = metrics(1.112, 2.466, autoets=0.936, formula=1.112)
    m["best_baseline"] = "autoets"
    outcome = SimpleNamespace(metrics=m, record={}, gate=decide("forecast", m))
    attach_verdict(outcome, {**LEARNED, "serves_formula": True}, None, "lstm")
    g = outcome.gate
    assert g["best_baseline"] == "naive" and g["model"] / g["best_baseline_value"] == pytest.approx(1.112 / 2.466)
    assert g["ratio_baseline"] == "autoets" and g["ratio_baseline_value"] == 0.936
    assert g["ratio_to_best_baseline"] == pytest.approx(g["model"] / g["ratio_baseline_value"], abs=1e-3)

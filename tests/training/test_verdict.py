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

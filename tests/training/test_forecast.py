"""Forecasting on real data: both cells beat the naive baseline, windowed and streaming, and the
published entry is complete, loads in ONNX Runtime and maps raw inputs to raw-unit predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from models.export import input_names, output_names
from models.reference import load_reference
from training.data import file_sha256
from training.pipeline import Outcome

from .conftest import ELECTRICITY


def _entry(repo: Path, name: str) -> Path:
    return repo / name / "1"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.slow
def test_beats_naive_windowed_and_streaming(forecast_run: tuple[Path, list[Outcome]], cell: str) -> None:
    repo, _ = forecast_run
    metrics = json.loads((_entry(repo, f"elec-{cell}") / "manifest.json").read_text())["metrics"]
    naive = metrics["naive"]
    for mode in ("windowed", "streaming"):
        assert metrics[mode]["mase"] < 1.0, (mode, metrics[mode])
        assert metrics[mode]["mae"] < 0.8 * naive["mae"], (mode, metrics[mode], naive)
    assert metrics["streaming"]["rmse"] < naive["rmse"]
    assert "seasonal_naive_48" in metrics


@pytest.mark.slow
def test_entry_is_complete(forecast_run: tuple[Path, list[Outcome]]) -> None:
    repo, outcomes = forecast_run
    assert sorted(p.name for p in repo.iterdir()) == ["elec-gru", "elec-lstm"]
    for outcome in outcomes:
        entry = _entry(repo, f"elec-{outcome.cell}")
        assert outcome.path == entry and outcome.version == 1
        files = sorted(p.name for p in entry.iterdir())
        assert files == ["forecast.png", "loss.png", "manifest.json", "model.onnx"]
        assert [p.name for p in (repo / f"elec-{outcome.cell}").iterdir()] == ["1"]  # no temp dirs left
        manifest = json.loads((entry / "manifest.json").read_text())
        for key in ("name", "version", "created", "config", "features", "outputs", "normalization", "metrics"):
            assert key in manifest, key
        assert manifest["name"] == f"elec-{outcome.cell}" and manifest["version"] == 1
        assert manifest["data"]["sha256"] == file_sha256(ELECTRICITY)
        assert manifest["versions"]["torch"] == torch.__version__
        assert {"onnx", "onnxruntime"} <= set(manifest["versions"])
        assert manifest["training_args"]["cell"] == "both"
        assert manifest["outputs"] == ["demand_mw@t+1"]
        assert manifest["config"]["cell"] == outcome.cell
        assert (entry / "forecast.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_service_reader_sees_the_entries(forecast_run: tuple[Path, list[Outcome]]) -> None:
    from models.repository import scan_repository

    repo, _ = forecast_run
    assert [(e.name, e.version) for e in scan_repository(repo)] == [("elec-gru", 1), ("elec-lstm", 1)]


@pytest.mark.slow
def test_normalisation_fitted_on_train_only(forecast_run: tuple[Path, list[Outcome]]) -> None:
    repo, _ = forecast_run
    manifest = json.loads((_entry(repo, "elec-lstm") / "manifest.json").read_text())
    demand = pd.read_csv(ELECTRICITY)["demand_mw"].to_numpy(float)
    train_rows = len(demand) - 2 * round(0.15 * len(demand))
    norm = manifest["normalization"]
    assert norm["input_mean"][0] == pytest.approx(demand[:train_rows].mean())
    assert norm["input_std"][0] == pytest.approx(demand[:train_rows].std())
    assert norm["output_mean"][0] == pytest.approx(demand[:train_rows].mean())
    assert norm["input_mean"][0] != pytest.approx(demand.mean(), rel=1e-6)  # not the whole series


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.slow
def test_raw_units_round_trip_onnx_torch_reference(forecast_run: tuple[Path, list[Outcome]], cell: str) -> None:
    """Raw demand in, raw-unit forecasts out, identical in ONNX Runtime, torch and the NumPy reference."""
    repo, outcomes = forecast_run
    outcome = next(o for o in outcomes if o.cell == cell)
    path = _entry(repo, f"elec-{cell}") / "model.onnx"
    config = outcome.model.config
    demand = pd.read_csv(ELECTRICITY)["demand_mw"].to_numpy(np.float32)
    x = demand[-400:].reshape(1, -1, 1)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    zeros = list(config.initial_state(1))
    y_onnx = session.run(output_names(config), dict(zip(input_names(config), [x, *zeros], strict=True)))[0]
    with torch.no_grad():
        y_torch = outcome.model(torch.from_numpy(x))[0].numpy()
    y_ref, _ = load_reference(path).run(x)

    scale = float(np.abs(y_torch).max())
    np.testing.assert_allclose(y_onnx, y_torch, atol=1e-4 * scale)
    np.testing.assert_allclose(y_ref, y_torch, atol=1e-4 * scale)
    # Raw units: next-step forecasts are within a few percent of the actual next values.
    error = np.abs(y_onnx[0, :-1, 0] - demand[-399:]).mean()
    assert error < 0.05 * demand.mean()

    # Streaming one step at a time with carried state gives the same numbers as the whole window.
    state = zeros
    steps = []
    for t in range(50):
        out = session.run(output_names(config), dict(zip(input_names(config), [x[:, t : t + 1], *state], strict=True)))
        steps.append(out[0][0, 0])
        state = out[1:]
    np.testing.assert_allclose(np.array(steps), y_onnx[0, :50], atol=1e-4 * scale)


def test_no_training_target_leaks_from_validation_or_test() -> None:
    from training.data import prepare_forecast

    frame = pd.read_csv(ELECTRICITY)
    data = prepare_forecast(frame, ["demand_mw"], ["demand_mw"], horizon=3, window=48, report=lambda m: None)
    assert (data.train + 3 < data.train_rows).all()
    assert data.val[0] + 1 >= data.train_rows and data.val[-1] + 3 < data.test[0] + 1
    assert data.output_names == ("demand_mw@t+1", "demand_mw@t+2", "demand_mw@t+3")
    t = int(data.test[0])
    np.testing.assert_array_equal(data.y[t], frame["demand_mw"].to_numpy()[t + 1 : t + 4])

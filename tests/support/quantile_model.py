"""A small forecaster with quantile levels and anomaly flags (models/forecaster.py), random
weights and a calibration shift, exported like training does: for service tests of the
`quantiles` and `anomaly` fields, where what matters is that every transport shows the graph's
values, not their quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.config import DEFAULT_QUANTILES, ModelConfig
from models.export import export_onnx
from models.forecast_spec import make_spec
from models.forecaster import Forecaster, fit_spec, forecaster_config

SEASON = 6


def readings(n: int, seed: int = 0) -> np.ndarray:
    """[n, 1] float32: a daily-like shape in the hundreds plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 500 + 60 * np.sin(2 * np.pi * t / SEASON) + 8 * rng.standard_normal(n)
    return y[:, None].astype(np.float32)


def export_quantile_model(repository: Path, name: str = "probe", version: int = 1, seed: int = 3) -> Path:
    spec = make_spec(target_index=0, num_features=1, horizon=2, seasons=(SEASON,), transform="seasonal", phase=False)
    base = ModelConfig(
        cell="gru",
        input_size=1,
        hidden_size=8,
        output_size=2,
        features=("load",),
        outputs=("load@t+1", "load@t+2"),
        horizon=2,
        quantiles=DEFAULT_QUANTILES,
    )
    config = fit_spec(forecaster_config(base, spec, None), readings(400).astype(np.float64), 300)
    torch.manual_seed(seed)
    model = Forecaster(config)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.1)
        model.quantile_head.weight.normal_(0.0, 0.2)
    model.set_quantile_shift(np.random.default_rng(seed).normal(0.0, 0.2, (2, len(DEFAULT_QUANTILES))))
    path = repository / name / str(version) / "model.onnx"
    export_onnx(model.eval(), path)
    return path

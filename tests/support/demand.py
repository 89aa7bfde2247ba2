"""A one-feature forecaster in the shape of the electricity model (demand in, next demand out),
with random weights: for tests about the protocol and the dashboard, where every output must
depend on every earlier reading but quality does not matter. Optionally with a manifest and a
plot, as training writes them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from models.config import ModelConfig, Normalization
from models.export import export_onnx
from models.recurrent import RecurrentModel

DATASETS = Path(__file__).resolve().parents[2] / "training" / "datasets"
ELECTRICITY = DATASETS / "electricity_halfhourly" / "electricity_halfhourly.csv"


def electricity() -> np.ndarray:
    """The bundled half-hourly demand series as float32 [time, 1]."""
    with ELECTRICITY.open() as f:
        return np.array([[float(row["demand_mw"])] for row in csv.DictReader(f)], dtype=np.float32)


def export_demand_model(repository: Path, name: str = "demand", version: int = 1, seed: int = 7) -> Path:
    torch.manual_seed(seed)
    config = ModelConfig(
        cell="lstm",
        input_size=1,
        hidden_size=16,
        output_size=1,
        features=("demand_mw",),
        outputs=("demand_mw@t+1",),
        normalization=Normalization((25000.0,), (4000.0,), (25000.0,), (4000.0,)),
    )
    path = repository / name / str(version) / "model.onnx"
    export_onnx(RecurrentModel(config).eval(), path)
    return path.parent


def write_manifest(directory: Path, manifest: dict, plot: str | None = "forecast.png") -> None:
    """manifest.json (as training writes it) and, optionally, a small PNG plot next to it."""
    files = ["model.onnx", "manifest.json"]
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 2.2), dpi=80)
        t = np.arange(96)
        ax.plot(t, 25000 + 4000 * np.sin(t / 7.6), label="actual")
        ax.plot(t, 25000 + 3800 * np.sin((t - 1) / 7.6), label="forecast")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(directory / plot)
        plt.close(fig)
        files.append(plot)
    (directory / "manifest.json").write_text(json.dumps({**manifest, "files": files}, indent=2))

"""Small exported models in a temporary repository, shared by service and e2e tests."""

from __future__ import annotations

from pathlib import Path

import torch

from models.config import ModelConfig, Normalization
from models.export import export_onnx
from models.recurrent import RecurrentModel


def make_config(cell: str, layers: int = 2, hidden: int = 16) -> ModelConfig:
    return ModelConfig(
        cell=cell,  # type: ignore[arg-type]
        input_size=3,
        hidden_size=hidden,
        output_size=2,
        num_layers=layers,
        features=("temp", "load", "hour"),
        outputs=("y@t+1", "y@t+2"),
        horizon=2,
        normalization=Normalization((20.0, 500.0, 12.0), (5.0, 100.0, 7.0), (480.0, 480.0), (90.0, 90.0)),
    )


def export_model(repository: Path, name: str, version: int, cell: str, seed: int = 0, **kwargs) -> Path:
    torch.manual_seed(seed)
    model = RecurrentModel(make_config(cell, **kwargs)).eval()
    path = repository / name / str(version) / "model.onnx"
    export_onnx(model, path)
    return path


def make_repository(root: Path) -> Path:
    """lstm (v1, v2), gru (v1): enough to test routing, versions, and both cells."""
    export_model(root, "lstm", 1, "lstm", seed=1)
    export_model(root, "lstm", 2, "lstm", seed=2)
    export_model(root, "gru", 1, "gru", seed=3)
    return root


def raw_inputs(rng, steps: int, batch: int | None = None):
    """Inputs in raw units around the normalisation means."""
    import numpy as np

    shape = (steps, 3) if batch is None else (batch, steps, 3)
    return rng.standard_normal(shape) * np.array([5.0, 100.0, 7.0]) + np.array([20.0, 500.0, 12.0])

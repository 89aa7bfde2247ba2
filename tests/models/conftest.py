from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.config import ModelConfig, Normalization
from models.export import export_onnx
from models.recurrent import RecurrentModel


def make_model(cell: str, layers: int, *, seed: int = 0, hidden: int = 12) -> RecurrentModel:
    """A random model with non-trivial normalisation so the graph's pre/post ops are exercised."""
    torch.manual_seed(seed)
    config = ModelConfig(
        cell=cell,  # type: ignore[arg-type]
        input_size=3,
        hidden_size=hidden,
        output_size=2,
        num_layers=layers,
        features=("a", "b", "c"),
        outputs=("y@t+1", "y@t+2"),
        horizon=2,
        normalization=Normalization((10.0, -2.0, 0.5), (3.0, 0.5, 2.0), (100.0, 100.0), (20.0, 20.0)),
    )
    return RecurrentModel(config).eval()


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], tuple[RecurrentModel, Path]]:
    """LSTM and GRU, 1 and 2 layers, exported once per test session."""
    out: dict[tuple[str, int], tuple[RecurrentModel, Path]] = {}
    root = tmp_path_factory.mktemp("onnx")
    for cell in ("lstm", "gru"):
        for layers in (1, 2):
            model = make_model(cell, layers)
            path = root / f"{cell}{layers}.onnx"
            export_onnx(model, path)
            out[(cell, layers)] = (model, path)
    return out

"""The `ModelConfig` a training run builds from its settings and data (forecast or classify)."""

from __future__ import annotations

from typing import Any

from models.config import ModelConfig
from training.data import ClassifyData, ForecastData
from training.settings import RunSettings


def model_config(
    settings: RunSettings, data: ForecastData | ClassifyData, cell: str, extra: dict[str, Any] | None = None
) -> ModelConfig:
    # What both tasks share; the head, outputs, horizon and task record differ below.
    common: dict[str, Any] = {
        "cell": cell,
        "input_size": len(data.feature_names),
        "hidden_size": settings.hidden,
        "num_layers": settings.layers,
        "dropout": settings.dropout,
        "features": data.feature_names,
        "normalization": data.normalization,
    }
    if isinstance(data, ForecastData):
        return ModelConfig(
            **common,
            output_size=len(data.output_names),
            head="regression",
            outputs=data.output_names,
            horizon=data.horizon,
            extra={
                "task": "forecast",
                "targets": list(data.target_names),
                "window": settings.window,
                "seasons": list(settings.season),
                **(extra or {}),
            },
        )
    return ModelConfig(
        **common,
        output_size=len(data.classes),
        head="classification",
        outputs=data.classes,
        horizon=1,
        extra={"task": "classify", "label": settings.label, "label_at": "last step of each sequence"},
    )

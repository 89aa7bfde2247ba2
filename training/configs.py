"""The `ModelConfig` a training run builds from its settings and data (forecast or classify)."""

from __future__ import annotations

from typing import Any

from models.config import ModelConfig
from training.data import ClassifyData, ForecastData
from training.settings import RunSettings


def model_config(
    settings: RunSettings, data: ForecastData | ClassifyData, cell: str, extra: dict[str, Any] | None = None
) -> ModelConfig:
    if isinstance(data, ForecastData):
        return ModelConfig(
            cell=cell,  # type: ignore[arg-type]
            input_size=len(data.feature_names),
            hidden_size=settings.hidden,
            output_size=len(data.output_names),
            num_layers=settings.layers,
            head="regression",
            dropout=settings.dropout,
            features=data.feature_names,
            outputs=data.output_names,
            horizon=data.horizon,
            normalization=data.normalization,
            extra={
                "task": "forecast",
                "targets": list(data.target_names),
                "window": settings.window,
                "seasons": list(settings.season),
                **(extra or {}),
            },
        )
    return ModelConfig(
        cell=cell,  # type: ignore[arg-type]
        input_size=len(data.feature_names),
        hidden_size=settings.hidden,
        output_size=len(data.classes),
        num_layers=settings.layers,
        head="classification",
        dropout=settings.dropout,
        features=data.feature_names,
        outputs=data.classes,
        horizon=1,
        normalization=data.normalization,
        extra={"task": "classify", "label": settings.label, "label_at": "last step of each sequence"},
    )

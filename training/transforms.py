"""Forecast target transforms, and the choice among them on the validation split.

A transform decides what the network's head predicts; the exported graph always maps back to
raw units, so a client never sees it. The choice reaches the model as `config.extra["transform"]`
(one of TRANSFORMS below, "none" when absent), which every forecasting model reads:

- `none`: the head predicts the (normalised) future values themselves.
- `diff`: the head predicts the change from the latest reading, y[t+k] - y[t]; the graph adds the
  latest raw reading back (`config.extra["anchor_inputs"]`: for each output column, the input
  column holding its target's latest reading). A trending series whose test values lie above
  everything seen in training then does not saturate a normalised model.
- `seasonal_diff` and `revin` (change from one season ago; per-window level/scale
  normalisation) need the model's own history of readings inside the graph, which the plain
  RecurrentModel does not carry: they are offered only for models that declare them.

`--transform auto` (the default) trains one model per supported transform and keeps the one with
the lowest validation MAE (streamed, raw units); the manifest records every candidate's score.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from models.config import Normalization
from training.data import ForecastData, TrainingError

TRANSFORM_KEY = "transform"
ANCHOR_KEY = "anchor_inputs"
ALL_TRANSFORMS = ("none", "diff", "seasonal_diff", "revin")
# What models.recurrent.RecurrentModel can compute inside its graph.
RECURRENT_TRANSFORMS = ("none", "diff")


def supported(data: ForecastData, model_transforms: tuple[str, ...] = RECURRENT_TRANSFORMS) -> list[str]:
    """The transforms this data and model allow: diff needs every target among the inputs."""
    targets_are_inputs = all(t in data.feature_names for t in data.target_names)
    return [t for t in model_transforms if t != "diff" or targets_are_inputs]


def candidates(setting: str, data: ForecastData, model_transforms: tuple[str, ...] = RECURRENT_TRANSFORMS) -> list[str]:
    """Transforms to train: every supported one for auto, else exactly the one asked for."""
    allowed = supported(data, model_transforms)
    if setting == "auto":
        return allowed
    if setting not in allowed:
        if setting == "diff":
            raise TrainingError("--transform diff needs every --target among the --features (its latest reading)")
        raise TrainingError(f"--transform {setting} is not available for this model; choose from {allowed} or auto")
    return [setting]


def _std(values: np.ndarray) -> np.ndarray:
    std = values.std(axis=0)
    return np.where(std > 1e-12, std, 1.0)


def prepare(data: ForecastData, transform: str) -> tuple[ForecastData, dict[str, Any]]:
    """(data whose training targets and output normalisation follow `transform`, config extras)."""
    if transform == "none":
        return replace(data, offset=None), {TRANSFORM_KEY: "none"}
    if transform != "diff":
        raise TrainingError(f"transform {transform!r} is not implemented for this model")
    h = data.horizon
    anchors = [data.feature_names.index(t) for t in data.target_names for _ in range(h)]
    offset = data.features[: len(data.y), anchors]  # [P, T*h]: latest reading of each column's target
    change = (data.y - offset)[data.train]
    norm = data.normalization
    normalization = Normalization(
        norm.input_mean,
        norm.input_std,
        tuple(float(v) for v in change.mean(axis=0)),
        tuple(float(v) for v in _std(change)),
    )
    return replace(data, offset=offset, normalization=normalization), {TRANSFORM_KEY: "diff", ANCHOR_KEY: anchors}

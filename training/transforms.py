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


# ------------------------------------------------------------------ logs (forecasters)
# Forecasting in logs (models/forecast_spec.py `log`) is offered when the training block shows a
# season whose amplitude grows with the level: amplitude ~ level^slope over the season's cycles,
# slope 1 for a multiplicative season, 0 for an additive one (the Box-Cox lambda is about
# 1 - slope). The level must move enough across the cycles for the slope to mean anything.
LOG_MIN_CYCLES = 4
LOG_MIN_SLOPE = 0.5
LOG_MIN_LEVEL_RATIO = 1.25
LOG_SETTINGS = ("auto", "yes", "no")


def multiplicative_season(y: np.ndarray, seasons: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """Whether the training readings `y` look multiplicative, with the evidence: the longest of
    `seasons` with LOG_MIN_CYCLES whole cycles in `y`; per cycle its mean (level) and the std of
    its readings around a straight line through them (amplitude, so a trend inside the cycle is
    not counted); the slope of ln(amplitude) on ln(level) and the ratio of the highest level to
    the lowest. `offered` when every reading is positive, the ratio is at least
    LOG_MIN_LEVEL_RATIO and the slope at least LOG_MIN_SLOPE."""
    y = np.asarray(y, dtype=np.float64)
    y = y[np.isfinite(y)]
    out: dict[str, Any] = {"offered": False, "season": None, "cycles": 0, "slope": None, "level_ratio": None}
    usable = [s for s in sorted(seasons) if s >= 2 and len(y) // s >= LOG_MIN_CYCLES]
    if not usable:
        out["reason"] = f"no season with {LOG_MIN_CYCLES} whole cycles in the training block"
        return out
    if y.min() <= 0:
        out["reason"] = "the series is not positive"
        return out
    season = usable[-1]
    cycles = len(y) // season
    blocks = y[len(y) - cycles * season :].reshape(cycles, season)  # the most recent whole cycles
    steps = np.arange(season, dtype=np.float64)
    design = np.stack([np.ones(season), steps - steps.mean()], axis=1)
    fitted = design @ np.linalg.lstsq(design, blocks.T, rcond=None)[0]
    amplitude = (blocks.T - fitted).std(axis=0)
    level = blocks.mean(axis=1)
    out.update(season=season, cycles=cycles, level_ratio=round(float(level.max() / level.min()), 4))
    if np.any(amplitude <= 1e-12 * level):
        out["reason"] = "a cycle without a seasonal swing"
        return out
    slope = float(np.polyfit(np.log(level), np.log(amplitude), 1)[0])
    out["slope"] = round(slope, 4)
    if out["level_ratio"] < LOG_MIN_LEVEL_RATIO:
        out["reason"] = f"the level moves too little across the cycles (ratio {out['level_ratio']:.3g})"
    elif slope < LOG_MIN_SLOPE:
        out["reason"] = f"the seasonal swing does not grow with the level (amplitude ~ level^{slope:.2f})"
    else:
        out["offered"] = True
        out["reason"] = f"the seasonal swing grows with the level (amplitude ~ level^{slope:.2f})"
    return out

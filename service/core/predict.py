"""Stateless prediction (v1: `POST /v1/models/{name}/predict`) and the v1 model documents,
independent of the wire. The transport (service/api/models.py and its fast path) validates the
body against its schema and encodes the answer; turning the validated body into arrays for
the model, running them and collecting the result happen here, once.

A prediction runs whole sequences from a given (default: fresh) state and keeps nothing: no
session is touched, so a session store outage does not stop it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.core.validate import (
    check_one_origin,
    check_reply_size,
    check_start_range,
    parse_batch,
    parse_start_time,
    parse_state,
)

if TYPE_CHECKING:
    from service.core.registry import LoadedModel, ModelRegistry
    from service.core.services import Services


@dataclass(frozen=True, slots=True)
class Prediction:
    """A decoded predict request: the model version that serves it, the sequences ([T_i, F]
    each, float32), the initial state ([rows, batch, width] per state tensor) and whether the
    final state goes back with the outputs."""

    model: LoadedModel
    sequences: list[np.ndarray]
    state: tuple[np.ndarray, ...]
    return_state: bool
    start: float | None = None  # unix seconds of the first reading (start_time), when given


@dataclass(frozen=True, slots=True)
class Predicted:
    """What a prediction produced: outputs per sequence ([T_i, outputs] each) and, when asked
    for, the final state by state name ([rows, batch, width] each)."""

    model: LoadedModel
    outputs: list[np.ndarray]
    state: dict[str, np.ndarray] | None
    # A model with quantile levels: per sequence [T_i, outputs, levels], and with the anomaly
    # levels per sequence [T_i, 4] (seen, outside_80, outside_95, score); None otherwise.
    quantiles: list[np.ndarray] | None = None
    anomaly: list[np.ndarray] | None = None
    # The first reading's time (start_time), which labels the forecasts (see `times`).
    start: float | None = None

    @property
    def labelled(self) -> bool:
        """Whether the forecasts have times (a start time, a known period, a forecaster)."""
        return labelled(self.model, self.start)

    @property
    def times(self) -> list[list[list[str]]] | None:
        """[sequence][time][lead] ISO times each forecast is for, built on each access (a
        transport may build them a slice at a time instead: models.times.forecast_times)."""
        return times_of(self.model, self.start, [o.shape[0] for o in self.outputs])


def prepare(svc: Services, name: str, body: Mapping[str, Any]) -> Prediction:
    """A predict body already checked against its schema (fields and their JSON types) -> the
    arrays for the model, with the model's own checks (feature count, limits, state shapes,
    one origin: explicit state or a start time). Pure and thread-safe: a transport may run it
    off the event loop for a large body. `body["inputs"]` may be any sequence of sequences
    (e.g. decoded lazily, one sequence at a time)."""
    model = svc.registry.get(name, body.get("version"))
    settings = svc.settings
    inputs: Sequence[Any] = body["inputs"]
    sequences = parse_batch(inputs, model.config, settings.max_batch_size, settings.max_steps_per_request, model.name)
    steps, outputs = sum(seq.shape[0] for seq in sequences), model.output_width
    figures = f"{len(sequences)} sequences, {steps:,} steps in all x {outputs} output values per step"
    check_reply_size(steps * outputs, settings.max_response_values, figures)
    state, start_time = body.get("state"), body.get("start_time")
    check_one_origin(state, start_time)
    start = None
    if state is not None:
        initial = parse_state(state, model.config, len(sequences))
    else:
        start = parse_start_time(start_time, day_first=model.day_first)
        longest = max((seq.shape[0] for seq in sequences), default=0)
        check_start_range(start, model.period_seconds, longest - 1 + model.config.horizon)
        initial = model.initial_state(len(sequences), start)
    return Prediction(model, sequences, initial, bool(body.get("return_state", False)), start)


def labelled(model: LoadedModel, start: float | None) -> bool:
    """Whether forecasts from `start` have times: a start time, a known sampling period and
    a regression head."""
    return start is not None and model.period_seconds is not None and model.config.head == "regression"


def times_of(model: LoadedModel, start: float | None, readings: list[int]) -> list[list[list[str]]] | None:
    """[sequence][time][lead] times each forecast is for (reading i at start + i periods forecasts
    readings i+1..i+h); None without a start time or a known sampling period."""
    if start is None or model.period_seconds is None or not labelled(model, start):
        return None
    from models.times import forecast_times

    return [forecast_times(start, n, model.config.horizon, model.period_seconds) for n in readings]


def step_times(model: LoadedModel, start: float | None, first: int, readings: int) -> list[list[str]] | None:
    """[time][lead] times the forecasts at readings first..first+readings-1 of a session that
    started at `start` are for: the same labels predict gives those rows of the whole sequence.
    None without a start time or a known period, and when a stream has run on past year 9999
    (its step was valid; only its labels cannot be written)."""
    period = model.period_seconds
    if start is None or period is None or model.config.head != "regression":
        return None
    from models.times import TimeRangeError, forecast_times

    try:
        return forecast_times(start, readings, model.config.horizon, period, first)
    except TimeRangeError:
        return None


async def predict(svc: Services, request: Prediction) -> Predicted:
    """Run a prepared prediction. Sequences of equal length go through the model's batcher as
    one call (joining other requests' calls); a ragged batch as one call per sequence, run
    concurrently, their final states put back together in the batch's order."""
    model, sequences, state = request.model, request.sequences, request.state
    batcher = svc.batcher_for(model)
    if len({seq.shape[0] for seq in sequences}) == 1:
        stacked = sequences[0][None] if len(sequences) == 1 else np.stack(sequences)
        outputs, final = await batcher.run(stacked, state)
        per_seq = list(outputs)
    else:
        results = await asyncio.gather(
            *(batcher.run(seq[None], tuple(s[:, i : i + 1] for s in state)) for i, seq in enumerate(sequences))
        )
        per_seq = [out[0] for out, _ in results]
        final = tuple(np.concatenate([st[k] for _, st in results], axis=1) for k in range(len(state)))
    named = dict(zip(model.state_names, final, strict=True)) if request.return_state else None
    if not model.extra_outputs:
        return Predicted(model, per_seq, named, start=request.start)
    parts = [model.unpack(rows) for rows in per_seq]
    quantiles = [q for _, q, _ in parts] if model.quantile_keys else None
    anomaly = [a for _, _, a in parts] if model.anomaly else None
    forecasts = [o for o, _, _ in parts]
    return Predicted(model, forecasts, named, quantiles, anomaly, request.start)  # type: ignore[arg-type]


def model_info(registry: ModelRegistry, name: str) -> dict[str, Any]:
    """One model's v1 document: every loaded version described; `latest`: the highest loaded
    version; `default`: the one unpinned requests get (the highest promoted by its quality gate;
    see service/core/registry.py), and why; `warning` when no version is promoted."""
    versions = [registry.get(name, v).describe() for v in registry.versions(name)]
    default, reason = registry.default_version(name)
    info: dict[str, Any] = {"name": name, "latest": versions[-1]["version"], "default": default}
    info["default_reason"] = reason
    if not registry.get(name).promoted:
        info["warning"] = reason
    info["versions"] = versions
    return info


def model_list(registry: ModelRegistry) -> dict[str, Any]:
    """Every loaded model's v1 document."""
    return {"models": [model_info(registry, name) for name in registry.names()]}

"""The description of a served model: architecture, feature names and normalisation.

It is written into every exported ONNX file's metadata (and the repository manifest) so a
served file describes itself: the service needs nothing but the file to validate inputs,
shape state tensors and label outputs. Pure Python on purpose: the serving image imports
this module without torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np

from models.times import calendar_index

Cell = Literal["lstm", "gru"]
Head = Literal["regression", "classification"]

METADATA_KEY = "seqserve.config"
FORMAT_VERSION = 1
# The quantile levels whose intervals flag a reading (80 % and 95 %, central): a model whose
# levels hold all four carries the previous step's forecast of them and outputs "anomaly".
ANOMALY_LEVELS = (0.025, 0.1, 0.9, 0.975)
DEFAULT_QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.975)
# Columns of the graph's "anomaly" output [B, T, 4], one row per reading.
ANOMALY_COLUMNS = ("seen", "outside_80", "outside_95", "score")


class ConfigError(ValueError):
    """A model config that cannot describe a working model."""


@dataclass(frozen=True)
class PositiveTarget:
    """A model that accepts only positive readings of one input column (its target): `reason`
    says why, e.g. "forecasts in logs" (models/forecast_spec.py positive_reason)."""

    index: int
    name: str
    reason: str


@dataclass(frozen=True)
class Normalization:
    """Affine maps the exported graph applies itself: z = (x - mean) / std on the way in,
    y = y_norm * std + mean on the way out (regression only). Fitted on training data."""

    input_mean: tuple[float, ...]
    input_std: tuple[float, ...]
    output_mean: tuple[float, ...] = ()
    output_std: tuple[float, ...] = ()

    @classmethod
    def identity(cls, input_size: int, output_size: int) -> Normalization:
        return cls((0.0,) * input_size, (1.0,) * input_size, (0.0,) * output_size, (1.0,) * output_size)


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor of the graph: input `<name>0`, output `<name>n`, float32 of
    shape [rows, batch, width]. h and c are [num_layers, batch, hidden]; a forecaster's own
    history of raw readings is e.g. [1, batch, K]. Stores keep [rows, width] per session."""

    name: str  # graph input "<name>0", output "<name>n"; also the key in state export/import
    rows: int  # axis 0 (layers for h/c, 1 for a history ring)
    width: int  # axis 2 (hidden size for h/c, ring length for a history)
    doc: str = ""  # what the tensor holds, shown by the manifest and /v1/models
    fill: float = 0.0  # every element of a fresh session's tensor (before any reading)


@dataclass(frozen=True)
class Clock:
    """How a client's `start_time` (the time of a session's first reading) sets the phase state,
    so the graph knows the time of day / week without the client computing features.

    phase = floor((start_time - epoch) / period_seconds) mod cycle, written into every element
    of state `state` of a fresh session; without a start_time the state keeps its `fill`
    (which the graph reads as "phase unknown"). Monthly, quarterly and yearly periods count
    calendar periods instead (models/times.py `calendar_index`): the phase is the number of
    months (quarters, years) from the one holding the reading at epoch + period/2 (training's
    first row), so any day of a month gets that month's phase, as `forecast_times` labels it;
    seconds over a mean month would drift a month-end date into the next month."""

    state: str  # name of the StateSpec holding the phase
    period_seconds: float  # sampling period learned from --time-column at training
    epoch: float  # unix time (seconds) of a reading whose phase is 0
    cycle: int  # the phase wraps at this many readings (the longest season)

    def phase(self, start_time: float) -> float:
        index = calendar_index(start_time, self.period_seconds)
        if index is not None:
            # Rounded to the second: epoch + period/2 is the first row up to float error.
            anchor = calendar_index(round(self.epoch + self.period_seconds / 2), self.period_seconds)
            assert anchor is not None
            steps = index - anchor
        else:
            steps = int((start_time - self.epoch) // self.period_seconds)
        return float(steps % self.cycle)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network and to call it correctly.

    `outputs` names each output column: for forecasting `<target>@t+<k>`, for classification the
    class labels (the outputs are then per-step logits).
    """

    cell: Cell
    input_size: int
    hidden_size: int
    output_size: int
    num_layers: int = 1
    head: Head = "regression"
    dropout: float = 0.0
    features: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    horizon: int = 1
    normalization: Normalization | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # State tensors beyond the cell's h (and c), in graph order after them (e.g. a history ring).
    extra_states: tuple[StateSpec, ...] = ()
    # How `start_time` initialises a phase state; None when the model has no notion of time.
    clock: Clock | None = None
    # Quantile levels of the graph's extra output "quantiles" [B, T, output_size, levels],
    # ascending in (0, 1), monotone in level for every output; () for point forecasts only.
    quantiles: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.cell not in ("lstm", "gru"):
            raise ConfigError(f"cell must be 'lstm' or 'gru', got {self.cell!r}")
        if self.head not in ("regression", "classification"):
            raise ConfigError(f"head must be 'regression' or 'classification', got {self.head!r}")
        for name in ("input_size", "hidden_size", "output_size", "num_layers", "horizon"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.features and len(self.features) != self.input_size:
            raise ConfigError(f"{len(self.features)} feature names for input_size {self.input_size}")
        if self.outputs and len(self.outputs) != self.output_size:
            raise ConfigError(f"{len(self.outputs)} output names for output_size {self.output_size}")
        names = [s.name for s in self.state_specs]
        if len(set(names)) != len(names) or any(not n.isidentifier() for n in names):
            raise ConfigError(f"state names must be distinct identifiers, got {names}")
        if any(s.rows < 1 or s.width < 1 for s in self.extra_states):
            raise ConfigError("every state tensor needs rows >= 1 and width >= 1")
        if self.clock is not None and self.clock.state not in names:
            raise ConfigError(f"clock state {self.clock.state!r} is not one of {names}")
        levels = self.quantiles
        if levels:
            if self.head != "regression":
                raise ConfigError("quantiles need a regression head")
            if any(not 0.0 < q < 1.0 for q in levels) or list(levels) != sorted(set(levels)):
                raise ConfigError(f"quantile levels must be distinct, ascending and inside (0, 1), got {list(levels)}")
        norm = self.normalization
        if norm is not None:
            if len(norm.input_mean) != self.input_size or len(norm.input_std) != self.input_size:
                raise ConfigError("input normalisation does not match input_size")
            if norm.output_mean and len(norm.output_mean) != self.output_size:
                raise ConfigError("output normalisation does not match output_size")
            if any(s <= 0 for s in (*norm.input_std, *norm.output_std)):
                raise ConfigError("normalisation std must be positive")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.features or tuple(f"x{i}" for i in range(self.input_size))

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.outputs or tuple(f"y{i}" for i in range(self.output_size))

    @property
    def anomaly(self) -> bool:
        """Whether the graph flags readings (its levels hold ANOMALY_LEVELS): output "anomaly"."""
        return bool(self.quantiles) and all(q in self.quantiles for q in ANOMALY_LEVELS)

    @property
    def extra_outputs(self) -> tuple[str, ...]:
        """Graph outputs after the states: "quantiles" (and "anomaly") when the model has levels."""
        if not self.quantiles:
            return ()
        return ("quantiles", "anomaly") if self.anomaly else ("quantiles",)

    @property
    def quantile_keys(self) -> tuple[str, ...]:
        """The levels as the wire names them ("0.025", "0.1", ...): shortest exact decimal."""
        return tuple(repr(float(q)) for q in self.quantiles)

    @property
    def max_chunk_steps(self) -> int:
        """The most time steps one call of this model's graph should take (0: any): a forecaster
        with the robust state update solves a chunk as a fixed point whose cost grows with the
        square of its length (models/forecast_spec.py ROBUST_CHUNK_STEPS); models/chunks.py feeds
        longer work in chunks of this many, carrying the state, which gives the same numbers."""
        spec = self.extra.get("forecaster")
        if not isinstance(spec, dict) or not self.anomaly:
            return 0
        from models.forecast_spec import ROBUST_CHUNK_STEPS, ForecastSpec

        return ROBUST_CHUNK_STEPS if ForecastSpec.from_dict(spec).robust(self.anomaly) else 0

    @property
    def positive_target(self) -> PositiveTarget | None:
        """The input column that must be positive, or None. Written by training as
        `extra["positive_target"]`; a manifest written before that is read from its forecaster
        spec (`log`, the multiplicative Holt-Winters transform), so older models are checked too."""
        cached = self.__dict__.get("_positive_target", False)
        if cached is not False:
            return cast("PositiveTarget | None", cached)
        found: PositiveTarget | None = None
        given = self.extra.get("positive_target")
        spec = self.extra.get("forecaster")
        if isinstance(given, dict):
            found = PositiveTarget(int(given["index"]), str(given["name"]), str(given["reason"]))
        elif isinstance(spec, dict):
            from models.forecast_spec import positive_reason

            reason = positive_reason(bool(spec.get("log", False)), str(spec.get("transform", "")))
            index = int(spec.get("target_index", 0))
            if reason is not None and 0 <= index < self.input_size:
                name = self.features[index] if self.features else f"column {index}"
                found = PositiveTarget(index, name, reason)
        object.__setattr__(self, "_positive_target", found)  # frozen: computed once per config
        return found

    @property
    def state_specs(self) -> tuple[StateSpec, ...]:
        """Every state tensor, in the order the ONNX graph takes them: h (, c), then extras."""
        cell = ("h", "c") if self.cell == "lstm" else ("h",)
        own = tuple(StateSpec(n, self.num_layers, self.hidden_size, f"{self.cell.upper()} {n} per layer") for n in cell)
        return own + self.extra_states

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the recurrent state tensors, in the order the ONNX graph takes them."""
        return tuple(s.name for s in self.state_specs)

    def state_shape(self, batch: int) -> tuple[int, int, int]:
        """Shape of the cell's h/c tensors; see state_shapes for every tensor."""
        return (self.num_layers, batch, self.hidden_size)

    def state_shapes(self, batch: int) -> tuple[tuple[int, int, int], ...]:
        return tuple((s.rows, batch, s.width) for s in self.state_specs)

    def initial_state(self, batch: int, start_time: float | None = None) -> tuple[np.ndarray, ...]:
        """A fresh session's state, float32 [rows, batch, width] each; `start_time` (unix
        seconds of the first reading) sets the clock's phase state when the model has one."""
        out = []
        for spec in self.state_specs:
            value = spec.fill
            if self.clock is not None and start_time is not None and spec.name == self.clock.state:
                value = self.clock.phase(start_time)
            out.append(np.full((spec.rows, batch, spec.width), value, np.float32))
        return tuple(out)

    def with_normalization(self, normalization: Normalization | None) -> ModelConfig:
        return replace(self, normalization=normalization)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        data.pop("format_version", None)
        data["extra_states"] = tuple(StateSpec(**spec) for spec in data.get("extra_states", ()))
        if data.get("clock") is not None:
            data["clock"] = Clock(**data["clock"])
        norm = data.get("normalization")
        if norm is not None:
            data["normalization"] = Normalization(**{k: tuple(v) for k, v in norm.items()})
        for key in ("features", "outputs", "quantiles"):
            if key in data:
                data[key] = tuple(data[key])
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config fields: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            return cls.from_dict(json.loads(text))
        except (TypeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"invalid model config: {exc}") from exc

"""The description of a served model: architecture, feature names and normalisation.

It is written into every exported ONNX file's metadata (and the repository manifest) so a
served file describes itself: the service needs nothing but the file to validate inputs,
shape state tensors and label outputs. Pure Python on purpose: the serving image imports
this module without torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Cell = Literal["lstm", "gru"]
Head = Literal["regression", "classification"]

METADATA_KEY = "seqserve.config"
FORMAT_VERSION = 1


class ConfigError(ValueError):
    """A model config that cannot describe a working model."""


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
    def state_names(self) -> tuple[str, ...]:
        """Names of the recurrent state tensors, in the order the ONNX graph takes them."""
        return ("h", "c") if self.cell == "lstm" else ("h",)

    def state_shape(self, batch: int) -> tuple[int, int, int]:
        return (self.num_layers, batch, self.hidden_size)

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
        norm = data.get("normalization")
        if norm is not None:
            data["normalization"] = Normalization(**{k: tuple(v) for k, v in norm.items()})
        for key in ("features", "outputs"):
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

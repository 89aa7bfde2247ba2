"""Checking a served file against the equations: ONNX Runtime vs the NumPy reference.

`seqserve verify` runs this over a model repository so an operator can confirm, before or
after deployment, that every file computes what its cell equations say, in one pass, and
streamed one step at a time with carried state. Needs the `onnx` package (the [train] extra)
to read weights out of the graph; onnxruntime and numpy otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.config import ModelConfig
from models.reference import ForecasterReference, load_reference
from models.reference import tolerance as relative_tolerance


@dataclass
class Verdict:
    path: Path
    max_error: float
    tolerance: float
    streamed_error: float
    quantile_error: float = 0.0  # quantiles (models with levels), against quantile_tolerance
    quantile_tolerance: float = 0.0

    @property
    def ok(self) -> bool:
        quantiles_ok = self.quantile_error <= self.quantile_tolerance
        return self.max_error <= self.tolerance and self.streamed_error <= self.tolerance and quantiles_ok


def _inputs(config: ModelConfig, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    norm = config.normalization
    mean = np.asarray(norm.input_mean) if norm else 0.0
    std = np.asarray(norm.input_std) if norm else 1.0
    return (rng.standard_normal((batch, steps, config.input_size)) * std + mean).astype(np.float32)


def verify_file(path: str | Path, steps: int = 64, batch: int = 3, seed: int = 0) -> Verdict:
    import onnxruntime as ort

    reference = load_reference(path)
    config = reference.config
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = ["input", *(f"{s}0" for s in config.state_names)]
    outputs = ["output", *(f"{s}n" for s in config.state_names)]
    x = _inputs(config, batch, steps, np.random.default_rng(seed))
    zero = list(config.initial_state(batch))
    want, _ = reference.run(x)
    got = session.run(outputs, dict(zip(inputs, [x, *zero], strict=True)))[0]
    quantile_error = quantile_tolerance = 0.0
    if config.quantiles and isinstance(reference, ForecasterReference):  # quantiles in one pass too
        full = reference.run_all(x)["quantiles"]
        quantiles = session.run(["quantiles"], dict(zip(inputs, [x, *zero], strict=True)))[0]
        quantile_error, quantile_tolerance = float(np.abs(quantiles - full).max()), relative_tolerance(full)
    state, streamed = zero, []
    for t in range(steps):
        y, *state = session.run(outputs, dict(zip(inputs, [x[:, t : t + 1], *state], strict=True)))
        streamed.append(y)
    tolerance = relative_tolerance(want)
    return Verdict(
        Path(path),
        float(np.abs(got - want).max()),
        tolerance,
        float(np.abs(np.concatenate(streamed, axis=1) - want).max()),
        quantile_error,
        quantile_tolerance,
    )

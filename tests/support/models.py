"""Small exported models in a temporary repository, shared by service and e2e tests."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from models.config import Clock, ModelConfig, Normalization, StateSpec
from models.export import export_onnx
from models.recurrent import RecurrentModel

GATE_KEY = "seqserve.gate"


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


def gate(promoted: bool, model: float = 1.0, baseline: float = 2.0) -> dict:
    """A quality-gate verdict as training publishes it (manifest.json and ONNX metadata)."""
    return {
        "promoted": promoted,
        "reason": "beats the best baseline" if promoted else "worse than seasonal naive",
        "metric": "mae",
        "model": model,
        "best_baseline": "seasonal_naive",
        "best_baseline_value": baseline,
    }


def export_model(
    repository: Path,
    name: str,
    version: int,
    cell: str,
    seed: int = 0,
    gate_verdict: dict | None = None,
    manifest: dict | None = None,
    **kwargs,
) -> Path:
    """Export a random model; `gate_verdict` goes into the ONNX metadata, `manifest` into
    manifest.json next to it (both absent: an older file, which counts as promoted)."""
    torch.manual_seed(seed)
    model = RecurrentModel(make_config(cell, **kwargs)).eval()
    path = repository / name / str(version) / "model.onnx"
    metadata = {GATE_KEY: json.dumps(gate_verdict)} if gate_verdict is not None else None
    export_onnx(model, path, metadata=metadata)
    if manifest is not None:
        (path.parent / "manifest.json").write_text(json.dumps(manifest))
    return path


def make_repository(root: Path) -> Path:
    """lstm (v1, v2), gru (v1): enough to test routing, versions, and both cells."""
    export_model(root, "lstm", 1, "lstm", seed=1)
    export_model(root, "lstm", 2, "lstm", seed=2)
    export_model(root, "gru", 1, "gru", seed=3)
    return root


def raw_inputs(rng, steps: int, batch: int | None = None):
    """Inputs in raw units around the normalisation means."""
    shape = (steps, 3) if batch is None else (batch, steps, 3)
    return rng.standard_normal(shape) * np.array([5.0, 100.0, 7.0]) + np.array([20.0, 500.0, 12.0])


# ---------------------------------------------------------------------------- history + clock

RING = 7  # readings the history state keeps
CYCLE = 5  # the clock's phase wraps here
PERIOD = 1800.0  # seconds between readings
EPOCH = 1_388_534_400.0  # 2014-01-01T00:00:00Z has phase 0


def ring_config(cell: str, layers: int = 1, hidden: int = 6) -> ModelConfig:
    """A model whose state tensors all differ in shape: h (, c) [layers, B, hidden], a ring of
    the last RING raw `load` readings [1, B, RING] and a phase clock [1, B, 1] (-1: unknown)."""
    base = make_config(cell, layers, hidden)
    return replace(
        base,
        extra={"test_model": "ring_clock"},
        extra_states=(
            StateSpec("ring", 1, RING, "the last raw load readings, oldest first", 0.0),
            StateSpec("clock", 1, 1, "phase of the next reading within the cycle; -1 unknown", -1.0),
        ),
        clock=Clock("clock", PERIOD, EPOCH, CYCLE),
    )


class RingClockModel(nn.Module):
    """LSTM/GRU plus two state tensors kept inside the graph, so the service's handling of any
    state layout is tested with a graph that truly depends on them: the output adds the
    reading RING steps back (taken from the ring, shifted with Concat/Slice), the previous
    reading, and a term of the phase (advanced mod CYCLE per reading; 0 while unknown)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.core = RecurrentModel(replace(config, extra_states=(), clock=None))
        self.mix = nn.Parameter(torch.tensor([[0.7, -0.4], [0.25, 0.5]]))  # lag RING, lag 1 -> outputs
        self.phase_weight = nn.Parameter(torch.tensor([3.0, -2.0]))

    def init_state(self, batch: int, device: torch.device | None = None) -> tuple[Tensor, ...]:
        return tuple(torch.from_numpy(s) for s in self.config.initial_state(batch))

    def forward(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        cells = len(state) - 2
        ring, clock = state[cells], state[cells + 1]
        y, cell_state = self.core(x, tuple(state[:cells]))
        load = x[:, :, 1]  # [B, T]
        full = torch.cat([ring[0], load], dim=1)  # [B, RING + T]
        lag_ring = full[:, :-RING]  # reading RING steps before each step
        lag_one = full[:, RING - 1 : -1]
        new_ring = full[:, -RING:].unsqueeze(0)
        start = clock[0]  # [B, 1]
        steps = torch.cumsum(torch.ones_like(load), dim=1) - 1.0  # 0..T-1
        pos = start + steps
        phase = pos - torch.floor(pos / CYCLE) * CYCLE
        known = (start >= 0).to(x.dtype)
        phase_term = known.unsqueeze(-1) * torch.cos(phase * (2 * np.pi / CYCLE)).unsqueeze(-1) * self.phase_weight
        lags = torch.stack([lag_ring, lag_one], dim=-1) @ self.mix
        end = start + load.shape[1]
        end = end - torch.floor(end / CYCLE) * CYCLE
        new_clock = (known * end + (1 - known) * start).unsqueeze(0)
        return y + lags + phase_term, (*cell_state, new_ring, new_clock)


def export_ring_model(repository: Path, name: str, version: int, cell: str, seed: int = 0, **kwargs) -> Path:
    torch.manual_seed(seed)
    model = RingClockModel(ring_config(cell, **kwargs)).eval()
    path = repository / name / str(version) / "model.onnx"
    export_onnx(model, path)
    check_ring_export(model, path)
    return path


def check_ring_export(model: RingClockModel, path: Path) -> None:
    """ONNX Runtime computes what torch computes, from fresh and from random states."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cfg = model.config
    rng = np.random.default_rng(0)
    for batch, steps, fresh in ((1, 1, True), (3, 9, False), (2, 20, False)):
        x = raw_inputs(rng, steps, batch).astype(np.float32)
        state = list(cfg.initial_state(batch, None if fresh else EPOCH + 3 * PERIOD))
        if not fresh:
            state = [(s + rng.integers(0, 2, s.shape)).astype(np.float32) for s in state]
        with torch.no_grad():
            y, new = model(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state))
        feeds = {"input": x, **{f"{n}0": s for n, s in zip(cfg.state_names, state, strict=True)}}
        got = session.run(["output", *(f"{n}n" for n in cfg.state_names)], feeds)
        for want, have in zip([y, *new], got, strict=True):
            want = want.numpy()
            assert want.shape == have.shape, (want.shape, have.shape)
            assert np.abs(want - have).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


def make_ring_repository(root: Path) -> Path:
    """ring_lstm (2 layers) and ring_gru: h/c, a history ring and a clock, all shaped differently;
    forecaster_lstm and forecaster_gru: the project's history-state forecaster."""
    export_ring_model(root, "ring_lstm", 1, "lstm", seed=4, layers=2, hidden=6)
    export_ring_model(root, "ring_gru", 1, "gru", seed=5, layers=1, hidden=5)
    export_forecaster(root, "forecaster_lstm", 1, "lstm", seed=6, layers=2)
    export_forecaster(root, "forecaster_gru", 1, "gru", seed=7)
    # Holt-Winters baseline: its level and seasonal components in a `smoothed` state of its own
    export_forecaster(root, "forecaster_hw", 1, "gru", seed=8, transform="holt_winters_mult")
    return root


# ---------------------------------------------------------------------------- the real forecaster

FORECAST_SEASONS = (4, 12)
FORECAST_PERIOD = 3600.0


def forecast_series(n: int, seed: int = 0) -> np.ndarray:
    """[n, 2]: a load-like target (trend, two seasons, noise) and a covariate."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 5000 + 3.0 * t + 400 * np.sin(2 * np.pi * t / 4) + 250 * np.cos(2 * np.pi * t / 12)
    y = y + 30 * rng.standard_normal(n)
    return np.stack([y, np.cos(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(n)], axis=1)


def export_forecaster(
    repository: Path,
    name: str,
    version: int,
    cell: str,
    seed: int = 0,
    layers: int = 1,
    transform: str = "seasonal_diff",
) -> Path:
    """models.forecaster.Forecaster (ring, count and phase states next to h (, c); a clock),
    with a random head so the network's part of the forecast is not zero."""
    from models.forecast_spec import make_spec
    from models.forecaster import Forecaster, fit_spec, forecaster_config

    spec = make_spec(
        target_index=0, num_features=2, horizon=2, seasons=FORECAST_SEASONS, transform=transform, phase=True
    )
    base = ModelConfig(
        cell=cell,  # type: ignore[arg-type]
        input_size=2,
        hidden_size=8,
        output_size=2,
        num_layers=layers,
        features=("y", "x"),
        outputs=("y@t+1", "y@t+2"),
        horizon=2,
    )
    clock = Clock("phase", FORECAST_PERIOD, EPOCH, spec.cycle)
    config = fit_spec(forecaster_config(base, spec, clock), forecast_series(240), 160)
    torch.manual_seed(seed)
    model = Forecaster(config)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.3)
        model.head.bias.normal_(0.0, 0.3)
    path = repository / name / str(version) / "model.onnx"
    export_onnx(model.eval(), path)
    return path


def export_electricity(repository: Path, name: str = "electricity", version: int = 1, seed: int = 11) -> Path:
    """A small stand-in for the model `make run` trains by default (the `electricity` preset):
    the project's forecaster with one feature (half-hourly demand in MW), one step ahead,
    daily and weekly seasons, and a phase clock that `start_time` sets. Random head weights;
    quality does not matter where it is used (protocol and documentation tests)."""
    from models.forecast_spec import make_spec
    from models.forecaster import Forecaster, fit_spec, forecaster_config
    from tests.support.demand import electricity

    spec = make_spec(
        target_index=0, num_features=1, horizon=1, seasons=(48, 336), transform="seasonal_diff", phase=True
    )
    base = ModelConfig(
        cell="lstm",
        input_size=1,
        hidden_size=8,
        output_size=1,
        features=("demand_mw",),
        outputs=("demand_mw@t+1",),
        horizon=1,
    )
    clock = Clock("phase", 1800.0, EPOCH, spec.cycle)
    series = electricity()[:2000].astype(np.float64)
    config = fit_spec(forecaster_config(base, spec, clock), series, 1500)
    torch.manual_seed(seed)
    model = Forecaster(config)
    path = repository / name / str(version) / "model.onnx"
    export_onnx(model.eval(), path)
    return path.parent


def export_wide(repository: Path, name: str = "wide", outputs: int = 48, hidden: int = 8) -> Path:
    """One feature in, `outputs` values out per step (a horizon-48 forecaster's shape): a small
    request asks for a reply many times its size."""
    torch.manual_seed(0)
    config = ModelConfig(
        cell="lstm",
        input_size=1,
        hidden_size=hidden,
        output_size=outputs,
        features=("y",),
        outputs=tuple(f"y@t+{k + 1}" for k in range(outputs)),
        normalization=Normalization((0.0,), (1.0,), (0.0,) * outputs, (1.0,) * outputs),
    )
    path = repository / name / "1" / "model.onnx"
    export_onnx(RecurrentModel(config).eval(), path)
    return path

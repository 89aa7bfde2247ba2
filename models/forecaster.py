"""A streamable forecaster that carries its own history: ring + count + phase next to h (and c).

The client sends only raw readings. Everything else happens in the graph, vectorised over the
chunk's T steps so training and serving run the same code:

    full  = concat(ring, y[0..T-1])                 [B, K+T]   (ring = the K readings before)
    lag L = full[:, K-L : K+T-L]                    static Slice bounds, any T
    count = min(count0 + 1..T, K+1)                 which lags are real yet (warm-up)
    phase = (phase0 + 1..T) mod cycle               unknown (-1) stays unknown

From these it builds the baseline of every lead (models/forecast_spec.py: last value, seasonal
naive, "last season plus this season's change", mean, or window mean), the analog columns, and
the RNN inputs (phase sin/cos and blocks, two recent differences, a warm-up flag). A native
nn.LSTM/nn.GRU reads the inputs; a zero-initialised linear head turns h into a bias and one
weight per analog column, so an untrained model answers exactly its baseline.

Unknown phase (no start_time): the phase inputs are zero and an "unknown" flag is 1. Training
hides the phase from a share of its streams (PHASE_DROPOUT), so one model serves both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.config import Clock, ModelConfig, StateSpec
from models.forecast_spec import ForecastSpec

State = tuple[Tensor, ...]
# The order the `pending` state holds the anomaly levels: both lower bounds (80 %, 95 %), then
# both upper bounds, so each pair is one slice.
PENDING_LEVELS = (0.1, 0.025, 0.9, 0.975)
REVIN_EPS = 1e-2  # window std floor, in units of the training std
# Local scale floor (a constant series has no changes): this share of the latest reading's size,
# plus LOCAL_EPS_STD training stds for a series at zero. Relative to the series itself, so the
# floor scales with the series like everything else.
LOCAL_EPS = 1e-3
LOCAL_EPS_STD = 1e-6


def history_states(spec: ForecastSpec, anomaly: bool = False) -> tuple[StateSpec, ...]:
    """The state tensors a forecaster carries after h (and c); with `anomaly` also the
    quantiles it forecast for the next reading, so the next step can flag that reading."""
    states = [
        StateSpec("ring", 1, spec.ring, f"last {spec.ring} raw readings of the target, oldest first"),
        StateSpec("count", 1, 1, f"readings seen, capped at {spec.ring + 1} (warm-up)"),
    ]
    if spec.cycle:
        states.append(StateSpec("phase", 1, 1, f"phase of the next reading in a {spec.cycle}-cycle; -1 unknown", -1.0))
    if anomaly:
        levels = ", ".join(str(q) for q in PENDING_LEVELS)
        states.append(StateSpec("pending", 1, len(PENDING_LEVELS), f"quantiles {levels} forecast for the next reading"))
    return tuple(states)


def forecaster_config(base: ModelConfig, spec: ForecastSpec, clock: Clock | None) -> ModelConfig:
    """`base` (cell, sizes, names, quantile levels) with the forecaster's states, spec and clock."""
    from dataclasses import replace

    if base.quantiles and spec.quantile_shift and len(spec.quantile_shift[0]) != len(base.quantiles):
        raise ValueError(f"{len(spec.quantile_shift[0])} quantile shifts for {len(base.quantiles)} levels")
    extra = {**base.extra, "forecaster": spec.to_dict(), "transform": spec.transform}
    states = history_states(spec, base.anomaly)
    return replace(base, extra=extra, extra_states=states, clock=clock if spec.cycle else None)


def quantile_tables(levels: tuple[float, ...]) -> np.ndarray:
    """[Q, Q] signed accumulation matrix: offset_j = sum_i softplus(r_i) * M[i, j], the
    cumulative softplus offsets of forecast_spec outward from the point (0 for the level 0.5)."""
    n = len(levels)
    accumulate = np.zeros((n, n), np.float32)
    for j, tau in enumerate(levels):
        for i, other in enumerate(levels):
            if 0.5 < other <= tau:
                accumulate[i, j] = 1.0
            elif tau <= other < 0.5:
                accumulate[i, j] = -1.0
    return accumulate


def monotone_shift(shift: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Calibration shifts [H, Q] made non-decreasing in level, outward from the middle so each
    change only widens: above the median a running maximum upward, below it a running minimum
    downward (a lower bound only moves down). With offsets that are non-decreasing too, the
    quantiles are then monotone whatever the readings."""
    out = np.array(shift, dtype=np.float64, copy=True)
    above = [j for j, tau in enumerate(levels) if tau >= 0.5]
    below = [j for j, tau in enumerate(levels) if tau < 0.5]
    for prev, j in itertools.pairwise(above):
        out[..., j] = np.maximum(out[..., j], out[..., prev])
    anchor = above[0] if above else None
    for j in reversed(below):
        if anchor is not None:
            out[..., j] = np.minimum(out[..., j], out[..., anchor])
        anchor = j
    return np.maximum.accumulate(out, axis=-1)  # already so, unless no level is at or above 0.5


def quantile_bias(levels: tuple[float, ...]) -> np.ndarray:
    """[Q] head bias whose offsets are the normal quantiles (in units of the residual scale):
    an untrained quantile head answers a Gaussian band around the point forecast."""
    from statistics import NormalDist

    normal = NormalDist()
    bias = np.zeros(len(levels), np.float32)
    for j, tau in enumerate(levels):
        if tau == 0.5:
            continue
        inner = [q for q in levels if (0.5 < q < tau) or (tau < q < 0.5)]
        nearest = (max(inner) if tau > 0.5 else min(inner)) if inner else 0.5
        step = abs(normal.inv_cdf(tau) - normal.inv_cdf(nearest))
        bias[j] = math.log(math.expm1(max(step, 1e-3)))  # softplus^-1
    return bias


def spec_of(config: ModelConfig) -> ForecastSpec | None:
    data = config.extra.get("forecaster")
    return ForecastSpec.from_dict(data) if data else None


class Forecaster(nn.Module):
    # Buffers (register_buffer), declared so type checkers know them as tensors; some exist
    # only for some specs.
    column_inv_std: torch.Tensor
    scale: torch.Tensor
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    block_ids: torch.Tensor
    window_ones: torch.Tensor
    back: torch.Tensor
    newer: torch.Tensor
    older: torch.Tensor
    older_needs: torch.Tensor
    seasonal_lag: torch.Tensor
    seasonal_multiple: torch.Tensor
    quantile_accumulate: torch.Tensor
    quantile_shift: torch.Tensor
    # Set by training (training/forecaster_run.py) and written into the manifest.
    start_time: float | None
    transform_choice: dict[str, Any]
    calibration: dict[str, Any]  # set by training/calibrate.py (levels, shifts, coverage)
    learned: dict[str, Any]  # whether the network beat its formula on validation (verdict)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        spec = spec_of(config)
        if spec is None:
            raise ValueError("config has no forecaster spec")
        self.config = config
        self.spec = spec
        rnn_cls = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            input_size=spec.rnn_inputs,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, spec.head_outputs)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        h, c = spec.horizon, len(spec.columns)
        levels = config.quantiles
        if levels:
            # A second head after the point head (the reference finds them in this order).
            self.quantile_head = nn.Linear(config.hidden_size, h * len(levels))
            nn.init.zeros_(self.quantile_head.weight)
            with torch.no_grad():
                self.quantile_head.bias.copy_(torch.from_numpy(np.tile(quantile_bias(levels), h)))
            self.register_buffer("quantile_accumulate", torch.from_numpy(quantile_tables(levels)))
            shift = np.asarray(spec.quantile_shift or np.zeros((h, len(levels)))).reshape(h, -1)
            shift = monotone_shift(shift, levels)
            self.register_buffer("quantile_shift", torch.from_numpy(shift.astype(np.float32)))
            self.anomaly_index = [levels.index(q) for q in PENDING_LEVELS] if config.anomaly else []
        inv = np.zeros((h, c), np.float32)
        for k in range(h):
            for j in range(c):
                std = spec.column_std[k][j] if spec.column_std else 1.0
                inv[k, j] = 1.0 / std if spec.column_valid(k + 1, j) and std > 0 else 0.0
        self.register_buffer("column_inv_std", torch.from_numpy(inv))
        scale = spec.scale or (1.0,) * h
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        if spec.other_features:
            self.register_buffer("feature_mean", torch.tensor(spec.feature_mean, dtype=torch.float32))
            self.register_buffer("feature_std", torch.tensor(spec.feature_std, dtype=torch.float32))
        if spec.blocks:
            self.register_buffer("block_ids", torch.arange(spec.blocks, dtype=torch.float32))
        if spec.transform == "revin" or spec.local_scale:
            self.register_buffer("window_ones", torch.ones(1, 1, spec.ring))
        # Constant index tables into the lag axis (lag L at position L), so the graph needs one
        # Gather per table however many leads and columns there are.
        self.register_buffer("back", torch.arange(spec.ring, -1, -1))  # K - L for L = 0..K
        diffs = [(kind, lag) for kind, lag in spec.columns if kind != "level"]
        newer = np.zeros((h, len(diffs)), np.int64)
        older = np.zeros((h, len(diffs)), np.int64)
        for k in range(h):
            for j, (kind, lag) in enumerate(diffs):
                newer[k, j] = max(lag - (k + 1), 0) if kind == "lead" else 0
                older[k, j] = lag
        self.register_buffer("newer", torch.from_numpy(newer.reshape(-1)))
        self.register_buffer("older", torch.from_numpy(older.reshape(-1)))
        self.register_buffer("older_needs", torch.from_numpy(older + 1).float())
        seasonal = np.array([[math.ceil(k / s) * s - k for k in range(1, h + 1)] for s in spec.seasons], np.int64)
        self.register_buffer("seasonal_lag", torch.from_numpy(seasonal.reshape(-1)))
        multiples = np.array([[math.ceil(k / s) for k in range(1, h + 1)] for s in spec.seasons], np.float32)
        self.register_buffer("seasonal_multiple", torch.from_numpy(multiples))

    def set_quantile_shift(self, shift: np.ndarray) -> None:
        """Install calibration shifts [horizon, Q] (units of each lead's residual scale), made
        non-decreasing in level (monotone_shift), in the graph's constants and in the spec the
        config (and so the exported file) carries."""
        from dataclasses import replace

        shift = np.asarray(shift, dtype=np.float64).reshape(self.spec.horizon, -1)
        shift = monotone_shift(shift, self.config.quantiles)
        self.spec = replace(self.spec, quantile_shift=tuple(tuple(float(v) for v in row) for row in shift))
        self.config = forecaster_config(self.config, self.spec, self.config.clock)
        with torch.no_grad():
            self.quantile_shift.copy_(torch.from_numpy(shift.astype(np.float32)))

    # ----------------------------------------------------------------- state
    @property
    def cell_states(self) -> int:
        return 2 if self.config.cell == "lstm" else 1

    def init_state(self, batch: int, device: torch.device | None = None, start_time: float | None = None) -> State:
        return tuple(torch.from_numpy(s).to(device) for s in self.config.initial_state(batch, start_time))

    def random_state(self, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Plausible states for parity checks: ring around the training level, any count/phase."""
        spec = self.spec
        out = [
            (0.5 * rng.standard_normal(shape)).astype(np.float32)
            for shape in self.config.state_shapes(batch)[: self.cell_states]
        ]
        ring = spec.level_mean + spec.level_std * rng.standard_normal((1, batch, spec.ring))
        out.append(ring.astype(np.float32))
        out.append(rng.integers(0, spec.ring + 2, (1, batch, 1)).astype(np.float32))
        if spec.cycle:
            out.append(rng.integers(-1, spec.cycle, (1, batch, 1)).astype(np.float32))
        if self.config.anomaly:  # lower bounds below upper ones, in PENDING_LEVELS order
            pending = np.sort(spec.level_mean + spec.level_std * rng.standard_normal((1, batch, 4)), axis=-1)
            out.append(pending[..., [1, 0, 2, 3]].astype(np.float32))
        return out

    def random_input(self, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
        """Readings for parity checks: the target around its training level, covariates
        around theirs (far-off readings make huge columns whose float32 rounding dominates)."""
        spec = self.spec
        x = rng.standard_normal((batch, steps, spec.num_features))
        x[..., spec.target_index] = spec.level_mean + spec.level_std * x[..., spec.target_index]
        for i, col in enumerate(spec.other_features):
            x[..., col] = spec.feature_mean[i] + spec.feature_std[i] * x[..., col]
        return x.astype(np.float32)

    # ----------------------------------------------------------------- forward
    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x [B, T, F] raw -> (forecasts [B, T, horizon] raw, new state)."""
        y, new_state, _ = self.predict(x, state)
        return y, new_state

    def graph_outputs(self, x: Tensor, state: State) -> tuple[Tensor, State, tuple[Tensor, ...]]:
        """What the exported graph returns: forecasts, new state, then `config.extra_outputs`
        (quantiles [B, T, horizon, Q] raw, anomaly [B, T, 4])."""
        return self.predict(x, state, extras=True)

    def predict(
        self, x: Tensor, state: State | None = None, extras: bool = False
    ) -> tuple[Tensor, State, tuple[Tensor, ...]]:
        """Forecasts and new state; with `extras` (and quantile levels) also the quantiles and
        the anomaly rows of every reading (forecast_spec's docstring; ANOMALY_COLUMNS). The
        quantiles are computed either way when the model carries the `pending` state."""
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        point, top, scale, parts, new_cell, new_state = self.readout(x, state)
        if not self.config.quantiles or not (extras or self.config.anomaly):
            return point, (*new_cell, *new_state), ()
        quantiles = self.quantiles(top, point, scale)
        if not self.config.anomaly:
            return point, (*new_cell, *new_state), (quantiles,)
        y = x[:, :, self.spec.target_index]
        anomaly, pending = self._anomaly(y, quantiles, state[-1][0], parts["count"])
        return point, (*new_cell, *new_state, pending.unsqueeze(0)), (quantiles, anomaly)

    def readout(self, x: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor, dict, State, State]:  # type: ignore[type-arg]
        """(point forecasts [B, T, H], the top layer's output after dropout [B, T, hidden], the
        residual unit [H] or [B, T, H], the feature parts, new h (, c), new history states):
        what the heads read; training/calibrate.py fits the quantile head on it."""
        spec = self.spec
        parts, new_state = self.features(x, state)
        if spec.local_scale:  # differences in units of the session's own scale
            inputs = [parts["dy"] / parts["window_scale"]]
            if spec.seasons:
                inputs += [parts["e"] / parts["window_scale"], parts["warm"]]
        else:
            inputs = [parts["dy"] / spec.dy_std]
            if spec.seasons:
                inputs += [parts["e"] / spec.e_std, parts["warm"]]
        if spec.transform in ("none", "revin"):
            inputs.append(parts["centred"])
        inputs += parts["phase"]
        rnn_in = torch.stack(inputs, dim=-1)
        if spec.other_features:
            others = x[:, :, list(spec.other_features)]
            rnn_in = torch.cat([rnn_in, (others - self.feature_mean) / self.feature_std], dim=-1)

        if self.config.cell == "lstm":
            out, (h, c) = self.rnn(rnn_in, (state[0], state[1]))
            new_cell: State = (h, c)
        else:
            out, h = self.rnn(rnn_in, state[0])
            new_cell = (h,)
        top = self.drop(out)
        coef = self.head(top)  # [B, T, H*(C+1)]
        coef = coef.reshape(coef.shape[0], coef.shape[1], spec.horizon, len(spec.columns) + 1)
        columns = parts["columns"] * self.column_inv_std  # [B, T, H, C]
        scale = self.scale
        window_scale = parts.get("window_scale")
        if window_scale is not None:
            columns = columns / window_scale.unsqueeze(-1).unsqueeze(-1)
            scale = scale * window_scale.unsqueeze(-1)
        residual = coef[..., 0] + (coef[..., 1:] * columns).sum(-1)  # [B, T, H]
        return parts["base"] + scale * residual, top, scale, parts, new_cell, new_state

    def quantiles(self, top: Tensor, point: Tensor, scale: Tensor) -> Tensor:
        """[B, T, H, Q] quantiles from the top layer's output, the point forecasts [B, T, H] and
        the residual unit ([H] or [B, T, H]): cumulative softplus offsets outward from the point
        plus the calibration shift, both non-decreasing in level, so the quantiles are monotone
        by construction."""
        levels = len(self.config.quantiles)
        raw = self.quantile_head(top)
        raw = raw.reshape(raw.shape[0], raw.shape[1], self.spec.horizon, levels)
        offsets = nn.functional.softplus(raw) @ self.quantile_accumulate
        return point.unsqueeze(-1) + scale.unsqueeze(-1) * (offsets + self.quantile_shift)

    def _anomaly(self, y: Tensor, quantiles: Tensor, pending0: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T, 4] (seen, outside_80, outside_95, score) of each reading against the 80 % and
        95 % intervals forecast for it one step earlier (the previous step of the chunk, or
        the `pending` state for the first), and the new pending state [B, 4]. A reading with
        no earlier one (count < 2) has seen = 0 and zeros. The score is the reading's distance
        from the 95 % interval's centre in its half-widths (|score| > 1: outside)."""
        ahead = quantiles[:, :, 0][:, :, self.anomaly_index]  # [B, T, 4] for the next reading
        before = torch.cat([pending0.unsqueeze(1), ahead[:, :-1]], dim=1)  # PENDING_LEVELS order
        low, high = before[..., :2], before[..., 2:]  # (80 %, 95 %) each
        half = torch.clamp(0.5 * (high - low), min=LOCAL_EPS_STD * self.spec.level_std)
        distance = (y.unsqueeze(-1) - 0.5 * (low + high)) / half
        seen = (count >= 2.0).to(y.dtype).unsqueeze(-1)
        flags = torch.cat([seen, (distance.abs() > 1.0).to(y.dtype), distance[..., 1:]], dim=-1)
        return flags * seen, ahead[:, -1]

    def features(self, x: Tensor, state: State) -> tuple[dict, State]:  # type: ignore[type-arg]
        """Everything the graph derives from the readings and the history states, unscaled:
        dy, e, warm, centred, phase (list), base [B,T,H], columns [B,T,H,C], window_scale;
        and the new ring/count/phase states. Also used to fit the spec's constants."""
        spec = self.spec
        k_ring = spec.ring
        n = self.cell_states
        ring, count0 = state[n][0], state[n + 1][0]  # [B, K], [B, 1]
        y = x[:, :, spec.target_index]  # [B, T]
        full = torch.cat([ring, y], dim=1)  # [B, K+T]
        steps = torch.ones_like(y).cumsum(1)  # 1..T
        count = torch.clamp(count0 + steps, max=float(k_ring + 1))  # readings seen incl. y_t
        # Every lag 0..K of every step at once: lags[b, t, L] = y_{t-L} = full[b, K + t - L].
        position = torch.ones_like(y[0], dtype=torch.long).cumsum(0) - 1  # 0..T-1
        lags = full[:, position.unsqueeze(1) + self.back.unsqueeze(0)]  # [B, T, K+1]

        def lag(lag_: int) -> Tensor:
            return lags[:, :, lag_]

        def avail(lag_: int) -> Tensor:
            return count >= float(lag_ + 1)

        zero = torch.zeros_like(y)
        parts: dict = {"count": count}  # type: ignore[type-arg]
        dy = torch.where(avail(1), y - lag(1), zero)
        parts["dy"] = dy
        if spec.seasons:
            s0 = spec.short_season
            parts["e"] = torch.where(avail(s0 + 1), dy - (lag(s0) - lag(s0 + 1)), zero)
            parts["warm"] = avail(spec.seasons[-1]).to(y.dtype)

        level = None
        if spec.local_scale:
            parts["window_scale"] = self._local_scale(full, count0)
        if spec.transform == "revin":
            level, parts["window_scale"] = self._window_stats(full, count0)
            parts["centred"] = (y - level) / parts["window_scale"]
        elif spec.transform == "none":
            parts["centred"] = (y - spec.level_mean) / spec.level_std
        batch, steps_n = y.shape[0], y.shape[1]
        horizon = spec.horizon
        if spec.transform == "none":
            base = torch.full_like(y, spec.level_mean).unsqueeze(-1).expand(-1, -1, horizon)
        elif level is not None:
            base = level.unsqueeze(-1).expand(-1, -1, horizon)
        else:
            base = y.unsqueeze(-1).expand(-1, -1, horizon)
            if spec.transform in ("seasonal", "seasonal_diff"):
                seasonal = lags[:, :, self.seasonal_lag].reshape(batch, steps_n, len(spec.seasons), horizon)
                for i, s in enumerate(spec.seasons):  # shortest first: the longest available wins
                    value = seasonal[:, :, i]
                    if spec.transform == "seasonal_diff":
                        value = value + self.seasonal_multiple[i] * (y - lag(s)).unsqueeze(-1)
                    base = torch.where(avail(s).unsqueeze(-1), value, base)
        parts["base"] = base  # [B, T, H]

        diff_columns = (lags[:, :, self.newer] - lags[:, :, self.older]).reshape(batch, steps_n, horizon, -1)
        ready = count.unsqueeze(-1).unsqueeze(-1) >= self.older_needs  # [B, T, H, C']
        columns = torch.where(ready, diff_columns, torch.zeros_like(diff_columns))
        if spec.transform in ("none", "revin"):
            centre = spec.level_mean if level is None else level
            level_column = (y - centre).unsqueeze(-1).unsqueeze(-1).expand(-1, -1, horizon, 1)
            columns = torch.cat([columns, level_column], dim=-1)
        parts["columns"] = columns

        phase_inputs: list[Tensor] = []
        total = steps[:, -1:]  # T, [B, 1]
        new_state: State = (
            full[:, -k_ring:].unsqueeze(0),
            torch.clamp(count0 + total, max=float(k_ring + 1)).unsqueeze(0),
        )
        if spec.cycle:
            phase0 = state[n + 2][0]  # [B, 1]
            known = (phase0 >= 0).to(y.dtype)
            phase = phase0 + steps  # phase of y_{t+1}
            phase = phase - torch.floor(phase / spec.cycle) * spec.cycle
            phase_inputs.append(1.0 - known.expand_as(y))
            for s in spec.seasons:
                for j in range(1, spec.harmonics + 1):
                    angle = phase * (2.0 * math.pi * j / s)
                    phase_inputs += [torch.sin(angle) * known, torch.cos(angle) * known]
            if spec.blocks:
                long, short = spec.seasons[-1], spec.seasons[0]
                within = phase - torch.floor(phase / long) * long
                block = torch.floor(within / short)
                onehot = (block.unsqueeze(-1) == self.block_ids).to(y.dtype) * known.unsqueeze(-1)
                phase_inputs += list(onehot.unbind(-1))
            moved = phase0 + total
            moved = moved - torch.floor(moved / spec.cycle) * spec.cycle
            new_state = (*new_state, torch.where(phase0 >= 0, moved, phase0).unsqueeze(0))
        parts["phase"] = phase_inputs
        return parts, new_state

    def _window_stats(self, full: Tensor, count0: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std (raw units) of the readings seen among the last K, for every step.

        A convolution with a ones kernel sums each window of K positions; positions before the
        first reading (ring slots never written) are masked out. The same window gives the same
        sum however the stream is chunked."""
        spec = self.spec
        k_ring = spec.ring
        position = torch.ones_like(full).cumsum(1) - 1.0  # 0..K+T-1
        seen = (position >= float(k_ring) - count0).to(full.dtype)
        v = (full - spec.level_mean) / spec.level_std * seen
        stacked = torch.stack([v, v * v, seen], dim=1).reshape(-1, 1, full.shape[1])  # [3B, 1, K+T]
        sums = nn.functional.conv1d(stacked, self.window_ones).reshape(full.shape[0], 3, -1)[:, :, 1:]
        n = torch.clamp(sums[:, 2], min=1.0)
        mean = sums[:, 0] / n
        var = torch.clamp(sums[:, 1] / n - mean * mean, min=0.0)
        std = torch.sqrt(var + REVIN_EPS**2)
        return spec.level_mean + spec.level_std * mean, spec.level_std * std

    def _local_scale(self, full: Tensor, count0: Tensor) -> Tensor:
        """[B, T] mean absolute one-step change among the readings seen in the ring and y_t
        (K changes once the ring is full), floored at LOCAL_EPS x |y_t| (see LOCAL_EPS). Like
        `_window_stats`, a ones-kernel convolution over the masked changes, so any chunking of
        the stream gives the same values."""
        spec = self.spec
        k_ring = spec.ring
        position = torch.ones_like(full).cumsum(1) - 1.0  # 0..K+T-1
        seen = (position >= float(k_ring) - count0).to(full.dtype)
        valid = seen[:, :-1]  # change p-1 -> p is real when reading p-1 was seen (then p is too)
        change = (full[:, 1:] - full[:, :-1]).abs() * valid  # positions 1..K+T-1
        stacked = torch.stack([change, valid], dim=1).reshape(-1, 1, change.shape[1])  # [2B, 1, K+T-1]
        sums = nn.functional.conv1d(stacked, self.window_ones).reshape(full.shape[0], 2, -1)  # [B, 2, T]
        mean = sums[:, 0] / torch.clamp(sums[:, 1], min=1.0)
        floor = LOCAL_EPS * full[:, k_ring:]  # y_t; squared below, so its sign does not matter
        tiny = LOCAL_EPS_STD * spec.level_std
        return torch.sqrt(mean * mean + floor * floor + tiny * tiny)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _std(values: np.ndarray) -> float:
    std = float(np.std(values)) if values.size else 0.0
    return std if std > 1e-9 else 1.0


def fit_spec(config: ModelConfig, series: np.ndarray, train_rows: int) -> ModelConfig:
    """The config with its forecaster constants fitted on the training block `series[:train_rows]`
    ([N, F] raw): see `fit_spec_many`."""
    return fit_spec_many(config, [np.asarray(series[:train_rows])])


def fit_spec_many(config: ModelConfig, blocks: list[np.ndarray]) -> ModelConfig:
    """The config with its forecaster constants fitted on training blocks ([N_i, F] raw each: one
    series, or every series of a global model, each read from its own start): level and
    difference scales, each analog column's std, each lead's residual std over its baseline.
    Computed with the module's own feature code, so they match the graph; pooled over every
    origin with a full ring and all its leads inside its block."""
    from dataclasses import replace

    spec = spec_of(config)
    if spec is None:
        raise ValueError("config has no forecaster spec")
    trains = [np.asarray(b, dtype=np.float64) for b in blocks]
    pooled = np.concatenate(trains)
    y_all = pooled[:, spec.target_index]
    others = pooled[:, list(spec.other_features)] if spec.other_features else np.zeros((len(pooled), 0))
    spec = replace(
        spec,
        level_mean=float(y_all.mean()),
        level_std=_std(y_all),
        feature_mean=tuple(float(v) for v in others.mean(axis=0)),
        feature_std=tuple(_std(others[:, i]) for i in range(others.shape[1])),
    )
    probe = Forecaster(forecaster_config(config, spec, config.clock)).eval()
    collected: dict[str, list[np.ndarray]] = {k: [] for k in ("window", "base", "columns", "target", "dy", "e")}
    for train in trains:
        y = train[:, spec.target_index]
        first, last = spec.ring, len(y) - 1 - spec.horizon  # full ring; every lead's target in training
        if last < first:
            continue
        with torch.no_grad():
            x = torch.from_numpy(train.astype(np.float32))[None]
            parts, _ = probe.features(x, probe.init_state(1))
        t = np.arange(first, last + 1)
        window = parts["window_scale"][0].numpy()[t] if "window_scale" in parts else np.ones(len(t))
        collected["window"].append(window)
        collected["base"].append(parts["base"][0].numpy()[t])  # [P, H]
        collected["columns"].append(parts["columns"][0].numpy()[t])  # [P, H, C]
        collected["target"].append(np.stack([y[t + k] for k in range(1, spec.horizon + 1)], axis=1))
        collected["dy"].append(parts["dy"][0].numpy()[t] / (window if spec.local_scale else 1.0))
        if "e" in parts:
            collected["e"].append(parts["e"][0].numpy()[t] / (window if spec.local_scale else 1.0))
    rows = sum(len(w) for w in collected["window"])
    if rows < 9:
        longest = max(len(t) for t in trains)
        raise ValueError(
            f"{longest} training rows are too few for a {spec.ring}-reading history and horizon {spec.horizon}"
        )
    window = np.concatenate(collected["window"])
    base = np.concatenate(collected["base"])
    columns = np.concatenate(collected["columns"])
    target = np.concatenate(collected["target"])
    residual = (target - base) / window[:, None]
    scaled = columns / window[:, None, None]
    column_std = tuple(
        tuple(_std(scaled[:, k, j]) if spec.column_valid(k + 1, j) else 0.0 for j in range(len(spec.columns)))
        for k in range(spec.horizon)
    )
    spec = replace(
        spec,
        dy_std=_std(np.concatenate(collected["dy"])),
        e_std=_std(np.concatenate(collected["e"])) if collected["e"] else 1.0,
        scale=tuple(_std(residual[:, k]) for k in range(spec.horizon)),
        column_std=column_std,
    )
    return forecaster_config(config, spec, config.clock)

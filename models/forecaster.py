"""A streamable forecaster that carries its own history: ring + count + phase next to h (and c)
(packed into state tensors as forecast_spec's `layout` says).

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
from models.forecast_spec import (
    HOLT_WINTERS,
    LEVEL_TRANSFORMS,
    SMOOTH_ALPHAS,
    TREND_ALPHAS,
    TREND_BETAS,
    TREND_PHIS,
    ForecastSpec,
    holt_kernels,
    trend_damping,
)
from models.holt_winters import EPS as HW_EPS
from models.holt_winters import season_slots

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
# Phase inputs come from a constant table of every phase's row (one lookup per call) while it
# holds at most this many numbers (1 MiB); longer cycles compute them in the graph instead.
PHASE_TABLE_MAX = 1 << 18
# Readings torch takes at a time with the robust state update (`Forecaster._robust`): a far
# reading costs one more pass over its block, not over the whole sequence.
ROBUST_BLOCK = 256


def history_states(spec: ForecastSpec, anomaly: bool = False) -> tuple[StateSpec, ...]:
    """The state tensors a forecaster carries after h (and c), in the spec's layout
    (forecast_spec's docstring); with `anomaly` also the quantiles it forecast for the next
    reading, so the next step can flag that reading."""
    phase = StateSpec("phase", 1, 1, f"phase of the next reading in a {spec.cycle}-cycle; -1 unknown", -1.0)
    smoothed = StateSpec(
        "smoothed",
        1,
        1 + sum(spec.seasons),
        "Holt-Winters level"
        + "".join(f", the {s} components of season {s}" for s in spec.seasons)
        + (" (oldest first)" if spec.seasons else "")
        + "; set once the longest season has been read",
    )
    if spec.layout >= 2:
        slots = spec.history_slots(anomaly)
        parts = [f"readings seen (capped at {spec.ring + 1})"]
        if anomaly:
            parts.append("quantiles " + ", ".join(str(q) for q in PENDING_LEVELS) + " forecast for the next reading")
        if spec.robust(anomaly):
            parts.append(f"far-outside readings in a row (capped at {spec.robust_run}; robust state update)")
            parts.append(f"the last {spec.ring} readings of the target as the state took them, oldest first")
        else:
            parts.append(f"the last {spec.ring} raw readings of the target, oldest first")
        doc = "packed: " + "; ".join(parts)
        own = (phase,) if spec.cycle else ()
        return (
            StateSpec("history", 1, slots["ring"][1], doc),
            *own,
            *((smoothed,) if spec.transform in HOLT_WINTERS else ()),
        )
    states = [
        StateSpec("ring", 1, spec.ring, f"last {spec.ring} raw readings of the target, oldest first"),
        StateSpec("count", 1, 1, f"readings seen, capped at {spec.ring + 1} (warm-up)"),
    ]
    if spec.cycle:
        states.append(phase)
    if spec.transform in HOLT_WINTERS:
        states.append(smoothed)
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
    extra.pop("positive_target", None)
    if spec.positive_reason is not None:  # what the service checks every reading of the target against
        names = base.features
        name = names[spec.target_index] if len(names) > spec.target_index else f"column {spec.target_index}"
        extra["positive_target"] = {"index": spec.target_index, "name": name, "reason": spec.positive_reason}
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


def history_parts(config: ModelConfig, state: Sequence[Any]) -> dict[str, Any]:
    """The forecaster's own parts of a state tuple (torch tensors or NumPy arrays, h and c
    first), whatever its layout: ring [1, B, K], count [1, B, 1], phase [1, B, 1] (with a
    cycle), pending [1, B, 4] (with anomaly levels), run [1, B, 1] (robust). Views where the layout packs them, so
    writing into one writes into the state."""
    spec = spec_of(config)
    if spec is None:
        raise ValueError("config has no forecaster spec")
    cells = 2 if config.cell == "lstm" else 1
    names = [s.name for s in config.extra_states]
    own = dict(zip(names, state[cells:], strict=True))
    if spec.layout < 2:
        return own
    history = own.pop("history")
    parts = {name: history[:, :, a:b] for name, (a, b) in spec.history_slots(config.anomaly).items()}
    return {**parts, **own}


@torch.jit.script
def _smoothing_step(
    value: Tensor,
    seen: Tensor,
    state: Tensor,
    start: Tensor,
    span: float,
    alpha: float,
    gamma: Tensor,
    phi_powers: Tensor,
    oldest: Tensor,
    source: Tensor,
    leads: Tensor,
    lead_sum: Tensor,
    others: Tensor,
    multiplicative: bool,
    eps: float,
    floor: float,
) -> tuple[Tensor, Tensor]:
    """One reading of `_smoothing_scan`: value and seen [B, 1] -> (forecasts [B, H], state)."""
    level = state[:, 0:1]
    old = state.index_select(1, oldest)  # [B, m]
    if multiplicative:
        together = old.prod(1, keepdim=True)
        error = value - level * together
        new_level = alpha * value / torch.clamp(together, min=eps) + (1.0 - alpha) * level
        rest = torch.where(others, old.unsqueeze(1), torch.ones_like(old).unsqueeze(1)).prod(-1)  # [B, m]
        comps = gamma * value / torch.clamp(new_level * rest, min=floor) + (1.0 - gamma) * old
    else:
        together = old.sum(1, keepdim=True)
        error = value - level - together
        new_level = alpha * (value - together) + (1.0 - alpha) * level
        comps = gamma * (value - new_level - (together - old)) + (1.0 - gamma) * old
    updated = torch.cat([state, new_level, comps], dim=1).index_select(1, source)
    state = torch.where(seen > span, updated, torch.where(seen == span, start, state))
    error = torch.where(seen > span, error, torch.zeros_like(error))
    if multiplicative:
        parts = state.index_select(1, leads).reshape(state.shape[0], gamma.shape[1], phi_powers.shape[1])
        base = state[:, 0:1] * parts.prod(1)
    else:
        base = state @ lead_sum  # the level plus each season's component of each lead
    return base + phi_powers * error, state


@torch.jit.script
def _smoothing_scan(
    y: Tensor,
    count: Tensor,
    state: Tensor,
    start: Tensor,
    span: float,
    alpha: float,
    gamma: Tensor,
    phi_powers: Tensor,
    oldest: Tensor,
    source: Tensor,
    leads: Tensor,
    lead_sum: Tensor,
    others: Tensor,
    multiplicative: bool,
    eps: float,
    floor: float,
) -> tuple[Tensor, Tensor]:
    """Holt-Winters over a chunk (models/holt_winters.py): y and count [B, T] (readings seen
    including each one), the state [B, W] before the chunk, `start` [B, W] the state to take at
    the step whose count reaches `span`. Returns the formula's forecasts [B, T, H] (those of
    steps before `span` readings are meaningless; the caller masks them) and the state after
    the chunk. Constant tables: `oldest` [m] each ring's oldest slot, `source` [W] where each
    slot of the next state comes from in concat(state, level, components), `leads` [m * H]
    the slot each season reads for each lead (`lead_sum` [W, H]: the same as a sum with the
    level, for additive seasons), `others` [m, m] True off the diagonal.

    A recursion, so a loop over the chunk's steps (an ONNX Loop); scripted so that the traced
    export keeps it a loop for any chunk length. A chunk of one reading (a streamed step, the
    common call) takes the step without the loop (an ONNX If): 90 rather than 107 us per call for a
    1x64 LSTM on seasons 48 and 336 (a seasonal_diff forecaster: 40)."""
    if y.shape[1] == 1:
        base, state = _smoothing_step(
            y, count, state, start, span, alpha, gamma, phi_powers, oldest, source, leads, lead_sum, others,
            multiplicative, eps, floor,
        )  # fmt: skip
        return base.unsqueeze(1), state
    outs: list[Tensor] = []
    for t in range(y.shape[1]):
        base, state = _smoothing_step(
            y[:, t : t + 1], count[:, t : t + 1], state, start, span, alpha, gamma, phi_powers, oldest, source,
            leads, lead_sum, others, multiplicative, eps, floor,
        )  # fmt: skip
        outs.append(base)
    return torch.stack(outs, dim=1), state


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
    smooth_kernel: torch.Tensor
    trend_kernel: torch.Tensor
    trend_seen: torch.Tensor
    trend_damping: torch.Tensor
    lag_kernel: torch.Tensor
    lag_needs: torch.Tensor
    column_place: torch.Tensor
    bias_slots: torch.Tensor
    per_lead: torch.Tensor
    phase_freq: torch.Tensor
    phase_offset: torch.Tensor
    lag_bias: torch.Tensor
    season_sum: torch.Tensor
    interval_halves: torch.Tensor
    phase_table: torch.Tensor
    quantile_accumulate: torch.Tensor
    quantile_shift: torch.Tensor
    run_prefix: torch.Tensor
    target_mask: torch.Tensor
    quantile_block: torch.Tensor
    lead_expand: torch.Tensor
    anomaly_select: torch.Tensor
    readout_matrix: torch.Tensor
    head_prefix_weight: torch.Tensor
    head_prefix_bias: torch.Tensor
    placed_std: torch.Tensor
    hw_gamma: torch.Tensor
    hw_phi_powers: torch.Tensor
    hw_oldest: torch.Tensor
    hw_source: torch.Tensor
    hw_leads: torch.Tensor
    hw_lead_sum: torch.Tensor
    hw_others: torch.Tensor
    hw_window: torch.Tensor
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
        self.robust = spec.robust(config.anomaly)
        if self.robust:  # the run-length prefix (`_robust_pass`): slot i is true when run0 >= k - 1 - i
            prefix = torch.arange(spec.robust_run - 1, 0, -1, dtype=torch.float32).reshape(1, -1, 1)
            self.register_buffer("run_prefix", prefix, persistent=False)
            mask = torch.zeros(spec.num_features, dtype=torch.bool)
            mask[spec.target_index] = True
            self.register_buffer("target_mask", mask, persistent=False)
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
            # The flat [B, T, H*Q] form used with a constant residual unit (`quantiles`): each
            # lead's offsets times its unit by one block-diagonal MatMul, its point forecast
            # repeated per level by another, and the next reading's anomaly bounds picked by a third.
            n_q, unit = len(levels), np.asarray(spec.scale or (1.0,) * h, np.float32)
            block = np.zeros((h * n_q, h * n_q), np.float32)
            expand = np.zeros((h, h * n_q), np.float32)
            for k in range(h):
                block[k * n_q : (k + 1) * n_q, k * n_q : (k + 1) * n_q] = unit[k] * quantile_tables(levels)
                expand[k, k * n_q : (k + 1) * n_q] = 1.0
            select = np.zeros((h * n_q, len(PENDING_LEVELS)), np.float32)
            for m, index in enumerate(self.anomaly_index):
                select[index, m] = 1.0  # lead 1's quantile of that level
            self.register_buffer("quantile_block", torch.from_numpy(block), persistent=False)
            self.register_buffer("lead_expand", torch.from_numpy(expand), persistent=False)
            self.register_buffer("anomaly_select", torch.from_numpy(select), persistent=False)
            # (low80, low95, high80, high95) -> (centre80, centre95, half80, half95)
            halves = np.array([[0.5, 0, -0.5, 0], [0, 0.5, 0, -0.5], [0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]], np.float32)
            self.register_buffer("interval_halves", torch.from_numpy(halves), persistent=False)
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
        if spec.transform == "smooth":
            # Window position p of concat(ring, y) holds y_{t-(K-p)}: weight alpha (1-alpha)^(K-p).
            alpha = spec.smooth_alpha
            lags = np.arange(spec.ring, -1, -1, dtype=np.float64)
            weights = alpha * (1.0 - alpha) ** lags
            kernel = torch.from_numpy(weights.astype(np.float32)).reshape(1, 1, -1)
            self.register_buffer("smooth_kernel", kernel, persistent=False)
        if spec.transform == "trend":
            # Channels: the level weights for c = 1..W readings seen, then the trend weights;
            # window position p (of W) holds the reading of age W - 1 - p.
            holt = holt_kernels(spec.smooth_alpha, spec.trend_beta, spec.trend_phi, spec.smooth_window)
            rows = np.concatenate(holt)[:, ::-1].copy()
            self.register_buffer(
                "trend_kernel", torch.from_numpy(rows.astype(np.float32))[:, None, :], persistent=False
            )
            seen = torch.arange(1, spec.smooth_window + 1, dtype=torch.float32)
            self.register_buffer("trend_seen", seen, persistent=False)
            damping = trend_damping(spec.trend_phi, spec.horizon).astype(np.float32)
            self.register_buffer("trend_damping", torch.from_numpy(damping), persistent=False)
        self._build_lag_tables()
        self.smoothing = spec.smoothing
        if self.smoothing is not None:
            self._build_smoothing_tables()

    def _build_smoothing_tables(self) -> None:
        """Constant tables of the Holt-Winters recursion (`_smoothing_scan`) and of its start
        (`_smoothing_start`): which slots each step reads and writes, the per-season averaging
        and spreading matrices over the first `span` readings. They follow from the spec alone."""
        model = self.smoothing
        assert model is not None
        seasons, h = model.seasons, self.spec.horizon
        width, m = model.width, len(seasons)
        offsets = np.cumsum([1, *seasons])[:-1].astype(np.int64)
        source = np.arange(width, dtype=np.int64)
        source[0] = width  # the new level
        leads = []
        for j, (o, s) in enumerate(zip(offsets, seasons, strict=True)):
            source[o : o + s - 1] = np.arange(o + 1, o + s)  # the ring moves on by one
            source[o + s - 1] = width + 1 + j  # and takes the new component last
            leads.append(o + (np.arange(h) % s))
        flat = np.concatenate(leads) if leads else np.zeros(0, np.int64)

        def buffer(name: str, value: np.ndarray) -> None:
            self.register_buffer(name, torch.from_numpy(value), persistent=False)

        buffer("hw_gamma", np.asarray(model.gamma, np.float32).reshape(1, m))
        buffer("hw_phi_powers", (model.phi ** np.arange(1, h + 1)).astype(np.float32).reshape(1, h))
        buffer("hw_oldest", offsets)
        buffer("hw_source", source)
        buffer("hw_leads", flat.astype(np.int64))
        lead_sum = np.zeros((width, h), np.float32)
        lead_sum[0] = 1.0
        for j in range(m):
            lead_sum[leads[j], np.arange(h)] = 1.0
        buffer("hw_lead_sum", lead_sum)
        buffer("hw_others", ~np.eye(m, dtype=bool))
        buffer("hw_window", np.arange(model.span, dtype=np.int64) - model.span + 1)
        # Start: per season, [span, s] averaging of each slot's readings and [s, span] spreading back
        self.hw_start: list[tuple[Tensor, Tensor]] = []
        for s, slots in zip(seasons, season_slots(seasons, model.span), strict=True):
            spread = np.zeros((s, model.span), np.float32)
            spread[slots, np.arange(model.span)] = 1.0
            average = (spread / spread.sum(axis=1, keepdims=True)).T
            self.hw_start.append((torch.from_numpy(average.astype(np.float32)), torch.from_numpy(spread)))

    def _smoothing_start(self, window: Tensor) -> Tensor:
        """[B, W] the Holt-Winters state from the first `span` readings [B, span]
        (models/holt_winters.initial)."""
        model = self.smoothing
        assert model is not None
        level = window.mean(dim=1, keepdim=True)
        floor = HW_EPS * model.unit
        rest = window / torch.clamp(level, min=floor) if model.multiplicative else window - level
        parts = [level]
        last = len(self.hw_start) - 1
        for j, (average, spread) in enumerate(self.hw_start):
            # The longest season is the window's length: each slot holds one reading, so its
            # components are what is left (no averaging); nothing is removed after the last.
            comp = rest if j == last and model.seasons[j] == model.span else rest @ average
            parts.append(comp)
            if j < last:
                rest = rest / torch.clamp(comp @ spread, min=HW_EPS) if model.multiplicative else rest - comp @ spread
        return torch.cat(parts, dim=1)

    def _smoothing(
        self, y: Tensor, full: Tensor, count: Tensor, count0: Tensor, state: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(the formula's forecasts [B, T, H], the state after the chunk): the start state is
        read from the `span` readings ending at the step whose count reaches `span` (clamped
        into the chunk when that step is not in it, when it is not used)."""
        model = self.smoothing
        assert model is not None
        k_ring, steps = self.spec.ring, y.shape[1]
        at = float(model.span) - count0 - 1.0  # [B, 1] chunk step whose count reaches span
        index = torch.clamp(at + float(k_ring) + self.hw_window, min=0.0, max=float(k_ring) + steps - 1.0)
        window = full.gather(1, index.to(torch.long))
        out, new = _smoothing_scan(
            y,
            count,
            state,
            self._smoothing_start(window),
            float(model.span),
            model.alpha,
            self.hw_gamma,
            self.hw_phi_powers,
            self.hw_oldest,
            self.hw_source,
            self.hw_leads,
            self.hw_lead_sum,
            self.hw_others,
            model.multiplicative,
            HW_EPS,
            HW_EPS * model.unit,
        )
        return out, new

    def _build_lag_tables(self) -> None:
        """Constant tables that let the graph derive every lag feature of every step from one
        convolution over concat(ring, y) (see `features`): the lag kernel, the count each
        channel needs, and the matrix that places the analog columns next to the head's
        outputs. Not part of the state dict: they follow from the spec alone."""
        spec = self.spec
        k_ring, h = spec.ring, spec.horizon
        kernel: list[np.ndarray] = []
        needs: list[float] = []
        biases: list[float] = []

        def channel(terms: dict[int, float], need: float, bias: float = 0.0) -> int:
            """A channel summing weight x lag(L) over `terms` (plus `bias`), zero until
            count >= need."""
            row = np.zeros(k_ring + 1, np.float64)
            for lag_, weight in terms.items():
                row[k_ring - lag_] += weight  # window position K - L holds y_{t-L}
            kernel.append(row)
            needs.append(need)
            biases.append(bias)
            return len(kernel) - 1

        self.ch_dy = channel({0: 1.0, 1: -1.0}, 2.0)  # y_t - y_{t-1}
        self.ch_season: list[int] = []
        if spec.seasons:
            s0, last = spec.short_season, spec.seasons[-1]
            # dy - (lag(s0) - lag(s0 + 1)): the change against one short season ago
            self.ch_e = channel({0: 1.0, 1: -1.0, s0: -1.0, s0 + 1: 1.0}, float(s0 + 2))
            self.ch_warm = channel({}, float(last + 1), bias=1.0)  # 1 once the longest season is
            if spec.transform in ("seasonal", "seasonal_diff", *HOLT_WINTERS):
                # (Holt-Winters answers the seasonal naive one until it has read its longest season.)
                # Each season's baseline of every lead, available once lag s is: seasonal naive
                # y_{t+k-mS}, plus m (y_t - y_{t-S}) for seasonal_diff, m = ceil(k / S); as its
                # change from the next shorter season's (from y_t for the shortest), so the
                # masked channels summed over the seasons give the longest available one's.
                below = [{0: 1.0} for _ in range(h)]
                self.ch_season.append(channel({0: 1.0}, 0.0))  # y_t itself, the base they change
                for s in spec.seasons:
                    for k in range(1, h + 1):
                        multiple = math.ceil(k / s)
                        terms = {multiple * s - k: 1.0}
                        if spec.transform == "seasonal_diff":
                            terms[0] = terms.get(0, 0.0) + multiple
                            terms[s] = terms.get(s, 0.0) - multiple
                        change = dict(terms)
                        for lag_, weight in below[k - 1].items():
                            change[lag_] = change.get(lag_, 0.0) - weight
                        below[k - 1] = terms
                        channel(change, float(s + 1))
        diffs = [(kind, lag_) for kind, lag_ in spec.columns if kind != "level"]
        inv = self.column_inv_std.numpy()
        # With a constant residual unit and the last value or a season as the baseline, the
        # whole linear readout is one MatMul over a tail of channels (`fused`): the baseline's
        # (y_t, then the seasons' changes), then per lead its bias slot (a constant 1) and its
        # columns over their stds, in the head's output layout; the head's outputs are
        # preceded by constant ones for the baseline's channels (spec.readout_prefix).
        self.fused = spec.readout_prefix > 0
        if self.fused:
            self.ch_base = self.ch_season[0] if self.ch_season else channel({0: 1.0}, 0.0)
            self.ch_one = self.ch_columns = len(kernel)
            for k in range(h):
                channel({}, 0.0, bias=1.0)
                for j, (kind, lag_) in enumerate(diffs):
                    newer = max(lag_ - (k + 1), 0) if kind == "lead" else 0
                    channel({newer: float(inv[k, j]), lag_: -float(inv[k, j])}, float(lag_ + 1))
        else:
            # A constant 1 ahead of the columns: `column_place` puts it into every lead's bias
            # slot (unless a window scale divides the columns; then `bias_slots` is added after).
            self.ch_one = channel({}, 0.0, bias=1.0)
            self.ch_columns = len(kernel)
            for k in range(h):
                for kind, lag_ in diffs:
                    newer = max(lag_ - (k + 1), 0) if kind == "lead" else 0
                    channel({newer: 1.0, lag_: -1.0}, float(lag_ + 1))
        # Layout 2 convolves concat(history, y), whose count and pending come before the ring:
        # the kernel reads them with zero weights (any chunking puts them only there).
        self.history_lead = spec.history_slots(self.config.anomaly)["ring"][0] if spec.layout >= 2 else 0
        stacked = np.stack(kernel)
        if not spec.local_scale:
            # The RNN reads dy and e over their training stds: folded into their kernel rows
            # (a local scale divides them by the session's own scale instead, in the graph).
            stacked[self.ch_dy] /= spec.dy_std
            if spec.seasons:
                stacked[self.ch_e] /= spec.e_std
        lag_kernel = np.pad(stacked, ((0, 0), (self.history_lead, 0)))[:, None, :].astype(np.float32)
        self.register_buffer("lag_kernel", torch.from_numpy(lag_kernel), persistent=False)
        self.register_buffer("lag_bias", torch.tensor(biases, dtype=torch.float32), persistent=False)
        self.register_buffer("lag_needs", torch.tensor(needs, dtype=torch.float32), persistent=False)
        season_sum = np.tile(np.eye(h, dtype=np.float32), (len(spec.seasons), 1))  # [S*H, H]
        season_sum = np.concatenate([np.ones((1, h), np.float32), season_sum])  # y_t's row first
        self.register_buffer("season_sum", torch.from_numpy(season_sum), persistent=False)
        # [C' (diff channels) + level, H * (C + 1)]: column (k, j) scaled by its 1/std into slot
        # k * (C + 1) + 1 + j; slot k * (C + 1) is the lead's bias, which `bias_slots` fills with 1.
        c = len(spec.columns)
        rows = 1 + len(diffs) * h + (1 if c > len(diffs) else 0)
        place = np.zeros((rows, h * (c + 1)), np.float32)
        bias_slots = np.zeros(h * (c + 1), np.float32)
        self.window_columns = spec.local_scale or spec.transform == "revin"
        for k in range(h):
            bias_slots[k * (c + 1)] = 1.0
            if not self.window_columns:
                place[0, k * (c + 1)] = 1.0
            for j in range(len(diffs)):
                place[1 + k * len(diffs) + j, k * (c + 1) + 1 + j] = inv[k, j]
            if c > len(diffs):  # the level column, the same reading for every lead
                place[rows - 1, k * (c + 1) + 1 + len(diffs)] = inv[k, len(diffs)]
        per_lead = np.zeros((h * (c + 1), h), np.float32)
        for k in range(h):
            per_lead[k * (c + 1) : (k + 1) * (c + 1), k] = 1.0
        self.register_buffer("column_place", torch.from_numpy(place), persistent=False)
        self.register_buffer("bias_slots", torch.from_numpy(bias_slots), persistent=False)
        self.register_buffer("per_lead", torch.from_numpy(per_lead), persistent=False)
        if self.fused:
            # [prefix + H (C + 1), H]: the baseline's channels summed per lead, then each lead's
            # slots times its residual unit; the head gains `prefix` outputs that are always 1.
            prefix = spec.readout_prefix
            base_rows = season_sum if self.ch_season else np.ones((1, h), np.float32)
            scale = np.asarray(spec.scale or (1.0,) * h, np.float32)
            readout = np.concatenate([base_rows, per_lead * scale])
            stds = np.where(inv > 0, 1.0 / np.where(inv > 0, inv, 1.0), 0.0).astype(np.float32)
            self.register_buffer("readout_matrix", torch.from_numpy(readout), persistent=False)
            self.register_buffer("head_prefix_weight", torch.zeros(prefix, self.config.hidden_size), persistent=False)
            self.register_buffer("head_prefix_bias", torch.ones(prefix), persistent=False)
            self.register_buffer("placed_std", torch.from_numpy(stds), persistent=False)  # [H, C]
        self.phase_lookup = bool(spec.cycle) and spec.cycle * (spec.rnn_inputs + 1) <= PHASE_TABLE_MAX
        if self.phase_lookup:
            # Row p: the phase inputs of phase p (unknown flag 0, sin/cos, blocks); row `cycle`:
            # those of an unknown phase (flag 1, the rest 0). The graph looks its row up.
            rows_ = [self._phase_row(float(p)) for p in range(spec.cycle)]
            rows_.append(np.concatenate([[1.0], np.zeros(len(rows_[0]) - 1)]))
            table = np.asarray(rows_, np.float32)
            self.register_buffer("phase_table", torch.from_numpy(table), persistent=False)
        if spec.cycle:
            freqs, offsets = [], []
            for s in spec.seasons:
                for j in range(1, spec.harmonics + 1):
                    freqs += [2.0 * math.pi * j / s] * 2
                    offsets += [0.0, 0.5 * math.pi]  # cos(a) = sin(a + pi/2): one Sin for both
            self.register_buffer("phase_freq", torch.tensor(freqs, dtype=torch.float32), persistent=False)
            self.register_buffer("phase_offset", torch.tensor(offsets, dtype=torch.float32), persistent=False)

    def _phase_row(self, phase: float) -> np.ndarray:
        """The phase inputs of a known phase (in float64: the table is exact to float32)."""
        spec = self.spec
        row = [0.0]
        for s in spec.seasons:
            for j in range(1, spec.harmonics + 1):
                angle = phase * (2.0 * math.pi * j / s)
                row += [math.sin(angle), math.cos(angle)]
        if spec.blocks:
            long, short = spec.seasons[-1], spec.seasons[0]
            block = math.floor((phase % long) / short)
            row += [1.0 if block == b else 0.0 for b in range(spec.blocks)]
        return np.asarray(row)

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
        own = [np.zeros(shape, np.float32) for shape in self.config.state_shapes(batch)[self.cell_states :]]
        parts = history_parts(self.config, [*out, *own])
        ring = spec.level_mean + spec.level_std * rng.standard_normal((1, batch, spec.ring))
        parts["ring"][...] = np.exp(ring) if spec.log else ring  # raw readings
        parts["count"][...] = rng.integers(0, spec.ring + 2, (1, batch, 1))
        if spec.cycle:
            parts["phase"][...] = rng.integers(-1, spec.cycle, (1, batch, 1))
        if self.smoothing is not None:  # a level near the training one, components near neutral
            comps = 0.1 * rng.standard_normal((1, batch, self.smoothing.width - 1))
            level = spec.level_mean + 0.1 * spec.level_std * rng.standard_normal((1, batch, 1))
            neutral = 1.0 + comps if self.smoothing.multiplicative else spec.level_std * comps
            parts["smoothed"][...] = np.concatenate([level, neutral], axis=-1)
        if self.config.anomaly:  # lower bounds below upper ones, in PENDING_LEVELS order
            pending = np.sort(spec.level_mean + spec.level_std * rng.standard_normal((1, batch, 4)), axis=-1)
            pending = np.exp(pending) if spec.log else pending
            parts["pending"][...] = pending[..., [1, 0, 2, 3]]
        if self.robust:
            parts["run"][...] = rng.integers(0, spec.robust_run + 1, (1, batch, 1))
        return [*out, *own]

    def random_input(self, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
        """Readings for parity checks: the target around its training level, covariates
        around theirs (far-off readings make huge columns whose float32 rounding dominates)."""
        spec = self.spec
        x = rng.standard_normal((batch, steps, spec.num_features))
        x[..., spec.target_index] = spec.level_mean + spec.level_std * x[..., spec.target_index]
        if spec.log:
            x[..., spec.target_index] = np.exp(x[..., spec.target_index])
        for i, col in enumerate(spec.other_features):
            x[..., col] = spec.feature_mean[i] + spec.feature_std[i] * x[..., col]
        return x.astype(np.float32)

    # ----------------------------------------------------------------- forward
    def work(self, values: Tensor) -> Tensor:
        """Target readings in the units the graph forecasts in: ln(max(r, floor)) for a log
        spec (forecast_spec's docstring), else as they are."""
        if not self.spec.log:
            return values
        return torch.log(torch.clamp(values, min=self.spec.log_floor))

    def raw(self, values: Tensor) -> Tensor:
        """Forecasts back from the graph's units to the target's (exp for a log spec)."""
        return torch.exp(values) if self.spec.log else values

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
        quantiles are computed either way when the model carries the `pending` state. A robust
        model (forecast_spec's docstring) takes the readings through its robust state update in
        eval mode, as served; in training mode (the point network's training steps) it reads
        them as they are, so the point network trains as it would without the anomaly levels."""
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        if self.robust and not self.training:  # training steps read the readings as they are
            return self._robust(x, state)
        point, top, scale, parts, new_cell, new_state = self.readout(x, state)
        if not self.config.quantiles or not (extras or self.config.anomaly):
            return self.raw(point), (*new_cell, *new_state), ()
        flat = self._quantiles_flat(top, point, scale, parts.get("quantile_raw"))  # work units (logs for a log spec)
        quantiles = self.raw(flat.reshape(flat.shape[0], flat.shape[1], self.spec.horizon, -1))
        point = self.raw(point)
        if not self.config.anomaly:
            return point, (*new_cell, *new_state), (quantiles,)
        ahead = self.raw(flat @ self.anomaly_select)  # the next reading's anomaly bounds, [B, T, 4]
        anomaly, pending = self._anomaly(self._target3(x), ahead, parts["pending0"], parts["count"])
        return point, (*new_cell, *self.pack_state(parts, pending)), (quantiles, anomaly)

    def _robust(self, x: Tensor, state: State) -> tuple[Tensor, State, tuple[Tensor, ...]]:
        """`predict` with the robust state update (forecast_spec's docstring), ROBUST_BLOCK
        readings at a time (`_robust_block`), each block from the state the last one left."""
        blocks = [self._robust_block(x[:, :ROBUST_BLOCK], state)]
        for a in range(ROBUST_BLOCK, x.shape[1], ROBUST_BLOCK):
            blocks.append(self._robust_block(x[:, a : a + ROBUST_BLOCK], blocks[-1][1]))
        if len(blocks) == 1:
            point, states, quantiles, anomaly, _ = blocks[0]
            return point, states, (quantiles, anomaly)
        point = torch.cat([b[0] for b in blocks], dim=1)
        quantiles = torch.cat([b[2] for b in blocks], dim=1)
        anomaly = torch.cat([b[3] for b in blocks], dim=1)
        return point, blocks[-1][1], (quantiles, anomaly)

    def _robust_block(self, x: Tensor, state: State) -> tuple[Tensor, State, Tensor, Tensor, Tensor]:
        """`_robust_pass` at its fixed point: the readings as the state takes them, found by
        passes of the vectorised graph, then that pass's outputs (and the readings taken).

        Which readings are replaced at step t depends on the bounds forecast at t - 1, which
        depend on the readings taken before t, so a chunk is a recursion. Each pass starts from
        the readings the previous one took: pass p gets every step before p right, so they stop
        changing after at most T + 1 passes, and the pass whose readings come back unchanged
        computed exactly what one reading at a time computes. A chunk with nothing far outside
        (but, perhaps, its first reading, which the pending state alone decides) takes one
        pass; each far reading whose replacement moves a later far one's bounds, one more. The
        exported graph runs whole chunks the same way with an ONNX Loop (models/export.py);
        torch takes long sequences in blocks (`_robust`), so a far reading costs a block's
        pass, not the sequence's."""
        cleaned = self._target3(x)
        for _ in range(x.shape[1] + 1):
            out = self._robust_pass(x, cleaned, state)
            if torch.equal(out[-1], cleaned):
                break
            cleaned = out[-1]
        return out

    def cleaned(self, x: Tensor, state: State | None = None) -> Tensor:
        """x [B, T, F] with the target column as the state takes it (the robust state update;
        x itself for other models): what `readout` must read to see the served states."""
        if not self.robust:
            return x
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        taken = []
        for a in range(0, x.shape[1], ROBUST_BLOCK):
            _, state, _, _, block = self._robust_block(x[:, a : a + ROBUST_BLOCK], state)
            taken.append(block)
        return self._with_target(x, torch.cat(taken, dim=1))

    def _with_target(self, x: Tensor, target: Tensor) -> Tensor:
        """x [B, T, F] with its target column replaced by `target` [B, T, 1]."""
        return target if self.spec.num_features == 1 else torch.where(self.target_mask, target, x)

    def _robust_pass(self, x: Tensor, cleaned: Tensor, state: State) -> tuple[Tensor, State, Tensor, Tensor, Tensor]:
        """One pass of `_robust`: the graph run on x with the target taken as `cleaned`
        [B, T, 1] -> (forecasts, new state, quantiles, anomaly rows of the raw readings, the
        readings the state takes given this pass's bounds [B, T, 1]).

        A far reading (|score| > robust_margin, once the session is warm: its ring full, so the
        forecast had every lag) extends the run of far readings in a
        row, min(run, k) with k = robust_run: the sum over j = 1..k of "the last j readings
        were all far", the state's run standing for the readings before the chunk (slot i of
        `run_prefix`). While that run is under k it is replaced by the 80 % interval's centre
        kept within the range of the K readings before it as the state took them (a sliding
        max pool): the state never leaves the range of the readings, so a model whose
        forecasts are poor does not feed on them (forecasts replacing readings unbounded made
        models with random heads diverge to infinity)."""
        spec = self.spec
        raw_y = self._target3(x)
        point, top, scale, parts, new_cell, _ = self.readout(self._with_target(x, cleaned), state)
        flat = self._quantiles_flat(top, point, scale, parts.get("quantile_raw"))
        quantiles = self.raw(flat.reshape(flat.shape[0], flat.shape[1], spec.horizon, -1))
        ahead = self.raw(flat @ self.anomaly_select)  # the next reading's anomaly bounds, [B, T, 4]
        before = torch.cat([parts["pending0"], ahead[:, :-1]], dim=1)
        anomaly, score, centre80 = self._flag_rows(raw_y, before, parts["count"])
        warm = parts["count"] >= float(spec.ring + 1)  # every lag available: no warm-up forecast
        far_flag = (score.abs() > spec.robust_margin) & warm
        far = far_flag.to(raw_y.dtype)
        run, window = far, far
        k = spec.robust_run
        if k > 1:
            padded = torch.cat([(parts["run0"] >= self.run_prefix).to(raw_y.dtype), far], dim=1)  # [B, k-1+T, 1]
            for j in range(1, k):
                window = window * padded[:, k - 1 - j : -j]
                run = run + window
        window = parts["before_each"]
        high = nn.functional.max_pool1d(window, spec.ring, 1).transpose(1, 2)  # [B, T, 1]
        low = -nn.functional.max_pool1d(-window, spec.ring, 1).transpose(1, 2)
        centre80 = torch.minimum(torch.maximum(centre80, low), high)
        take = torch.where(far_flag & (run < float(k)), centre80, raw_y)
        new_state = self.pack_state(parts, ahead[:, -1:], run[:, -1:])
        return self.raw(point), (*new_cell, *new_state), quantiles, anomaly, take

    def readout(self, x: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor, dict, State, State]:  # type: ignore[type-arg]
        """(point forecasts [B, T, H], the top layer's output after dropout [B, T, hidden], the
        residual unit [H] or [B, T, H], the feature parts, new h (, c), new history states):
        what the heads read; training/calibrate.py fits the quantile head on it. Forecasts and
        unit are in the graph's units (`work`: logs for a log spec)."""
        spec = self.spec
        parts, new_state = self.features(x, state)
        # One [B, T, n] block per kind of input, in the RNN's input order, and one Concat.
        window: Tensor | None = parts.get("window_scale")
        if window is not None and spec.local_scale:  # differences in units of the session's own scale
            inputs = [parts["dy_e"] / window.unsqueeze(-1)]
            if spec.seasons:
                inputs.append(parts["warm3"])
        else:  # dy (and e) over their training stds, by the convolution itself, and the warm flag
            inputs = [parts["dy_e_warm"]]
        if spec.transform in LEVEL_TRANSFORMS:
            inputs.append(parts["centred"].unsqueeze(-1))
        if spec.cycle:
            inputs.append(parts["phase3"])
        if spec.other_features:
            others = x[:, :, list(spec.other_features)]
            inputs.append((others - self.feature_mean) / self.feature_std)
        rnn_in = torch.cat(inputs, dim=-1) if len(inputs) > 1 else inputs[0]

        if self.config.cell == "lstm":
            out, (h, c) = self.rnn(rnn_in, (state[0], state[1]))
            new_cell: State = (h, c)
        else:
            out, h = self.rnn(rnn_in, state[0])
            new_cell = (h,)
        top = self.drop(out)
        if self.fused:
            # Ones for the baseline's channels, the head's outputs, then (with levels) the
            # quantile head's: one MatMul for both heads, split after.
            weights = [self.head_prefix_weight, self.head.weight]
            biases = [self.head_prefix_bias, self.head.bias]
            if self.config.quantiles:
                weights.append(self.quantile_head.weight)
                biases.append(self.quantile_head.bias)
            coef = nn.functional.linear(top, torch.cat(weights), torch.cat(biases))
            if self.config.quantiles:
                width = self.readout_matrix.shape[0]
                coef, parts["quantile_raw"] = coef[..., :width], coef[..., width:]
            return (coef * parts["readout_tail"]) @ self.readout_matrix, top, self.scale, parts, new_cell, new_state
        coef = self.head(top)  # [B, T, H*(C+1)]: per lead its bias, then one weight per column
        # Every lead's columns over their stds, laid out like `coef` (1 in the bias slots): the
        # residual of lead k is then sum over its slots of coef x placed, one MatMul for all leads.
        placed = parts["column_block"] @ self.column_place
        scale = self.scale
        if window is not None:
            placed = placed / window.unsqueeze(-1) + self.bias_slots
            scale = scale * window.unsqueeze(-1)
        residual = (coef * placed) @ self.per_lead  # [B, T, H]
        return parts["base"] + scale * residual, top, scale, parts, new_cell, new_state

    def quantiles(self, top: Tensor, point: Tensor, scale: Tensor) -> Tensor:
        """[B, T, H, Q] quantiles from the top layer's output, the point forecasts [B, T, H] and
        the residual unit ([H] or [B, T, H]): cumulative softplus offsets outward from the point
        plus the calibration shift, both non-decreasing in level, so the quantiles are monotone
        by construction."""
        flat = self._quantiles_flat(top, point, scale)
        return flat.reshape(flat.shape[0], flat.shape[1], self.spec.horizon, -1)

    def _quantiles_flat(self, top: Tensor, point: Tensor, scale: Tensor, raw: Tensor | None = None) -> Tensor:
        """`quantiles` as [B, T, H*Q] (lead-major), from the quantile head's output `raw` when
        the readout computed it already. A constant residual unit ([H]) is folded into the
        offsets' block-diagonal accumulation and the shift (fewer graph nodes); every term
        stays non-decreasing in level, so monotone still holds by construction."""
        levels = len(self.config.quantiles)
        raw = self.quantile_head(top) if raw is None else raw  # [B, T, H*Q]
        if scale.dim() == 1:
            offset = (self.scale.unsqueeze(-1) * self.quantile_shift).reshape(-1)  # constant
            return nn.functional.softplus(raw) @ self.quantile_block + (point @ self.lead_expand + offset)
        raw = raw.reshape(raw.shape[0], raw.shape[1], self.spec.horizon, levels)
        offsets = nn.functional.softplus(raw) @ self.quantile_accumulate
        quantiles = point.unsqueeze(-1) + scale.unsqueeze(-1) * (offsets + self.quantile_shift)
        return quantiles.reshape(quantiles.shape[0], quantiles.shape[1], -1)

    def _target3(self, x: Tensor) -> Tensor:
        """The target's readings [B, T, 1]: the input itself when it is the only feature (no
        graph node)."""
        i = self.spec.target_index
        return x if self.spec.num_features == 1 else x[:, :, i : i + 1]

    def _anomaly(self, y: Tensor, ahead: Tensor, pending0: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T, 4] (seen, outside_80, outside_95, score) of each reading against the 80 % and
        95 % intervals forecast for it one step earlier (`ahead` [B, T, 4]: each step's bounds
        for the next reading, PENDING_LEVELS order; the `pending` state [B, 1, 4] for the
        first), and the new pending state [B, 1, 4]; `count` [B, T, 1] is the readings seen
        including each step's; `y` [B, T, 1] the readings. A reading with
        no earlier one (count < 2) has seen = 0 and zeros. The score is the reading's distance
        from the 95 % interval's centre in its half-widths (|score| > 1: outside)."""
        before = torch.cat([pending0, ahead[:, :-1]], dim=1)  # PENDING_LEVELS order
        return self._flag_rows(y, before, count)[0], ahead[:, -1:]

    def _flag_rows(self, y: Tensor, before: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(anomaly rows [B, T, 4], score [B, T, 1], the 80 % interval's centre [B, T, 1]) of
        readings `y` against the bounds forecast for them, `before` [B, T, 4] (`_anomaly`)."""
        # Both intervals' centres and half-widths, (80 %, 95 %) each, by one MatMul (halving is exact)
        centre_half = before @ self.interval_halves
        centre = centre_half[..., :2]
        half = torch.clamp(centre_half[..., 2:], min=LOCAL_EPS_STD * self.spec.level_std)
        distance = (y - centre) / half
        seen = (count >= 2.0).to(y.dtype)
        flags = torch.cat([seen, (distance.abs() > 1.0).to(y.dtype), distance[..., 1:]], dim=-1)
        return flags * seen, distance[..., 1:], centre[..., :1]

    def features(self, x: Tensor, state: State) -> tuple[dict, State]:  # type: ignore[type-arg]
        """Everything the graph derives from the readings and the history states: dy, e (over
        their training stds unless the model has a local scale; fit_spec reads them from a
        probe whose stds are 1), warm, centred [B,T], base [B,T,H], columns [B,T,H,C] (raw),
        window_scale [B,T]; the blocks the readout reads (dy_e, warm3, phase3 [B,T,n],
        column_block [B,T,C'H(+1)] or, fused, readout_tail); and the new ring/count/phase
        states. Also used to fit the spec's constants.

        Every lag feature is linear in the last K+1 readings, so one convolution over
        concat(ring, y) with a constant kernel (`_build_lag_tables`) yields all of them for every
        step, and one comparison of the count with each channel's need masks those not
        available yet: a few nodes per call however many lags, leads and seasons there are."""
        spec = self.spec
        k_ring = spec.ring
        n = self.cell_states
        raw_y = x[:, :, spec.target_index]  # [B, T]
        y = self.work(raw_y)  # in logs for a log spec
        y3 = y.unsqueeze(-1) if spec.log else self._target3(x)  # [B, T, 1]
        parts: dict = {}  # type: ignore[type-arg]
        if spec.layout >= 2:
            # One packed state [count, (pending,) ring]: the convolution reads concat(history, y)
            # (zero weights on count and pending), the ring is its tail; count and pending are
            # read from the convolution's input, already [B, 1, n].
            history = state[n][0]  # [B, W]
            lead = self.history_lead
            if spec.num_features == 1:  # the input as [1, B, T] next to the state [1, B, W]
                raw3 = torch.cat([state[n], x.permute(2, 0, 1)], dim=2).transpose(0, 1)  # [B, 1, W+T]
            else:
                raw3 = torch.cat([history, raw_y], dim=1).unsqueeze(1)
            raw_padded = raw3[:, 0]  # [B, W+T], read by the window transforms and log specs only
            # In logs for a log spec: count and pending then become numbers the kernel's zero
            # weights ignore (finite: the floor); the state written back is the raw one, and
            # count and pending are read from it.
            padded = torch.cat([self.work(history), y], dim=1) if spec.log else raw_padded
            padded3 = padded.unsqueeze(1) if spec.log else raw3
            count3 = raw3[:, :, :1]  # [B, 1, 1]
            if self.config.anomaly:
                slots = spec.history_slots(True)
                parts["pending0"] = raw3[:, :, slots["pending"][0] : slots["pending"][1]]  # [B, 1, 4]
                if self.robust:
                    parts["run0"] = raw3[:, :, slots["run"][0] : slots["run"][1]]  # [B, 1, 1]
                    # the ring, then the chunk's readings but its last: the K readings before each step
                    parts["before_each"] = raw3[:, :, slots["ring"][0] : -1]  # [B, 1, K + T - 1]
            full = padded[:, lead:]  # [B, K+T], only read by the window transforms
            count0 = history[:, :1]  # [B, 1], likewise
        else:
            count0 = state[n + 1][0]  # [B, 1]
            raw_padded = torch.cat([state[n][0], raw_y], dim=1)  # [B, K+T]
            padded = full = torch.cat([self.work(state[n][0]), y], dim=1) if spec.log else raw_padded
            padded3 = padded.unsqueeze(1)
            count3 = state[n + 1].transpose(0, 1)  # [B, 1, 1]
            if self.config.anomaly:
                parts["pending0"] = state[-1].transpose(0, 1)  # [B, 1, 4]
        lin = nn.functional.conv1d(padded3, self.lag_kernel, self.lag_bias).transpose(1, 2)  # [B, T, M]
        # Step numbers 1..T [B, T, 1]: the running sum of the constant-one channel (zero
        # weights, bias 1: exactly 1), fewer graph nodes than a ones tensor shaped like y. The
        # sum runs over every channel (the others unread) so that ONNX Runtime keeps one
        # transpose of the convolution's output instead of adding one for this slice.
        steps = lin.cumsum(1)[..., self.ch_one : self.ch_one + 1]
        count = torch.clamp(count3 + steps, max=float(k_ring + 1))  # readings seen incl. y_t
        masked = torch.where(count >= self.lag_needs, lin, 0.0)  # [B, T, M]
        parts["count"] = count  # [B, T, 1]
        last = self.ch_dy + (2 if spec.seasons else 1)
        parts["dy_e"] = masked[..., self.ch_dy : last]
        parts["dy_e_warm"] = masked[..., self.ch_dy : last + (1 if spec.seasons else 0)]
        parts["dy"] = masked[..., self.ch_dy]
        if spec.seasons:
            parts["e"] = masked[..., self.ch_e]
            parts["warm3"] = masked[..., self.ch_warm : self.ch_warm + 1]
            parts["warm"] = masked[..., self.ch_warm]

        level = slope = None
        if spec.local_scale:
            parts["window_scale"] = self._local_scale(full, count0)
        if spec.transform == "revin":
            level, parts["window_scale"] = self._window_stats(full, count0)
            parts["centred"] = (y - level) / parts["window_scale"]
        elif spec.transform in ("smooth", "trend"):
            if spec.transform == "smooth":
                level = self._smooth_level(full, count0)
            else:
                level, slope = self._trend_level(full, count)
            unit = parts["window_scale"] if spec.local_scale else spec.dy_std
            parts["centred"] = (y - level) / unit
        elif spec.transform == "none":
            parts["centred"] = (y - spec.level_mean) / spec.level_std
        horizon = spec.horizon
        if spec.transform == "none":
            base = torch.full_like(y3, spec.level_mean)
        elif spec.transform == "trend" and level is not None and slope is not None:
            base = level.unsqueeze(-1) + slope.unsqueeze(-1) * self.trend_damping
        elif level is not None:
            base = level.unsqueeze(-1)
        else:
            base = y3
            if self.ch_season:  # y_t plus the changes of the seasons available (all shorter ones are)
                first = self.ch_season[0]
                changes = masked[..., first : first + 1 + len(spec.seasons) * horizon]
                base = changes @ self.season_sum
        if base.shape[-1] != horizon:
            base = base.expand(-1, -1, horizon)
        if self.smoothing is not None:  # the Holt-Winters formula once its longest season is read
            place = n + [s.name for s in self.config.extra_states].index("smoothed")
            formula, parts["smoothed_next"] = self._smoothing(y, full, count[..., 0], count0, state[place][0])
            base = torch.where(count >= float(self.smoothing.span), formula, base)
        parts["base"] = base  # [B, T, H]

        diffs = masked[..., self.ch_columns :]  # [B, T, H*C'], lead-major ([B, T, H*(C+1)] placed when fused)
        with_one = masked[..., self.ch_one :]  # the constant 1, then the columns
        if self.fused:
            parts["readout_tail"] = masked[..., self.ch_base :]  # baseline channels, then the slots
            placed = diffs.reshape(diffs.shape[0], diffs.shape[1], horizon, -1)[..., 1:]
            columns = placed * self.placed_std  # back in raw units (fit_spec reads them)
        elif spec.transform in LEVEL_TRANSFORMS:
            centre = spec.level_mean if level is None else level.unsqueeze(-1)
            level_column = y3 - centre
            parts["column_block"] = torch.cat([with_one, level_column], dim=-1)
            split = diffs.reshape(diffs.shape[0], diffs.shape[1], horizon, -1)
            columns = torch.cat([split, level_column.unsqueeze(-1).expand(-1, -1, horizon, 1)], dim=-1)
        else:
            parts["column_block"] = with_one
            columns = diffs.reshape(diffs.shape[0], diffs.shape[1], horizon, -1)
        parts["columns"] = columns  # [B, T, H, C] (for fitting; the graph reads column_block)

        if spec.layout >= 2:  # [B, 1, n] each, joined and turned to [1, B, W] by pack_state
            parts["ring_next"], parts["count_next"] = raw3[:, :, -k_ring:], count[:, -1:]
        else:  # [B, K], [B, 1]
            parts["ring_next"], parts["count_next"] = raw_padded[:, -k_ring:], count[:, -1]
        if spec.cycle:
            start = state[n + (1 if spec.layout >= 2 else 2)].transpose(0, 1)  # [B, 1, 1]
            known = (start >= 0).to(y.dtype)
            # phase of y_{t+1}, [B, T, 1]; exact (integers), and positive where it is read
            phase = torch.fmod(start + steps, float(spec.cycle))
        if spec.cycle and self.phase_lookup:
            # One lookup for every phase input; an unknown phase is -1 and reads the table's
            # last row (the index counts from the end), so the same tensor is the new state.
            unknown = torch.where(start >= 0, phase, -1.0)
            row = unknown.to(torch.long)
            parts["phase3"] = self.phase_table[row[..., 0]]
        elif spec.cycle:
            blocks = [(1.0 - known).expand_as(y3), torch.sin(phase * self.phase_freq + self.phase_offset) * known]
            if spec.blocks:
                long, short = spec.seasons[-1], spec.seasons[0]
                within = phase - torch.floor(phase / long) * long
                block = torch.floor(within / short)
                blocks.append((block == self.block_ids).to(y.dtype) * known)
            parts["phase3"] = torch.cat(blocks, dim=-1)
        if spec.cycle:  # the last step's phase, an unknown one kept as it is
            parts["phase_next"] = (unknown if self.phase_lookup else torch.where(start >= 0, phase, -1.0))[:, -1]
        return parts, self.pack_state(parts)

    def pack_state(self, parts: dict, pending: Tensor | None = None, run: Tensor | None = None) -> State:  # type: ignore[type-arg]
        """The new history states in the spec's layout, from the last step's ring and count
        (layout 2: [B, 1, n] each; layout 1: [B, n]), phase [B, 1], the new pending [B, 1, 4]
        (with anomaly levels) and run [B, 1, 1] (robust); without them, a packed history keeps
        the old ones, as only `features` callers see it."""
        if self.spec.layout >= 2:
            own = [parts["count_next"]]
            if self.config.anomaly:
                own.append(parts["pending0"] if pending is None else pending)
            if self.robust:
                own.append(parts["run0"] if run is None else run)
            packed: State = (torch.cat([*own, parts["ring_next"]], dim=2).transpose(0, 1),)
        else:
            packed = (parts["ring_next"].unsqueeze(0), parts["count_next"].unsqueeze(0))
        if self.spec.cycle:
            packed = (*packed, parts["phase_next"].unsqueeze(0))
        if "smoothed_next" in parts:
            packed = (*packed, parts["smoothed_next"].unsqueeze(0))
        if self.spec.layout < 2 and pending is not None:
            packed = (*packed, pending.transpose(0, 1))
        return packed

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

    def _smooth_level(self, full: Tensor, count0: Tensor) -> Tensor:
        """[B, T] the smoothing level of every step: the readings seen among the K + 1 ending at
        y_t, weighted alpha (1 - alpha)^age and divided by the weights of those seen (so a
        fresh session's level is the weighted mean of what it has seen; y_t is always seen).
        One convolution over the masked readings and the mask, like `_window_stats`: the same
        window gives the same level however the stream is chunked."""
        k_ring = self.spec.ring
        position = torch.ones_like(full).cumsum(1) - 1.0  # 0..K+T-1
        seen = (position >= float(k_ring) - count0).to(full.dtype)
        stacked = torch.stack([full * seen, seen], dim=1).reshape(-1, 1, full.shape[1])  # [2B, 1, K+T]
        sums = nn.functional.conv1d(stacked, self.smooth_kernel).reshape(full.shape[0], 2, -1)  # [B, 2, T]
        return sums[:, 0] / sums[:, 1]

    def _trend_level(self, full: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] level and trend of every step: the last W readings (of concat(ring, y))
        weighted by holt_kernels' row for the readings seen, by one convolution with every
        row's weights and a one-hot pick of the row (the count, capped at W). Older slots of
        a fresh ring hold zeros (or the log floor): weight zero in the rows that can see them."""
        spec = self.spec
        width = spec.smooth_window
        window = full[:, spec.ring - width + 1 :]  # [B, W-1+T]: each step's W readings end at y_t
        sums = nn.functional.conv1d(window.unsqueeze(1), self.trend_kernel).transpose(1, 2)  # [B, T, 2W]
        pick = (torch.clamp(count, max=float(width)) == self.trend_seen).to(full.dtype)  # [B, T, W]
        return (sums[..., :width] * pick).sum(-1), (sums[..., width:] * pick).sum(-1)

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


LOG_FLOOR_SHARE = 1e-3  # a log spec's floor: this share of the smallest positive training reading


def work_units(spec: ForecastSpec, values: np.ndarray) -> np.ndarray:
    """Raw target readings in the units the graph forecasts in (Forecaster.work, in NumPy)."""
    values = np.asarray(values, dtype=np.float64)
    return np.log(np.maximum(values, spec.log_floor)) if spec.log else values


def _std(values: np.ndarray) -> float:
    std = float(np.std(values)) if values.size else 0.0
    return std if std > 1e-9 else 1.0


def _fit_alpha(config: ModelConfig, spec: ForecastSpec, trains: list[np.ndarray]) -> float:
    """The smoothing constant (SMOOTH_ALPHAS) whose level forecasts the training blocks best:
    the lowest mean absolute error over every lead of every origin whose leads are inside its
    block (from the first origin with two readings before it). Computed with the graph's own
    feature code, so the level fitted is the level served."""
    from dataclasses import replace

    best, best_err = 1.0, math.inf
    for alpha in SMOOTH_ALPHAS:
        candidate = replace(spec, smooth_alpha=alpha)
        probe = Forecaster(forecaster_config(config, candidate, config.clock)).eval()
        errors: list[np.ndarray] = []
        for train in trains:
            y = work_units(spec, train[:, spec.target_index])
            t = np.arange(2, len(y) - spec.horizon)
            if not len(t):
                continue
            with torch.no_grad():
                x = torch.from_numpy(train.astype(np.float32))[None]
                parts, _ = probe.features(x, probe.init_state(1))
            base = parts["base"][0].numpy()[t]
            target = np.stack([y[t + k] for k in range(1, spec.horizon + 1)], axis=1)
            errors.append(np.abs(target - base).ravel())
        err = float(np.concatenate(errors).mean()) if errors else math.inf
        if err < best_err:
            best, best_err = alpha, err
    return best


def _fit_trend(spec: ForecastSpec, trains: list[np.ndarray]) -> tuple[float, float, float]:
    """(alpha, beta, phi) of the grid (TREND_ALPHAS x TREND_BETAS x TREND_PHIS) whose damped
    trend forecasts the training blocks best: the lowest mean absolute error over every lead of
    every origin with its W readings and all its leads inside its block. The same weights as
    the graph's (holt_kernels' full row), applied in NumPy."""
    width, horizon = spec.smooth_window, spec.horizon
    windows, targets = [], []
    for train in trains:
        y = work_units(spec, train[:, spec.target_index])
        t = np.arange(width - 1, len(y) - horizon)
        if not len(t):
            continue
        windows.append(np.stack([y[t - age] for age in range(width)], axis=1))  # [P, W], age 0 first
        targets.append(np.stack([y[t + k] for k in range(1, horizon + 1)], axis=1))  # [P, H]
    if not windows:
        return 1.0, 0.0, 1.0
    x, target = np.concatenate(windows), np.concatenate(targets)
    best, best_err = (1.0, 0.0, 1.0), math.inf
    for alpha in TREND_ALPHAS:
        for beta in TREND_BETAS:
            for phi in TREND_PHIS:
                level_w, trend_w = holt_kernels(alpha, beta, phi, width)
                level, slope = x @ level_w[-1], x @ trend_w[-1]
                forecast = level[:, None] + slope[:, None] * trend_damping(phi, horizon)[None, :]
                err = float(np.abs(target - forecast).mean())
                if err < best_err:
                    best, best_err = (alpha, beta, phi), err
    return best


def fit_smoothing(spec: ForecastSpec, targets: list[np.ndarray], warm: bool = False) -> ForecastSpec:
    """The spec with its Holt-Winters constants fitted on the training targets (one array per
    series, in the graph's units: logs for a log spec): models/holt_winters.fit, Taylor's least
    squares of the AR-adjusted one-step error. `warm`: start from the spec's own constants (a
    refit on more rows) instead of searching the grid."""
    from dataclasses import replace

    from models import holt_winters

    multiplicative = spec.transform == "holt_winters_mult"
    start = (
        holt_winters.Smoothing(spec.seasons, multiplicative, spec.hw_alpha, spec.hw_gamma, spec.hw_phi, spec.level_std)
        if warm
        else None
    )
    fitted = holt_winters.fit(targets, spec.seasons, multiplicative, spec.level_std, start=start)
    return replace(spec, hw_alpha=fitted.alpha, hw_gamma=fitted.gamma, hw_phi=fitted.phi)


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
    if spec.log:  # a floor well below every training reading (a reading under it would be read as it)
        positive = pooled[:, spec.target_index][pooled[:, spec.target_index] > 0]
        if not len(positive):
            raise ValueError("a log forecaster needs positive training readings")
        spec = replace(spec, log_floor=float(LOG_FLOOR_SHARE * positive.min()))
    y_all = work_units(spec, pooled[:, spec.target_index])
    others = pooled[:, list(spec.other_features)] if spec.other_features else np.zeros((len(pooled), 0))
    spec = replace(
        spec,
        level_mean=float(y_all.mean()),
        level_std=_std(y_all),
        feature_mean=tuple(float(v) for v in others.mean(axis=0)),
        feature_std=tuple(_std(others[:, i]) for i in range(others.shape[1])),
    )
    if spec.transform == "smooth":
        spec = replace(spec, smooth_alpha=_fit_alpha(config, spec, trains))
    elif spec.transform == "trend":
        alpha, beta, phi = _fit_trend(spec, trains)
        spec = replace(spec, smooth_alpha=alpha, trend_beta=beta, trend_phi=phi)
    elif spec.transform in HOLT_WINTERS:
        spec = fit_smoothing(spec, [work_units(spec, t[:, spec.target_index]) for t in trains])
    # dy, e and the columns as they are (the graph divides them by the stds fitted here)
    raw = replace(spec, dy_std=1.0, e_std=1.0, column_std=())
    probe = Forecaster(forecaster_config(config, raw, config.clock)).eval()
    collected: dict[str, list[np.ndarray]] = {k: [] for k in ("window", "base", "columns", "target", "dy", "e")}
    for train in trains:
        y = work_units(spec, train[:, spec.target_index])
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

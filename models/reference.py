"""LSTM and GRU written directly from the cell equations, in NumPy (float64).

This is the independent witness: it shares no code with torch or ONNX Runtime, so when the
three agree, an export or a served result is right. Weights load either from a torch
RecurrentModel or from an exported ONNX file (reading the native LSTM/GRU nodes' W, R, B and
the head's MatMul/Add initializers, and the normalisation from the file's metadata).

Weight layout follows torch: per layer W_ih [G*H, in], W_hh [G*H, H], b_ih, b_hh [G*H], with
gate blocks in torch order — LSTM (input, forget, candidate, output), GRU (reset, update, new).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import holt_winters as hw
from models.config import METADATA_KEY, ModelConfig

RELATIVE_TOLERANCE = 1e-4


def tolerance(reference: np.ndarray) -> float:
    """float32 tolerance relative to the tensor's scale (raw units can be in the thousands):
    float32 graphs round differently from each other and from float64, and over hundreds of
    steps that adds up to ~1e-5 of the scale; a wrong graph is off by far more."""
    return RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


@dataclass
class LayerWeights:
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray


def lstm_cell(x: np.ndarray, h: np.ndarray, c: np.ndarray, w: LayerWeights) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM step for a batch: x [B, in], h and c [B, H]."""
    hidden = h.shape[-1]
    gates_x = x @ w.w_ih.T + w.b_ih
    gates_h = h @ w.w_hh.T + w.b_hh
    blocks = [slice(k * hidden, (k + 1) * hidden) for k in range(4)]
    input_gate = sigmoid(gates_x[:, blocks[0]] + gates_h[:, blocks[0]])
    forget_gate = sigmoid(gates_x[:, blocks[1]] + gates_h[:, blocks[1]])
    candidate = np.tanh(gates_x[:, blocks[2]] + gates_h[:, blocks[2]])
    output_gate = sigmoid(gates_x[:, blocks[3]] + gates_h[:, blocks[3]])
    c_t = forget_gate * c + input_gate * candidate
    h_t = output_gate * np.tanh(c_t)
    return h_t, c_t


def gru_cell(x: np.ndarray, h: np.ndarray, w: LayerWeights) -> np.ndarray:
    """One GRU step; the reset gate multiplies the hidden projection *after* it is computed
    (W_hn h + b_hn), as torch and ONNX's linear_before_reset=1 do."""
    hidden = h.shape[-1]
    blocks = [slice(k * hidden, (k + 1) * hidden) for k in range(3)]
    gates_x = x @ w.w_ih.T + w.b_ih
    gates_h = h @ w.w_hh.T + w.b_hh
    reset_gate = sigmoid(gates_x[:, blocks[0]] + gates_h[:, blocks[0]])
    update_gate = sigmoid(gates_x[:, blocks[1]] + gates_h[:, blocks[1]])
    candidate = np.tanh(gates_x[:, blocks[2]] + reset_gate * gates_h[:, blocks[2]])
    h_new: np.ndarray = (1.0 - update_gate) * candidate + update_gate * h
    return h_new


@dataclass
class ReferenceModel:
    config: ModelConfig
    layers: list[LayerWeights]
    head_w: np.ndarray  # [output, hidden]
    head_b: np.ndarray  # [output]

    def zero_state(self, batch: int) -> tuple[np.ndarray, ...]:
        shape = self.config.state_shape(batch)
        return tuple(np.zeros(shape) for _ in self.config.state_names)

    def run(
        self, x: np.ndarray, state: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """x [B, T, F] raw units -> (y [B, T, O] raw units, final state), all in float64."""
        cfg = self.config
        x = np.asarray(x, dtype=np.float64)
        batch, steps, _ = x.shape
        state = self.zero_state(batch) if state is None else tuple(np.array(s, np.float64) for s in state)
        h = [state[0][layer].copy() for layer in range(cfg.num_layers)]
        c = [state[1][layer].copy() for layer in range(cfg.num_layers)] if cfg.cell == "lstm" else []

        raw = x
        norm = cfg.normalization
        if norm is not None:
            x = (x - np.asarray(norm.input_mean)) / np.asarray(norm.input_std)

        top = np.zeros((batch, steps, cfg.hidden_size))
        for t in range(steps):
            inp = x[:, t, :]
            for layer, weights in enumerate(self.layers):
                if cfg.cell == "lstm":
                    h[layer], c[layer] = lstm_cell(inp, h[layer], c[layer], weights)
                else:
                    h[layer] = gru_cell(inp, h[layer], weights)
                inp = h[layer]
            top[:, t, :] = inp

        y = top @ self.head_w.T + self.head_b
        if cfg.head == "regression" and norm is not None and norm.output_mean:
            y = y * np.asarray(norm.output_std) + np.asarray(norm.output_mean)
        if cfg.extra.get("transform") == "diff":  # the head predicts the change from the latest reading
            y = y + raw[..., list(cfg.extra["anchor_inputs"])]
        final = (np.stack(h),) + ((np.stack(c),) if cfg.cell == "lstm" else ())
        return y, final

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_torch(cls, model: Any) -> ReferenceModel:
        """From a models.recurrent.RecurrentModel (duck-typed: no torch import here)."""
        params = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
        layers = [
            LayerWeights(
                params[f"rnn.weight_ih_l{k}"],
                params[f"rnn.weight_hh_l{k}"],
                params[f"rnn.bias_ih_l{k}"],
                params[f"rnn.bias_hh_l{k}"],
            )
            for k in range(model.config.num_layers)
        ]
        return cls(model.config, layers, params["head.weight"], params["head.bias"])

    @classmethod
    def from_onnx(cls, path: str | Path) -> ReferenceModel:
        """Read weights straight out of the ONNX graph (needs the `onnx` package)."""
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(path))
        meta = {p.key: p.value for p in proto.metadata_props}
        config = ModelConfig.from_json(meta[METADATA_KEY])
        constants: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer
        }
        for node in proto.graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        constants[node.output[0]] = numpy_helper.to_array(attr.t).astype(np.float64)

        hidden = config.hidden_size
        layers: list[LayerWeights] = []
        head_w = head_b = None
        for node in proto.graph.node:
            if node.op_type in ("LSTM", "GRU"):
                w, r, b = (constants[name][0] for name in node.input[1:4])
                layers.append(_onnx_to_torch_gates(node.op_type, w, r, b, hidden))
            elif node.op_type in ("MatMul", "Gemm") and layers:
                for name in node.input[1:2]:
                    if name in constants and constants[name].shape == (hidden, config.output_size):
                        head_w = constants[name].T
                    elif name in constants and constants[name].shape == (config.output_size, hidden):
                        head_w = constants[name]
                if node.op_type == "Gemm" and len(node.input) > 2:
                    head_b = constants[node.input[2]]
            elif node.op_type == "Add" and head_w is not None and head_b is None:
                for name in node.input:
                    if name in constants and constants[name].shape == (config.output_size,):
                        head_b = constants[name]
        if len(layers) != config.num_layers or head_w is None:
            raise ValueError(f"{path}: graph does not hold {config.num_layers} {config.cell} layers and a head")
        if head_b is None:
            head_b = np.zeros(config.output_size)
        return cls(config, layers, head_w, head_b)


def _onnx_to_torch_gates(op: str, w: np.ndarray, r: np.ndarray, b: np.ndarray, hidden: int) -> LayerWeights:
    """ONNX orders LSTM gates (i, o, f, c) and GRU gates (z, r, h); torch orders them
    (i, f, c, o) and (r, z, n). Reorder the row blocks to torch's layout."""
    order = [0, 2, 3, 1] if op == "LSTM" else [1, 0, 2]
    gates = len(order)

    def reorder(m: np.ndarray) -> np.ndarray:
        return np.concatenate([m[k * hidden : (k + 1) * hidden] for k in order])

    b_ih, b_hh = b[: gates * hidden], b[gates * hidden :]
    return LayerWeights(reorder(w), reorder(r), reorder(b_ih), reorder(b_hh))


# ------------------------------------------------------------------------- history forecaster


@dataclass
class ForecasterReference:
    """The history-state forecaster (models/forecaster.py) one reading at a time, in float64,
    from its spec: a Python ring, a counter and a phase, features written out per step, the cell
    equations above, then the analog head. Shares no code with the vectorised torch graph."""

    config: ModelConfig
    layers: list[LayerWeights]
    head_w: np.ndarray  # [head_outputs, hidden]
    head_b: np.ndarray
    quantile_w: np.ndarray | None = None  # [horizon * levels, hidden] when the model has levels
    quantile_b: np.ndarray | None = None

    @property
    def spec(self) -> Any:
        from models.forecast_spec import ForecastSpec

        return ForecastSpec.from_dict(self.config.extra["forecaster"])

    def zero_state(self, batch: int) -> tuple[np.ndarray, ...]:
        return tuple(s.astype(np.float64) for s in self.config.initial_state(batch))

    def run(
        self, x: np.ndarray, state: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """x [B, T, F] raw -> (forecasts [B, T, horizon], final state), float64."""
        out = self.run_all(x, state)
        return out["output"], out["state"]

    def run_all(self, x: np.ndarray, state: tuple[np.ndarray, ...] | None = None) -> dict[str, Any]:
        """Forecasts ("output"), final "state", and when the model has levels "quantiles"
        [B, T, horizon, Q] and (with the anomaly levels) "anomaly" [B, T, 4]."""
        cfg, spec = self.config, self.spec
        levels = cfg.quantiles
        x = np.asarray(x, dtype=np.float64)
        batch, steps, _ = x.shape
        state = self.zero_state(batch) if state is None else tuple(np.array(s, np.float64) for s in state)
        lstm = cfg.cell == "lstm"
        cells = 2 if lstm else 1
        h = [state[0][layer].copy() for layer in range(cfg.num_layers)]
        c = [state[1][layer].copy() for layer in range(cfg.num_layers)] if lstm else []
        own = dict(zip((s.name for s in cfg.extra_states), state[cells:], strict=True))
        if spec.layout >= 2:  # one packed history [count, (pending,) ring] (forecast_spec's docstring)
            history = own.pop("history")
            own |= {name: history[:, :, a:b] for name, (a, b) in spec.history_slots(cfg.anomaly).items()}
        rings = [list(own["ring"][0, b]) for b in range(batch)]
        counts = [float(own["count"][0, b, 0]) for b in range(batch)]
        phases = [float(own["phase"][0, b, 0]) for b in range(batch)] if spec.cycle else [-1.0] * batch
        smoothing = spec.smoothing
        smoothed = [own["smoothed"][0, b].copy() for b in range(batch)] if smoothing is not None else []
        pending = [own["pending"][0, b].copy() for b in range(batch)] if cfg.anomaly else []
        robust = spec.robust(cfg.anomaly)
        runs = [float(own["run"][0, b, 0]) for b in range(batch)] if robust else []
        out = np.zeros((batch, steps, spec.horizon))
        quantiles = np.zeros((batch, steps, spec.horizon, len(levels)))
        anomaly = np.zeros((batch, steps, 4))
        taken = x.copy()  # the readings as the state takes them (the robust state update replaces some)
        for t in range(steps):
            inputs, extras = [], []
            for b in range(batch):
                if robust:
                    taken[b, t, spec.target_index], runs[b] = self._robust_take(
                        spec, x[b, t, spec.target_index], pending[b], counts[b] >= spec.ring, runs[b], rings[b]
                    )
                rnn_in, extra = self._step_features(spec, taken[b, t], rings[b], counts[b], phases[b])
                if smoothing is not None:  # the Holt-Winters formula once its longest season is read
                    seen = min(counts[b] + 1, spec.ring + 1)
                    raw = np.array([*rings[b][-smoothing.span :], taken[b, t, spec.target_index]], dtype=np.float64)
                    if spec.log:  # the formula runs in the graph's units (forecast_spec's docstring)
                        raw = np.log(np.maximum(raw, spec.log_floor))
                    reading = float(raw[-1])
                    if seen >= smoothing.span:
                        if seen == smoothing.span:
                            window = raw[-smoothing.span :]
                            error = 0.0
                            smoothed[b] = hw.initial(
                                window, smoothing.seasons, smoothing.multiplicative, smoothing.unit
                            )
                        else:
                            smoothed[b], error = hw.step(smoothed[b], reading, smoothing)
                        extra = (hw.forecast(smoothed[b], error, spec.horizon, smoothing), *extra[1:])
                inputs.append(rnn_in)
                extras.append(extra)
                rings[b] = [*rings[b][1:], taken[b, t, spec.target_index]]
                counts[b] = min(counts[b] + 1, spec.ring + 1)
                if spec.cycle:  # any negative phase is unknown and carried on as -1
                    phases[b] = (phases[b] + 1) % spec.cycle if phases[b] >= 0 else -1.0
            inp = np.array(inputs)
            for layer, weights in enumerate(self.layers):
                if lstm:
                    h[layer], c[layer] = lstm_cell(inp, h[layer], c[layer], weights)
                else:
                    h[layer] = gru_cell(inp, h[layer], weights)
                inp = h[layer]
            coef = (inp @ self.head_w.T + self.head_b).reshape(batch, spec.horizon, len(spec.columns) + 1)
            raw_q = None
            if levels:
                assert self.quantile_w is not None and self.quantile_b is not None
                raw_q = (inp @ self.quantile_w.T + self.quantile_b).reshape(batch, spec.horizon, len(levels))
            for b, (base, columns, wscale) in enumerate(extras):
                residual = coef[b, :, 0] + (coef[b, :, 1:] * columns).sum(axis=1)
                unit = np.asarray(spec.scale) * wscale
                point = base + unit * residual  # in logs for a log spec: exp() back to raw
                out[b, t] = np.exp(point) if spec.log else point
                if raw_q is not None:
                    q = self._quantiles(levels, spec, point, unit, raw_q[b])
                    quantiles[b, t] = np.exp(q) if spec.log else q
                if cfg.anomaly:
                    reading = x[b, t, spec.target_index]
                    anomaly[b, t] = self._flag(reading, pending[b], counts[b] >= 2, spec.level_std)
                    # the pending state's order: lower bounds (80 %, 95 %), then upper (80 %, 95 %)
                    pending[b] = np.array([quantiles[b, t, 0, levels.index(q)] for q in (0.1, 0.025, 0.9, 0.975)])
        final = [np.stack(h)] + ([np.stack(c)] if lstm else [])
        ends = {
            "ring": np.array(rings)[None],
            "count": np.array(counts)[None, :, None],
            "phase": np.array(phases)[None, :, None],
            "pending": np.array(pending).reshape(1, batch, -1),
            "run": np.array(runs).reshape(1, batch, -1),
        }
        if spec.layout >= 2:
            packed = ["count", *(["pending"] if cfg.anomaly else []), *(["run"] if robust else []), "ring"]
            final.append(np.concatenate([ends[name] for name in packed], axis=-1))
            final += [ends["phase"]] if spec.cycle else []
            final += [np.array(smoothed)[None]] if smoothing is not None else []
        else:
            final += [ends["ring"], ends["count"]]
            final += [ends["phase"]] if spec.cycle else []
            final += [np.array(smoothed)[None]] if smoothing is not None else []
            final += [ends["pending"]] if cfg.anomaly else []
        result: dict[str, Any] = {"output": out, "state": tuple(final)}
        if levels:
            result["quantiles"] = quantiles
        if cfg.anomaly:
            result["anomaly"] = anomaly
        return result

    @staticmethod
    def _quantiles(
        levels: tuple[float, ...], spec: Any, point: np.ndarray, unit: np.ndarray, raw: np.ndarray
    ) -> np.ndarray:
        """[horizon, Q] for one reading, written out from forecast_spec's docstring."""
        softplus = np.log1p(np.exp(-np.abs(raw))) + np.maximum(raw, 0.0)
        shift = np.asarray(spec.quantile_shift) if spec.quantile_shift else np.zeros_like(raw)
        q = np.zeros_like(raw)
        for k in range(len(point)):
            # The shifts as used: from the middle outward, an upper level's is at least every
            # upper one below it, a lower level's at most every level above it that is >= 0.5
            # or < 0.5 and above it (so each only widens); then non-decreasing overall.
            used = []
            for tau in levels:
                if tau >= 0.5:
                    value = max(shift[k, i] for i, other in enumerate(levels) if 0.5 <= other <= tau)
                else:
                    middle = [i for i, other in enumerate(levels) if other >= 0.5][:1]
                    value = min(shift[k, i] for i, other in enumerate(levels) if tau <= other < 0.5 or i in middle)
                used.append(value)
            used = list(np.maximum.accumulate(used))
            for j, tau in enumerate(levels):
                if tau > 0.5:
                    offset = sum(softplus[k, i] for i, other in enumerate(levels) if 0.5 < other <= tau)
                elif tau < 0.5:
                    offset = -sum(softplus[k, i] for i, other in enumerate(levels) if tau <= other < 0.5)
                else:
                    offset = 0.0  # the median is the point forecast, shifted
                q[k, j] = point[k] + unit[k] * (offset + used[j])
        return q

    @staticmethod
    def _robust_take(
        spec: Any, reading: float, pending: np.ndarray, warm: bool, run: float, ring: list[float]
    ) -> tuple[float, float]:
        """(the reading as the state takes it, the far readings in a row after it): a reading
        more than robust_margin 95 % half-widths from the interval's centre is far (`warm`:
        the session had read its whole ring before it); while it
        makes a run shorter than robust_run it is taken as the 80 % interval's centre, kept
        within the range of the `ring` (the K readings before it, as taken; forecast_spec's
        docstring)."""
        lo80, lo95, hi80, hi95 = pending
        half = max(0.5 * (hi95 - lo95), 1e-6 * spec.level_std)
        far = warm and abs(reading - 0.5 * (lo95 + hi95)) / half > spec.robust_margin
        if not far:
            return reading, 0.0
        run = min(run + 1.0, float(spec.robust_run))
        centre = min(max(0.5 * (lo80 + hi80), min(ring)), max(ring))
        return (centre if run < spec.robust_run else reading), run

    @staticmethod
    def _flag(reading: float, pending: np.ndarray, seen: bool, level_std: float) -> np.ndarray:
        """(seen, outside_80, outside_95, score) of one reading against the previous step's
        10/2.5/90/97.5 % quantiles for it (the pending state's order)."""
        if not seen:
            return np.zeros(4)
        lo80, lo95, hi80, hi95 = pending
        half = max(0.5 * (hi95 - lo95), 1e-6 * level_std)
        return np.array(
            [
                1.0,
                float(reading < lo80 or reading > hi80),
                float(reading < lo95 or reading > hi95),
                (reading - 0.5 * (lo95 + hi95)) / half,
            ]
        )

    @staticmethod
    def _step_features(
        spec: Any, reading: np.ndarray, ring: list[float], count: float, phase: float
    ) -> tuple[list[float], tuple[np.ndarray, np.ndarray, float]]:
        K = spec.ring
        y_t = float(reading[spec.target_index])
        history = [*ring, y_t]  # history[K - L] is y_{t-L}
        if spec.log:  # every target reading in logs, floored (forecast_spec's docstring)
            history = [float(np.log(max(r, spec.log_floor))) for r in history]
            y_t = history[-1]
        seen = min(count + 1, K + 1)

        def y(lag: int) -> float:
            return float(history[K - lag])

        def available(lag: int) -> bool:
            return bool(seen >= lag + 1)

        dy = y_t - y(1) if available(1) else 0.0
        level, wscale = spec.level_mean, 1.0
        dy_scale, e_scale = spec.dy_std, spec.e_std
        if spec.local_scale:  # mean |one-step change| among the readings seen (ring and y_t)
            real = int(min(seen, K + 1))
            changes = np.abs(np.diff(np.array(history[K + 1 - real :])))
            mad = float(changes.mean()) if len(changes) else 0.0
            wscale = float(np.sqrt(mad**2 + (1e-3 * y_t) ** 2 + (1e-6 * spec.level_std) ** 2))
            dy_scale = e_scale = wscale
        features = [dy / dy_scale]
        if spec.seasons:
            s0 = spec.short_season
            e = dy - (y(s0) - y(s0 + 1)) if available(s0 + 1) else 0.0
            features += [e / e_scale, 1.0 if available(spec.seasons[-1]) else 0.0]
        if spec.transform == "revin":
            real = int(min(seen, K))
            window = (np.array(history[K + 1 - real :]) - spec.level_mean) / spec.level_std
            level = spec.level_mean + spec.level_std * window.mean()
            wscale = spec.level_std * float(np.sqrt(window.var() + 1e-2**2))
            features.append((y_t - level) / wscale)
        elif spec.transform == "smooth":  # weights alpha (1 - alpha)^age over the readings seen
            real = int(min(seen, K + 1))
            ages = np.arange(real - 1, -1, -1)
            weights = spec.smooth_alpha * (1.0 - spec.smooth_alpha) ** ages
            level = float((weights * np.array(history[K + 1 - real :])).sum() / weights.sum())
            features.append((y_t - level) / (wscale if spec.local_scale else spec.dy_std))
        elif spec.transform == "trend":
            real = int(min(seen, spec.smooth_window))
            level, slope = _damped_trend(spec, [y(age) for age in range(real)])
            features.append((y_t - level) / (wscale if spec.local_scale else spec.dy_std))
        elif spec.transform == "none":
            features.append((y_t - spec.level_mean) / spec.level_std)
        if spec.cycle:
            known = phase >= 0
            nxt = (phase + 1) % spec.cycle if known else 0.0
            features.append(0.0 if known else 1.0)
            for s in spec.seasons:
                for j in range(1, spec.harmonics + 1):
                    angle = 2.0 * np.pi * j * nxt / s
                    features += [np.sin(angle) if known else 0.0, np.cos(angle) if known else 0.0]
            if spec.blocks:
                block = int((nxt % spec.seasons[-1]) // spec.seasons[0])
                features += [1.0 if known and i == block else 0.0 for i in range(spec.blocks)]
        for i, col in enumerate(spec.other_features):
            features.append((float(reading[col]) - spec.feature_mean[i]) / spec.feature_std[i])

        base = np.zeros(spec.horizon)
        columns = np.zeros((spec.horizon, len(spec.columns)))
        for k in range(1, spec.horizon + 1):
            if spec.transform == "trend":
                value = level + slope * sum(spec.trend_phi**j for j in range(1, k + 1))
            elif spec.transform in ("none", "revin", "smooth"):
                value = level
            else:
                value = y_t
                # (Holt-Winters answers the seasonal naive forecast until its longest season is read)
                if spec.transform in ("seasonal", "seasonal_diff", "holt_winters", "holt_winters_mult"):
                    for s in spec.seasons:  # shortest first: the longest available season wins
                        if available(s):
                            m = -(-k // s)
                            value = y(m * s - k) + (m * (y_t - y(s)) if spec.transform == "seasonal_diff" else 0.0)
            base[k - 1] = value
            for j, (kind, lag) in enumerate(spec.columns):
                std = spec.column_std[k - 1][j] if spec.column_std else 1.0
                if kind == "lead" and lag >= k and available(lag):
                    raw = y(lag - k) - y(lag)
                elif kind == "gap" and available(lag):
                    raw = y_t - y(lag)
                elif kind == "level":
                    raw = y_t - level
                else:
                    continue
                columns[k - 1, j] = raw / std / wscale if std > 0 else 0.0
        return features, (base, columns, wscale)

    @classmethod
    def from_torch(cls, model: Any) -> ForecasterReference:
        params = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
        layers = [
            LayerWeights(
                params[f"rnn.weight_ih_l{k}"],
                params[f"rnn.weight_hh_l{k}"],
                params[f"rnn.bias_ih_l{k}"],
                params[f"rnn.bias_hh_l{k}"],
            )
            for k in range(model.config.num_layers)
        ]
        return cls(
            model.config,
            layers,
            params["head.weight"],
            params["head.bias"],
            params.get("quantile_head.weight"),
            params.get("quantile_head.bias"),
        )

    @classmethod
    def from_onnx(cls, path: str | Path) -> ForecasterReference:
        """Weights from the graph: the native LSTM/GRU nodes and the head, found by its shape
        [hidden, horizon * (columns + 1)] (a MatMul) and its bias (an Add)."""
        import onnx
        from onnx import numpy_helper

        from models.forecast_spec import ForecastSpec

        proto = onnx.load(str(path))
        meta = {p.key: p.value for p in proto.metadata_props}
        config = ModelConfig.from_json(meta[METADATA_KEY])
        spec = ForecastSpec.from_dict(config.extra["forecaster"])
        constants = _graph_constants(proto, numpy_helper)
        hidden, width = config.hidden_size, spec.head_outputs
        # The point head, then (with quantile levels) the quantile head, in graph order. Graphs
        # that read out in one MatMul put `readout_prefix` constant outputs ahead of the point
        # head's (zero weights, bias 1); files exported before that have the head alone.
        widths = [width] + ([spec.horizon * len(config.quantiles)] if config.quantiles else [])
        prefixed = [width + spec.readout_prefix, *widths[1:]]
        # ... and with quantile levels such a MatMul holds the quantile head's columns too.
        both = sum(prefixed) if spec.readout_prefix and config.quantiles else 0
        layers: list[LayerWeights] = []
        weights: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        for node in proto.graph.node:
            if node.op_type in ("LSTM", "GRU"):
                w, r, b = (constants[name][0] for name in node.input[1:4])
                layers.append(_onnx_to_torch_gates(node.op_type, w, r, b, hidden))
            elif node.op_type in ("MatMul", "Gemm") and layers and len(weights) == len(biases) < len(widths):
                name, want = node.input[1], widths[len(weights)]
                shape = constants[name].shape if name in constants else None
                if not weights and both and shape == (hidden, both):  # both heads, split
                    w = constants[name]
                    weights += [w[:, prefixed[0] - width : prefixed[0]].T, w[:, prefixed[0] :].T]
                elif shape in ((hidden, want), (hidden, prefixed[len(weights)])):
                    weights.append(constants[name][:, -want:].T)
                    if node.op_type == "Gemm" and len(node.input) > 2:
                        biases.append(constants[node.input[2]][-want:])
            elif node.op_type == "Add" and len(weights) > len(biases):
                want = widths[len(biases)]
                for name in node.input:
                    shape = constants[name].shape if name in constants else None
                    if len(weights) == 2 and not biases and both and shape == (both,):
                        b = constants[name]
                        biases += [b[prefixed[0] - width : prefixed[0]], b[prefixed[0] :]]
                        break
                    if len(weights) == len(biases) + 1 and shape in ((want,), (prefixed[len(biases)],)):
                        biases.append(constants[name][-want:])
                        break
        if len(layers) != config.num_layers or len(weights) != len(widths) or len(biases) != len(widths):
            raise ValueError(f"{path}: graph does not hold {config.num_layers} {config.cell} layers and its heads")
        if config.quantiles:
            return cls(config, layers, weights[0], biases[0], weights[1], biases[1])
        return cls(config, layers, weights[0], biases[0])


def _damped_trend(spec: Any, newest_first: list[float]) -> tuple[float, float]:
    """Level and trend of the damped-trend smoother from the readings seen (newest first), as
    forecast_spec's `trend` says: the recursion's response to a reading of each age (run on a
    unit impulse), moved to the nearest weights that read a line a - s x age as level a and
    trend s."""
    alpha, beta, phi = spec.smooth_alpha, spec.trend_beta, spec.trend_phi
    c = len(newest_first)
    if c == 1:
        return newest_first[0], 0.0
    responses = np.zeros((c, 2))
    level, trend = 0.0, 0.0
    for age in range(c):  # a unit reading at age 0, then zeros: its weight at each later age
        reading = 1.0 if age == 0 else 0.0
        new_level = alpha * reading + (1 - alpha) * (level + phi * trend)
        trend = beta * (new_level - level) + (1 - beta) * phi * trend
        level = new_level
        responses[age] = (level, trend)
    ages = np.arange(c, dtype=np.float64)
    basis = np.stack([np.ones(c), -ages], axis=1)
    out = []
    for column, want in ((0, np.array([1.0, 0.0])), (1, np.array([0.0, 1.0]))):
        weights = responses[:, column]
        fix = np.linalg.solve(basis.T @ basis, want - basis.T @ weights)
        out.append(float((weights + basis @ fix) @ np.asarray(newest_first)))
    return out[0], out[1]


def _graph_constants(proto: Any, numpy_helper: Any) -> dict[str, np.ndarray]:
    constants: dict[str, np.ndarray] = {
        t.name: numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer
    }
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t).astype(np.float64)
    return constants


def load_reference(path: str | Path) -> ReferenceModel | ForecasterReference:
    """The right reference for an exported file: forecaster or plain recurrent model."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    config = ModelConfig.from_json(meta[METADATA_KEY])
    if config.extra.get("forecaster"):
        return ForecasterReference.from_onnx(path)
    return ReferenceModel.from_onnx(path)


def reference_for(model: Any) -> ReferenceModel | ForecasterReference:
    """The reference of a torch model (forecaster or plain)."""
    if model.config.extra.get("forecaster"):
        return ForecasterReference.from_torch(model)
    return ReferenceModel.from_torch(model)

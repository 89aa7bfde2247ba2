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

from models.config import METADATA_KEY, ModelConfig


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


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
    return (1.0 - update_gate) * candidate + update_gate * h


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

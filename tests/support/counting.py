"""A model that counts: its state is (steps applied, sum of readings), so the server's own
state says exactly how many steps were applied to a session and, step by step, which
readings. Exactly-once tests read the truth from it instead of trusting `position`.

Graph (the seqserve signature, a GRU-shaped config with one layer of width 2):
    input [B, T, 1], h0 [1, B, 2]  ->  output [B, T, 2], hn [1, B, 2]
    output[b, t] = h0[0, b] + (t + 1, x[b, 0] + ... + x[b, t])
    hn[0, b]     = output[b, T - 1]
Readings should be small integers so every sum is exact in float32 (below 2**24).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from models.config import METADATA_KEY, ModelConfig, Normalization


def counting_config(width: int = 2, extra: dict | None = None) -> ModelConfig:
    return ModelConfig(
        cell="gru",
        input_size=1,
        hidden_size=width,
        output_size=2,
        num_layers=1,
        features=("reading",),
        outputs=("count", "sum"),
        normalization=Normalization.identity(1, 2),
        extra=dict(extra or {}),
    )


def counting_graph(width: int = 2, extra: dict | None = None) -> onnx.ModelProto:
    """`width` > 2 pads the state with zeros (a model with another state layout)."""
    const = helper.make_tensor
    nodes = [
        helper.make_node("Constant", [], ["axis1"], value=const("axis1", TensorProto.INT64, [], [1])),
        helper.make_node("Constant", [], ["last"], value=const("last", TensorProto.INT64, [], [-1])),
        helper.make_node("Constant", [], ["zero0"], value=const("zero0", TensorProto.INT64, [1], [0])),
        helper.make_node("Constant", [], ["keep"], value=const("keep", TensorProto.INT64, [1], [2])),
        helper.make_node("Constant", [], ["starts"], value=const("starts", TensorProto.INT64, [1], [0])),
        helper.make_node("Constant", [], ["pads"], value=const("pads", TensorProto.INT64, [6], [0] * 5 + [width - 2])),
        helper.make_node("CumSum", ["input", "axis1"], ["sums"]),
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=const("one", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("CumSum", ["ones", "axis1"], ["counts"]),
        helper.make_node("Concat", ["counts", "sums"], ["steps"], axis=2),
        helper.make_node("Transpose", ["h0"], ["h0t"], perm=[1, 0, 2]),
        helper.make_node("Slice", ["h0t", "starts", "keep", "keep"], ["h0c"]),
        helper.make_node("Add", ["steps", "h0c"], ["output"]),
        helper.make_node("Gather", ["output", "last"], ["final"], axis=1),
        helper.make_node("Unsqueeze", ["final", "zero0"], ["hn2"]),
        helper.make_node("Pad", ["hn2", "pads"], ["hn"]),
    ]
    graph = helper.make_graph(
        nodes,
        "counting",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "time", 1]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "batch", width]),
        ],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", "time", 2]),
            helper.make_tensor_value_info("hn", TensorProto.FLOAT, [1, "batch", width]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, counting_config(width, extra).to_json()
    onnx.checker.check_model(model)
    return model


def export_counting(
    repository: Path, name: str = "count", version: int = 1, width: int = 2, extra: dict | None = None
) -> Path:
    path = repository / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(counting_graph(width, extra), str(path))
    return path


def applied(outputs: list) -> np.ndarray:
    """A step response's outputs as [T, 2] (count, sum) after each of its steps."""
    return np.asarray(outputs, np.float64).reshape(-1, 2)

"""torch -> ONNX with the recurrent state as explicit graph inputs and outputs, then proof.

Graph signature (dynamic batch and time), states in `config.state_specs` order:
    input [B, T, F], h0 [L, B, H] (, c0 [L, B, H]) (, ring0 ...)  ->  output [B, T, O], hn (, cn) (, ringn ...)

Any module with a `.config` (ModelConfig), `init_state(batch)` and `forward(x, state)` exports:
the plain RecurrentModel and the history-state Forecaster alike.

The legacy TorchScript exporter (dynamo=False) emits one native ONNX LSTM/GRU node per layer,
which ONNX Runtime runs as a fused kernel. Every export is checked before it is accepted:
the onnx checker, then ONNX Runtime against torch on random inputs of several batch sizes and
lengths (length 1 included, as streaming uses it). A disagreement raises ExportError.

A forecaster with the robust state update (models/forecast_spec.py) exports one pass of its
graph (`Forecaster._robust_pass`, the target as the state takes it as an extra input) and wraps
it (`_fixed_point`): the pass from the raw readings, then an ONNX Loop that reruns the pass from
the readings the last one took until they come back unchanged. The Loop's condition is false
from the start for nearly every call (nothing far outside), so a streamed step runs one pass
and a Loop node that does nothing.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.config import METADATA_KEY, ModelConfig
from models.reference import tolerance

OPSET = 17
DEFAULT_PARITY_CASES: tuple[tuple[int, int], ...] = ((1, 1), (3, 1), (1, 17), (4, 64), (2, 257))


class ExportError(RuntimeError):
    """The exported graph is invalid or does not compute what the torch model computes."""


def input_names(config: ModelConfig) -> list[str]:
    return ["input", *(f"{s}0" for s in config.state_names)]


def output_names(config: ModelConfig) -> list[str]:
    """The streaming contract: forecasts, then the new states (what a caller feeds back)."""
    return ["output", *(f"{s}n" for s in config.state_names)]


def graph_output_names(config: ModelConfig) -> list[str]:
    """Every graph output: `output_names`, then the extras (quantiles, anomaly) of a model with
    levels; a caller that asks only for the first ones runs the same graph unchanged."""
    return [*output_names(config), *config.extra_outputs]


class _FlatSignature(nn.Module):
    """The exporter wants positional tensors in and a flat tuple out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        return _graph_outputs(self.model, x, tuple(state))


class _RobustPass(nn.Module):
    """One pass of a robust forecaster (`Forecaster._robust_pass`), positional for the exporter."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, cleaned: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        point, states, quantiles, anomaly, taken = self.model._robust_pass(x, cleaned, tuple(state))  # type: ignore[operator]
        return (point, *states, quantiles, anomaly, taken)


def _rename(graph: Any, rename: Callable[[str], str]) -> None:
    """Rename every value `graph`'s nodes read or write, its inputs and outputs, into its
    nodes' subgraphs too (an ONNX If or Loop of the Holt-Winters recursion): `rename` says how
    (names it keeps: the outer scope's)."""
    for node in graph.node:
        node.input[:] = [rename(n) if n else n for n in node.input]
        node.output[:] = [rename(n) if n else n for n in node.output]
        if node.name:
            node.name = rename(node.name)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename(sub, rename)
                for value in [*sub.input, *sub.output]:
                    value.name = rename(value.name)
    del graph.value_info[:]


def _fixed_point(proto: Any, config: ModelConfig, target: int) -> Any:
    """The pass graph `proto` (inputs input, cleaned, states; outputs `graph_output_names`,
    taken) wrapped as the served graph (inputs input, states): the pass on the raw target
    column, then a Loop of passes while the readings taken change (at most T more: pass p gets
    every step before p right)."""
    import copy

    import onnx
    from onnx import TensorProto, helper

    graph = proto.graph
    outer = {i.name for i in graph.initializer} | {i.name for i in graph.input if i.name != "cleaned"}
    outs = [o.name for o in graph.output]  # graph_output_names, then "taken"
    body = copy.deepcopy(graph)
    del body.initializer[:], body.input[:], body.output[:]
    _rename(body, lambda n: n if n in outer else f"pass/{n}")
    first = copy.deepcopy(graph)
    _rename(first, lambda n: f"first/{n}" if n in outs else n)

    def value(name: str, like: Any = None, elem: int = TensorProto.FLOAT) -> Any:
        if like is None:
            return helper.make_tensor_value_info(name, elem, [])
        dims = [d.dim_param or d.dim_value or None for d in like.type.tensor_type.shape.dim]
        return helper.make_tensor_value_info(name, like.type.tensor_type.elem_type, dims)

    def changed(new: str, old: str, prefix: str) -> list[Any]:
        """Nodes computing the bool scalar `<prefix>changed`: any reading taken differs, as the
        sum of the differences' magnitudes is not 0 (with gradual underflow x - y is 0 only when
        x == y; a NaN or infinite one counts as changed, the trip count bounds the Loop)."""
        return [
            helper.make_node("Sub", [new, old], [f"{prefix}moved"]),
            helper.make_node("ReduceL1", [f"{prefix}moved"], [f"{prefix}moved_sum"], keepdims=0),
            helper.make_node("Cast", [f"{prefix}moved_sum"], [f"{prefix}changed"], to=TensorProto.BOOL),
        ]

    order = [graph.output[-1], *graph.output[:-1]]  # taken first, as the body returns them
    carried = [value(f"pass/{o.name}", o) for o in order]
    body_graph = helper.make_graph(
        [*body.node, *changed("pass/taken", "pass/cleaned", "pass/")],
        "robust_pass",
        [
            value("pass/iteration", elem=TensorProto.INT64),
            value("pass/condition", elem=TensorProto.BOOL),
            value("pass/cleaned", graph.output[-1]),
            *(value(f"pass/previous/{n}", o) for n, o in zip(outs[:-1], graph.output[:-1], strict=True)),
        ],
        [value("pass/changed", elem=TensorProto.BOOL), *carried],
    )
    constants = [
        helper.make_tensor("robust/time_axis", TensorProto.INT64, [], [1]),
    ]
    if config.input_size == 1:
        source = [helper.make_node("Identity", ["input"], ["cleaned"])]
    else:
        source = [helper.make_node("Slice", ["input", "robust/start", "robust/end", "robust/axis"], ["cleaned"])]
        constants += [
            helper.make_tensor("robust/start", TensorProto.INT64, [1], [target]),
            helper.make_tensor("robust/end", TensorProto.INT64, [1], [target + 1]),
            helper.make_tensor("robust/axis", TensorProto.INT64, [1], [2]),
        ]
    nodes = [
        *source,
        *first.node,
        *changed("first/taken", "cleaned", "first/"),
        helper.make_node("Shape", ["input"], ["robust/shape"]),
        helper.make_node("Gather", ["robust/shape", "robust/time_axis"], ["robust/steps"], axis=0),
        helper.make_node(
            "Loop",
            ["robust/steps", "first/changed", "first/taken", *(f"first/{n}" for n in outs[:-1])],
            ["robust/taken", *outs[:-1]],
            body=body_graph,
        ),
    ]
    main = helper.make_graph(
        nodes,
        graph.name,
        [i for i in graph.input if i.name != "cleaned"],
        list(graph.output[:-1]),
        [*graph.initializer, *constants],
    )
    model = helper.make_model(main, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    model.producer_name, model.producer_version = proto.producer_name, proto.producer_version
    return onnx.shape_inference.infer_shapes(model)


def _graph_outputs(model: nn.Module, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Every graph output in `graph_output_names` order: forecasts, states, then any extras."""
    own = getattr(model, "graph_outputs", None)
    if own is not None:
        y, new_state, extras = own(x, state)
        return (y, *new_state, *extras)
    y, new_state = model(x, state)
    return (y, *new_state)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
    parity_cases: Iterable[tuple[int, int]] = DEFAULT_PARITY_CASES,
    seed: int = 0,
) -> float:
    """Export `model` to `path` and verify it; returns the worst parity error seen."""
    import onnx

    config: ModelConfig = model.config  # type: ignore[assignment]
    model = model.eval().cpu()
    example_batch, example_len = 2, 3  # >= 2 each, or the exporter fixes those axes
    x = torch.randn(example_batch, example_len, config.input_size)
    state = model.init_state(example_batch)  # type: ignore[operator]  # both model classes have it

    batch_time = {0: "batch", 1: "time"}
    dynamic_axes = {"input": batch_time, "output": batch_time}
    for name in [*input_names(config)[1:], *output_names(config)[1:]]:
        dynamic_axes[name] = {1: "batch"}
    for name in config.extra_outputs:
        dynamic_axes[name] = batch_time

    robust = bool(getattr(model, "robust", False))
    names_in, names_out = input_names(config), graph_output_names(config)
    wrapper: nn.Module = _FlatSignature(model).eval()
    example: tuple[Tensor, ...] = (x, *state)
    if robust:  # one pass, wrapped in its fixed point below
        wrapper = _RobustPass(model).eval()
        target = int(model.spec.target_index)  # type: ignore[union-attr,arg-type]
        example = (x, x[:, :, target : target + 1], *state)
        names_in, names_out = [names_in[0], "cleaned", *names_in[1:]], [*names_out, "taken"]
        dynamic_axes["cleaned"] = dynamic_axes["taken"] = batch_time

    buffer = io.BytesIO()
    # The exporter warns about fixed batch sizes for RNNs; our states are graph inputs with a
    # dynamic batch axis, which is the remedy it suggests, and parity below proves it.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            example,
            buffer,  # type: ignore[arg-type]  # a file object is accepted; torch's hint names only paths
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    # The exporter restores the wrapper's training mode afterwards; parity must run in eval
    # mode (dropout off), as served.
    model.eval()
    proto = onnx.load_from_string(buffer.getvalue())
    if robust:
        proto = _fixed_point(proto, config, target)
    entries = {METADATA_KEY: config.to_json(), **(metadata or {})}
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.producer_name = "seqserve"
    proto.doc_string = (
        f"{config.cell.upper()} x{config.num_layers} hidden {config.hidden_size}: "
        f"raw features {list(config.feature_names)} -> {list(config.output_names)}"
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx checker rejected the export: {exc}") from exc

    data = proto.SerializeToString()
    worst = check_parity(model, data, parity_cases, seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return worst


def random_state(model: nn.Module, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """States to check parity from: the model's own plausible ones when it defines them."""
    own = getattr(model, "random_state", None)
    if own is not None:
        states: list[np.ndarray] = own(batch, rng)
        return states
    shapes = model.config.state_shapes(batch)  # type: ignore[union-attr,operator]
    return [(0.5 * rng.standard_normal(shape)).astype(np.float32) for shape in shapes]


def random_input(model: nn.Module, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Raw readings around the data's level and spread, as the model will see them."""
    own = getattr(model, "random_input", None)
    if own is not None:
        readings: np.ndarray = own(batch, steps, rng)
        return readings
    config: ModelConfig = model.config  # type: ignore[assignment]
    norm = config.normalization
    mean = np.asarray(norm.input_mean) if norm else 0.0
    std = np.asarray(norm.input_std) if norm else 1.0
    return (rng.standard_normal((batch, steps, config.input_size)) * std + mean).astype(np.float32)


def check_parity(
    model: nn.Module,
    onnx_model: bytes | str | Path,
    cases: Iterable[tuple[int, int]] = DEFAULT_PARITY_CASES,
    seed: int = 0,
) -> float:
    """Run ONNX Runtime and torch on the same random raw inputs and states; raise on mismatch."""
    import onnxruntime as ort

    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    config: ModelConfig = model.config  # type: ignore[assignment]
    model.eval()
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch, steps in cases:
        x = random_input(model, batch, steps, rng)
        state = random_state(model, batch, rng)
        with torch.no_grad():
            made = _graph_outputs(model, torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state))
        expected = [t.numpy() for t in made]
        feeds = dict(zip(input_names(config), [x, *state], strict=True))
        got = session.run(graph_output_names(config), feeds)
        for name, want, have in zip(graph_output_names(config), expected, got, strict=True):
            if want.shape != have.shape:
                raise ExportError(f"{name}: shape {have.shape} from ONNX Runtime, {want.shape} from torch")
            err = float(np.max(np.abs(want - have)))
            if err > tolerance(want):
                raise ExportError(
                    f"{name} differs between torch and ONNX Runtime by {err:.3g} "
                    f"(batch {batch}, length {steps}; tolerance {tolerance(want):.3g})"
                )
            worst = max(worst, err)
    return worst

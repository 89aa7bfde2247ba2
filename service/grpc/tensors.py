"""Protobuf <-> numpy for the V2 gRPC messages: input tensors from typed contents
(`contents.fp32_contents`) or raw little-endian bytes (`raw_input_contents`, what tritonclient
sends), request parameters as plain Python values, and replies with raw output contents (what
Triton answers and tritonclient reads). Validation of what the tensors mean is shared with HTTP
(service/core/v2.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from service.core import v2 as inference
from service.core.registry import LoadedModel
from service.core.v2 import DATATYPE, InferenceRequestError
from service.grpc import grpc_service_pb2 as pb

Error = InferenceRequestError


def parameters(params: Any) -> dict[str, Any]:
    """A protobuf map<string, InferParameter> as {name: bool | int | str | float}."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, choice) if choice is not None else None
    return out


def decode_inputs(request: pb.ModelInferRequest, model: LoadedModel, max_batch: int, max_steps: int) -> dict:
    """Validated inputs by name, from typed contents or raw contents (one per input)."""
    if not request.inputs:
        raise Error(f"inputs must be a non-empty list of tensors; model '{model.name}' takes {model.input_names}")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise Error(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input "
            "(or typed contents for all)"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        shape = inference.check_tensor(name, tensor.datatype, list(tensor.shape), model, max_batch, max_steps)
        if name in arrays:
            raise Error(f"input '{name}' is given twice", field=name)
        count = math.prod(shape)
        if raw:
            if tensor.HasField("contents"):
                raise Error(f"input '{name}' has both contents and raw_input_contents; send one", field=name)
            data = raw[i]
            if len(data) != count * 4:
                raise Error(
                    f"input '{name}': raw contents hold {len(data)} bytes; shape {shape} of FP32 needs {count * 4}",
                    field=name,
                )
            arrays[name] = np.frombuffer(data, "<f4").reshape(shape)
        else:
            values = tensor.contents.fp32_contents
            if len(values) != count:
                others = [f for f, _ in tensor.contents.ListFields() if f.name != "fp32_contents"]
                hint = f" (it has {others[0].name}; FP32 data goes in fp32_contents)" if others else ""
                raise Error(
                    f"input '{name}': shape {shape} needs {count} value{'' if count == 1 else 's'} in fp32_contents, "
                    f"got {len(values)}{hint}",
                    field=name,
                    expected=count,
                )
            arrays[name] = np.array(values, np.float32).reshape(shape)
    inference.check_inputs(arrays, model)
    return arrays


def requested_outputs(request: pb.ModelInferRequest, model: LoadedModel, options: inference.Options) -> list[str]:
    if not request.outputs:
        return inference.default_outputs(model, options)
    names = []
    for out in request.outputs:
        if "classification" in out.parameters:
            raise Error("the classification extension is not supported", field="outputs")
        names.append(out.name)
    inference.check_outputs(names, model)
    return names


def response(result: inference.Result, request_id: str) -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse(model_name=result.model.name, model_version=str(result.model.version), id=request_id)
    for name, array in result.tensors.items():
        reply.outputs.add(name=name, datatype=DATATYPE, shape=array.shape)
        reply.raw_output_contents.append(np.ascontiguousarray(array, "<f4").tobytes())
    if result.position is not None:
        reply.parameters["sequence_position"].int64_param = result.position
    if result.times is not None:  # [batch][time][lead] ISO times, as a JSON string
        reply.parameters["forecast_times"].string_param = orjson.dumps(result.times).decode()
    return reply

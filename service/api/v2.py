"""KServe V2 / Open Inference Protocol over HTTP, compatible with Triton's clients.

Metadata, readiness and inference for every loaded model version:

    GET  /v2                                          server metadata
    GET  /v2/models/{name}[/versions/{v}]             model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready       200 when loaded, 404 when not
    POST /v2/models/{name}[/versions/{v}]/infer       inference

(`/v2/health/live` and `/v2/health/ready` live in service/api/health.py.)

Tensors. Inputs: `input` FP32 [batch, time, features]; optional explicit state `h0` (and `c0`
for an LSTM) FP32 [layers, batch, hidden], both or none (default zeros). Outputs: `output` FP32
[batch, time, outputs] and the final state `hn` (and `cn`). Tensor data comes as JSON `data`
(flat row-major, nested lists tolerated) or in the binary tensor data extension (Triton's
default: `Inference-Header-Content-Length` header, `binary_data_size` per input). Outputs come
back as JSON data, or binary where the request asks (`binary_data` per output, or
`binary_data_output` for all).

Which outputs: the request's `outputs` list, when given, exactly (in its order). Without one,
a stateless request gets every model output (`output`, `hn`[, `cn`]) as the protocol says,
and a sequence request gets `output` only: its state is implicit and stays on the server.

Sequences (Triton's sequence extension), in request `parameters`: `sequence_id` (non-zero
int or non-empty string; 0 and "" mean none), `sequence_start`, `sequence_end`. A sequence is
a session of the SessionManager under the deterministic id `v2:<model>:<sequence_id>` (model
names cannot hold ':'; 5 and "5" name the same sequence), so it lives in the configured
session store (memory or Redis), its steps go through the batcher, are applied exactly once
and in order, and it expires after the session idle TTL. `sequence_start` (re)starts it from
zero state, or from `h0`/`c0` when given (only allowed at the start); a step of a sequence that
was never started, has ended or expired is a 400; `sequence_end` deletes it after the step.
Sequence requests take batch 1. `hn`/`cn` may be requested on a sequence step: they are read
back after the step, and a 409 says so if another step of the same sequence got in between.

Errors are the project's JSON errors ({"error": message, "code", ...}), which is the
protocol's error form; malformed requests are 400.

Parsing is orjson for the JSON and one numpy call per tensor, never Python work per float.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from service.api.deps import services
from service.errors import (
    BadRequest,
    MalformedJSON,
    PositionConflict,
    SessionExpired,
    SessionNotFound,
)
from service.registry import LoadedModel

router = APIRouter(tags=["v2"])

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "parameters", "sequence"]
DATATYPE = "FP32"
HEADER_LENGTH = "inference-header-content-length"
REQUEST_FIELDS = frozenset({"id", "parameters", "inputs", "outputs"})
TENSOR_FIELDS = frozenset({"name", "shape", "datatype", "parameters", "data"})
OUTPUT_FIELDS = frozenset({"name", "parameters"})
MAX_SEQUENCE_ID_CHARS = 128
JSON = "application/json"


class InferenceRequestError(BadRequest):
    """A V2 request the protocol rejects (400): bad tensor, datatype, shape, parameter."""

    code = "invalid_inference_request"


Error = InferenceRequestError


# ---------------------------------------------------------------------------- metadata


def _version(version: str | None) -> int | None:
    if version is None:
        return None
    if not (version.isascii() and version.isdigit()) or len(version) > 18:
        raise Error(f"model version must be a positive integer, got {version!r}", field="version")
    return int(version)


def _tensor_metadata(model: LoadedModel) -> tuple[list[dict], list[dict]]:
    cfg = model.config
    state = [cfg.num_layers, -1, cfg.hidden_size]
    inputs = [{"name": "input", "datatype": DATATYPE, "shape": [-1, -1, cfg.input_size]}]
    inputs += [{"name": n, "datatype": DATATYPE, "shape": state} for n in model.input_names[1:]]
    outputs = [{"name": "output", "datatype": DATATYPE, "shape": [-1, -1, cfg.output_size]}]
    outputs += [{"name": n, "datatype": DATATYPE, "shape": state} for n in model.output_names[1:]]
    return inputs, outputs


def _model_metadata(request: Request, name: str, version: str | None) -> Response:
    registry = services(request).registry
    model = registry.get(name, _version(version))
    versions = [model.version] if version is not None else registry.versions(name)
    inputs, outputs = _tensor_metadata(model)
    body = {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }
    return Response(orjson.dumps(body), media_type=JSON)


def _model_ready(request: Request, name: str, version: str | None) -> Response:
    model = services(request).registry.get(name, _version(version))  # 404 when not loaded
    body = {"name": model.name, "version": str(model.version), "ready": True}
    return Response(orjson.dumps(body), media_type=JSON)


@router.get("/v2")
async def server_metadata(request: Request) -> Response:
    body = {"name": "seqserve", "version": request.app.version, "extensions": EXTENSIONS}
    return Response(orjson.dumps(body), media_type=JSON)


@router.get("/v2/models/{name}")
async def model_metadata(name: str, request: Request) -> Response:
    return _model_metadata(request, name, None)


@router.get("/v2/models/{name}/versions/{version}")
async def model_version_metadata(name: str, version: str, request: Request) -> Response:
    return _model_metadata(request, name, version)


@router.get("/v2/models/{name}/ready")
async def model_ready(name: str, request: Request) -> Response:
    return _model_ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_version_ready(name: str, version: str, request: Request) -> Response:
    return _model_ready(request, name, version)


# ---------------------------------------------------------------------------- request parsing


def _check_fields(value: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Error(f"{what} must be a JSON object")
    unknown = value.keys() - allowed
    if unknown:
        raise Error(f"{what} has unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    return value


async def _read_request(request: Request) -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary tensor data after it (b"" when none)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Error(f"Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    raw = await request.body()
    header = request.headers.get(HEADER_LENGTH)
    if header is None:
        json_part, binary = raw, b""
    else:
        header = header.strip()
        if not (header.isascii() and header.isdigit()) or int(header) > len(raw):
            raise Error(f"Inference-Header-Content-Length {header!r} must be an integer no larger than the body")
        size = int(header)
        json_part, binary = raw[:size], raw[size:]
    if not json_part:
        raise MalformedJSON("request body is empty; expected a JSON inference request")
    try:
        body = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"inference request is not valid JSON: {exc}") from None
    return _check_fields(body, REQUEST_FIELDS, "inference request"), binary


def _shape(spec: dict[str, Any], name: str) -> list[int]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise Error(f"input '{name}': shape must be an array of non-negative integers, got {shape!r}", field=name)
    return shape


def _array(spec: dict[str, Any], name: str, shape: list[int], binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    """The tensor's data as float32 of `shape`, and the offset after its binary data."""
    count = math.prod(shape)
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise Error(f"input '{name}': parameters must be an object", field=name)
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in spec:
            raise Error(f"input '{name}' has both data and binary_data_size; send one", field=name)
        if type(size) is not int or size != count * 4:
            raise Error(
                f"input '{name}': binary_data_size {size!r} does not match shape {shape} of FP32 ({count * 4} bytes)",
                field=name,
            )
        if offset + size > len(binary):
            raise Error(f"input '{name}': the binary data ends before its {size} bytes", field=name)
        array = np.frombuffer(binary, "<f4", count, offset).reshape(shape)
        return array, offset + size
    data = spec.get("data")
    if not isinstance(data, list):
        raise Error(
            f"input '{name}' needs data: a flat, row-major array of {count} numbers (or binary_data_size)", field=name
        )
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise Error(f"input '{name}': data must be a flat array of numbers", field=name) from None
    if array.dtype.kind not in "fiu":
        raise Error(f"input '{name}': data must hold only numbers (FP32)", field=name)
    if array.size != count:
        raise Error(
            f"input '{name}': shape {shape} needs {count} values, data has {array.size}",
            field=name,
            expected=count,
        )
    with np.errstate(over="ignore"):
        array = array.astype(np.float32).reshape(shape)
    return array, offset


def _decode_inputs(specs: Any, binary: bytes, model: LoadedModel, max_batch: int, max_steps: int) -> dict:
    """Validated inputs by name: `input` [B, T, F] and any state tensors [L, B, H]."""
    cfg = model.config
    allowed = model.input_names
    if not isinstance(specs, list) or not specs:
        raise Error(f"inputs must be a non-empty array of tensors; model '{model.name}' takes {allowed}")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, spec in enumerate(specs):
        spec = _check_fields(spec, TENSOR_FIELDS, f"inputs[{i}]")
        name = spec.get("name")
        if not isinstance(name, str):
            raise Error(f"inputs[{i}] needs a name; model '{model.name}' takes {allowed}")
        if name not in allowed:
            raise Error(f"unknown input '{name}'; model '{model.name}' takes {allowed}", field=name)
        if name in arrays:
            raise Error(f"input '{name}' is given twice", field=name)
        datatype = spec.get("datatype")
        if datatype != DATATYPE:
            raise Error(f"input '{name}' has datatype {datatype!r}; it must be FP32", field=name, expected=DATATYPE)
        shape = _shape(spec, name)
        if name == "input":
            if len(shape) != 3 or shape[2] != cfg.input_size or 0 in shape:
                raise Error(
                    f"input 'input' must have shape [batch, time, {cfg.input_size}] with batch, time >= 1 "
                    f"(features {list(cfg.feature_names)}); got {shape}",
                    field=name,
                    expected=[-1, -1, cfg.input_size],
                )
            if shape[0] > max_batch:
                raise Error(f"input 'input' has batch {shape[0]}; at most {max_batch}", limit="max_batch_size")
            if shape[1] > max_steps:
                raise Error(f"input 'input' has {shape[1]} steps; at most {max_steps}", limit="max_steps_per_request")
        array, offset = _array(spec, name, shape, binary, offset)
        if not np.isfinite(array).all():
            raise Error(f"input '{name}' holds NaN, infinite or out-of-range values", field=name)
        arrays[name] = array
    if offset != len(binary):
        raise Error(f"the request has {len(binary) - offset} bytes of binary data that no input claims")
    if "input" not in arrays:
        raise Error(f"input tensor 'input' is required: FP32 [batch, time, {cfg.input_size}]", field="input")
    batch = arrays["input"].shape[0]
    given = [n for n in allowed[1:] if n in arrays]
    if given and len(given) != len(allowed) - 1:
        raise Error(f"explicit state needs all of {allowed[1:]} (or none for zeros); got {given}", field="state")
    expected = [cfg.num_layers, batch, cfg.hidden_size]
    for n in given:
        if list(arrays[n].shape) != expected:
            raise Error(f"input '{n}' must have shape {expected}, got {list(arrays[n].shape)}", field=n)
    return arrays


def _requested_outputs(specs: Any, model: LoadedModel, default: list[str], binary: bool) -> list[tuple[str, bool]]:
    """(name, as binary) per output to return."""
    if specs is None:
        return [(n, binary) for n in default]
    if not isinstance(specs, list):
        raise Error("outputs must be an array of {name, parameters?}")
    chosen: list[tuple[str, bool]] = []
    for i, spec in enumerate(specs):
        spec = _check_fields(spec, OUTPUT_FIELDS, f"outputs[{i}]")
        name = spec.get("name")
        if name not in model.output_names:
            raise Error(f"unknown output {name!r}; model '{model.name}' gives {model.output_names}", field="outputs")
        if any(name == n for n, _ in chosen):
            raise Error(f"output '{name}' is requested twice", field="outputs")
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise Error(f"outputs[{i}].parameters must be an object")
        if params.get("classification"):
            raise Error("the classification extension is not supported", field="outputs")
        as_binary = params.get("binary_data", binary)
        if not isinstance(as_binary, bool):
            raise Error(f"outputs[{i}].parameters.binary_data must be true or false")
        chosen.append((name, as_binary))
    return chosen


def _sequence(params: dict[str, Any]) -> tuple[str | None, bool, bool]:
    """(sequence id as text or None, start, end) from the request parameters."""
    seq_id = params.get("sequence_id")
    start = params.get("sequence_start", False)
    end = params.get("sequence_end", False)
    if not isinstance(start, bool) or not isinstance(end, bool):
        raise Error("sequence_start and sequence_end must be true or false", field="parameters")
    if seq_id is None or seq_id == 0 or seq_id == "":
        if start or end:
            raise Error("sequence_start/sequence_end need a non-zero sequence_id", field="sequence_id")
        return None, False, False
    if type(seq_id) is int:
        if not 0 < seq_id < 2**64:
            raise Error("sequence_id must be an unsigned 64-bit integer or a string", field="sequence_id")
        return str(seq_id), start, end
    if isinstance(seq_id, str):
        if len(seq_id) > MAX_SEQUENCE_ID_CHARS or not seq_id.isprintable():
            raise Error(
                f"a string sequence_id must be printable and at most {MAX_SEQUENCE_ID_CHARS} characters",
                field="sequence_id",
            )
        return seq_id, start, end
    raise Error("sequence_id must be an unsigned 64-bit integer or a string", field="sequence_id")


def _response(model_name: str, version: int, request_id: Any, outputs: list[tuple[str, np.ndarray, bool]]) -> Response:
    items = []
    blobs = []
    for name, array, as_binary in outputs:
        item: dict[str, Any] = {"name": name, "datatype": DATATYPE, "shape": list(array.shape)}
        if as_binary:
            blob = np.ascontiguousarray(array, "<f4").tobytes()
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = np.ascontiguousarray(array, np.float32).ravel()
        items.append(item)
    body: dict[str, Any] = {"model_name": model_name, "model_version": str(version)}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = items
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return Response(header, media_type=JSON)
    return Response(
        b"".join([header, *blobs]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


# ---------------------------------------------------------------------------- inference


async def _infer(request: Request, name: str, version: str | None) -> Response:
    svc = services(request)
    model = svc.registry.get(name, _version(version))
    body, binary = await _read_request(request)
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise Error("id must be a string", field="id")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise Error("parameters must be an object", field="parameters")
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise Error("binary_data_output must be true or false", field="binary_data_output")
    seq_id, start, end = _sequence(params)
    settings = svc.settings
    arrays = _decode_inputs(body.get("inputs"), binary, model, settings.max_batch_size, settings.max_steps_per_request)
    x = arrays["input"]
    default = ["output"] if seq_id is not None else model.output_names
    wanted = _requested_outputs(body.get("outputs"), model, default, binary_output)

    if seq_id is None:
        given = tuple(arrays[n] for n in model.input_names[1:] if n in arrays)
        state = given or model.zero_state(x.shape[0])
        outputs, final = await svc.batcher_for(model).run(x, state)
        by_name = dict(zip(model.output_names, (outputs, *final), strict=True))
        return _response(model.name, model.version, request_id, [(n, by_name[n], b) for n, b in wanted])

    if x.shape[0] != 1:
        raise Error(f"sequence requests take batch 1; input has batch {x.shape[0]}", field="input")
    session_id = f"v2:{model.name}:{seq_id}"
    manager = svc.manager
    if start:
        state_in = None
        if model.input_names[1] in arrays:
            names = model.config.state_names
            state_in = {s: arrays[f"{s}0"][:, 0, :].tolist() for s in names}
        await manager.create(model.name, model.version, state=state_in, session_id=session_id)
    else:
        if len(arrays) > 1:
            raise Error(
                "h0/c0 can only be given with sequence_start; a running sequence carries its own state", field="state"
            )
        if version is not None:
            record = await _sequence_record(manager, session_id, seq_id, model.name)
            if record.version != model.version:
                raise Error(
                    f"sequence {seq_id!r} runs on version {record.version} of model '{model.name}', "
                    f"not {model.version}",
                    field="version",
                )
    try:
        step = orjson.loads(await manager.step(session_id, x[0].tolist()))
    except (SessionNotFound, SessionExpired) as exc:
        raise _not_started(seq_id, model.name, exc) from None
    served = svc.registry.get(step["model"], step["version"])
    tensors: dict[str, np.ndarray] = {"output": np.asarray(step["outputs"], np.float32)[None]}
    if any(n != "output" for n, _ in wanted):
        record = await _sequence_record(manager, session_id, seq_id, model.name)
        if record.position != step["position"]:
            raise PositionConflict(
                f"sequence {seq_id!r} was stepped again before its state could be read; "
                "request hn/cn only where steps of one sequence do not overlap",
                position=record.position,
            )
        for n, array in zip(served.output_names[1:], record.state, strict=True):
            tensors[n] = array[:, None, :]
        missing = [n for n, _ in wanted if n not in tensors]
        if missing:
            raise Error(f"sequence {seq_id!r} runs on a model without outputs {missing}", field="outputs")
    if end:
        await manager.delete(session_id)
    return _response(served.name, served.version, request_id, [(n, tensors[n], b) for n, b in wanted])


async def _sequence_record(manager: Any, session_id: str, seq_id: str, model: str) -> Any:
    try:
        return await manager.get(session_id)
    except (SessionNotFound, SessionExpired) as exc:
        raise _not_started(seq_id, model, exc) from None


def _not_started(seq_id: str, model: str, exc: Exception) -> InferenceRequestError:
    why = "has expired" if isinstance(exc, SessionExpired) else "was not started or has ended"
    return Error(
        f"sequence {seq_id!r} of model '{model}' {why}; start it with sequence_start=true",
        field="sequence_id",
        sequence_id=seq_id,
    )


@router.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer")
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, name, version)

"""KServe V2 / Open Inference Protocol over HTTP, compatible with Triton's clients.

Metadata, readiness and inference for every loaded model version:

    GET  /v2                                          server metadata
    GET  /v2/models/{name}[/versions/{v}]             model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready       200 when loaded, 404 when not
    POST /v2/models/{name}[/versions/{v}]/infer       inference
    GET  /v2/models/{name}[/versions/{v}]/config      Triton-style model configuration
    GET  /v2/models[/{name}[/versions/{v}]]/stats     inference statistics (Triton's shape)
    POST /v2/repository/index                         every version in the repository and its state

(`/v2/health/live` and `/v2/health/ready` live in service/api/health.py; the same protocol over
gRPC lives in service/grpc/, and both go through service/core/v2.py after decoding.)

Tensors. Inputs: `input` FP32 [batch, time, features]; optional explicit state: one input
`<name>0` per state tensor of the model (`h0`, `c0` for an LSTM, and any others it declares,
e.g. a history ring `ring0`), FP32 [rows, batch, width] each, all or none (default: a fresh
state). Outputs: `output` FP32 [batch, time, outputs] and the final state `<name>n` per state
tensor (`hn`, `cn`, ...). Model metadata lists them all with their shapes. Tensor data comes
as JSON `data` (flat row-major, nested lists tolerated) or in the binary tensor data extension
(Triton's default: `Inference-Header-Content-Length` header, `binary_data_size` per input).
Outputs come back as JSON data, or binary where the request asks (`binary_data` per output, or
`binary_data_output` for all).

Which outputs: the request's `outputs` list, when given, exactly (in its order). Without one,
a stateless request gets every model output (`output` and every `<name>n`) as the protocol
says, and a sequence request gets `output` only: its state is implicit and stays on the server.

Sequences (Triton's sequence extension), in request `parameters`: `sequence_id` (non-zero
int or non-empty string; 0 and "" mean none), `sequence_start`, `sequence_end`, and the
retry-safe `sequence_position`. A sequence is a session of the step engine (service/core) under the
deterministic id `v2:<model>:<sequence_id>` (model names cannot hold ':'; 5 and "5" name the
same sequence), so it lives in the configured session store (memory or Redis), its steps go
through the batcher, are applied exactly once and in order, and it expires after the session
idle TTL. `sequence_start` (re)starts it from a fresh state, or from explicit state inputs when
given (only allowed at the start); a step of a sequence that was never started, has ended or
expired is a 400; `sequence_end` deletes it after the step. Sequence requests take batch 1.
State outputs may be requested on a sequence step: they are read back after the step, and a
409 says so if another step of the same sequence got in between. A sequence reply's
`parameters` carry `sequence_position`, the sequence's position after the step; a request that
states `sequence_position` is replayed (same position and inputs as one of the sequence's recent
steps: the recorded reply, nothing applied twice) or refused with 409 and the current position.
`timeout` (microseconds) bounds the wait (504 when exceeded) and `priority` must be 0 (400
otherwise). `start_time` (ISO 8601, the time of the first reading; no offset: UTC) sets a fresh
state's clock on a stateless request or with `sequence_start`, not with explicit state inputs.
All of it is service/core/v2.py, shared with gRPC.

Default version: without /versions/{v}, the highest version promoted by its quality gate
(service/core/registry.py); model metadata's `parameters` say which, with each version's gate.

Errors are the project's JSON errors ({"error": message, "code", ...}), which is the
protocol's error form; malformed requests are 400.

Parsing is orjson for the JSON and one numpy call per tensor, never Python work per float.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from service.api import codecs, schemas
from service.api.body import read_uncached
from service.api.deps import owner, services
from service.api.schemas import ErrorBody, body_schema, optional_body_schema
from service.api.streamed import Streamed
from service.core import triton
from service.core import v2 as inference
from service.core.errors import MalformedJSON, echo, json_problem
from service.core.v2 import InferenceRequestError, parse_version

router = APIRouter(tags=["v2"])

HEADER_LENGTH = "inference-header-content-length"
JSON = "application/json"

Error = InferenceRequestError


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type=JSON)


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorBody} for code in codes}


# ---------------------------------------------------------------------------- metadata (built in service/core/v2.py)


def _model_metadata(request: Request, name: str, version: str | None) -> Response:
    return _json(inference.model_metadata(services(request).registry, name, version))


def _model_ready(request: Request, name: str, version: str | None) -> Response:
    return _json(inference.model_ready(services(request).registry, name, version))  # 404 when not loaded


@router.get("/v2")
async def server_metadata(request: Request) -> Response:
    return _json(inference.server_metadata(request.app.version))


@router.get("/v2/models/stats", responses=_errors(400))
async def all_statistics(request: Request) -> Response:
    """Inference statistics of every loaded model version (Triton's statistics extension)."""
    return _json({"model_stats": triton.statistics(services(request), None, None)})


@router.get("/v2/models/{name}", responses=_errors(400, 404))
async def model_metadata(name: str, request: Request) -> Response:
    return _model_metadata(request, name, None)


@router.get("/v2/models/{name}/versions/{version}", responses=_errors(400, 404))
async def model_version_metadata(name: str, version: str, request: Request) -> Response:
    return _model_metadata(request, name, version)


@router.get("/v2/models/{name}/ready", responses=_errors(400, 404))
async def model_ready(name: str, request: Request) -> Response:
    return _model_ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", responses=_errors(400, 404))
async def model_version_ready(name: str, version: str, request: Request) -> Response:
    return _model_ready(request, name, version)


# ---------------------------------------------------------------------------- configuration, index, statistics


@router.get("/v2/models/{name}/config", responses=_errors(400, 404))
async def model_config(name: str, request: Request) -> Response:
    """Triton-style configuration: tensors, state tensors, `sequence_batching`."""
    return _json(triton.model_config(services(request), name, None))


@router.get("/v2/models/{name}/versions/{version}/config", responses=_errors(400, 404))
async def model_version_config(name: str, version: str, request: Request) -> Response:
    """Triton-style configuration of one version."""
    return _json(triton.model_config(services(request), name, version))


@router.get("/v2/models/{name}/stats", responses=_errors(400, 404))
async def model_statistics(name: str, request: Request) -> Response:
    """Inference statistics of every loaded version of a model."""
    return _json({"model_stats": triton.statistics(services(request), name, None)})


@router.get("/v2/models/{name}/versions/{version}/stats", responses=_errors(400, 404))
async def model_version_statistics(name: str, version: str, request: Request) -> Response:
    """Inference statistics of one model version."""
    return _json({"model_stats": triton.statistics(services(request), name, version)})


@router.post(
    "/v2/repository/index", responses=_errors(400), openapi_extra=optional_body_schema("RepositoryIndexRequest")
)
async def repository_index(request: Request) -> Response:
    """Every version in the model repository with its state (READY or UNAVAILABLE and why).
    Optional body: {"ready": true} lists only the loaded ones."""
    what = "repository index request"
    body = schemas.parse(schemas.RepositoryIndexRequest, await request.body(), what, optional=True, error=Error)
    return _json(triton.repository_index(services(request), body.get("ready", False)))


# ---------------------------------------------------------------------------- request parsing


async def _read_request(request: Request) -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary tensor data after it (b"" when none)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Error(f"Content-Encoding {echo(encoding)} is not supported; send the body uncompressed")
    raw = await read_uncached(request)
    header = request.headers.get(HEADER_LENGTH)
    if header is None:
        json_part, binary = raw, b""
    else:
        header = header.strip()
        if not (header.isascii() and header.isdigit()) or int(header) > len(raw):
            raise Error(f"Inference-Header-Content-Length {echo(header)} must be an integer no larger than the body")
        size = int(header)
        json_part, binary = raw[:size], raw[size:]
    if not json_part:
        raise MalformedJSON("request body is empty; expected a JSON inference request")
    try:
        body = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        where = "" if header is None else f" (the first {len(json_part)} bytes, Inference-Header-Content-Length)"
        raise MalformedJSON(f"inference request{where} is not valid JSON: {json_problem(exc, json_part)}") from None
    return schemas.validate(schemas.InferenceRequest, body, "inference request", Error), binary


# ---------------------------------------------------------------------------- inference


async def _infer(request: Request, name: str, version: str | None) -> Response:
    svc = services(request)
    model = svc.registry.get(name, parse_version(version))
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
    options = inference.parse_options(params)
    settings = svc.settings
    arrays = codecs.decode_inputs(
        body.get("inputs"), binary, model, settings.max_batch_size, settings.max_steps_per_request
    )
    default = inference.default_outputs(model, options)
    wanted = codecs.requested_outputs(body.get("outputs"), model, default, binary_output)
    pinned = version is not None
    result = await inference.infer(svc, model, arrays, options, [n for n, _ in wanted], pinned, owner(request))
    content, header = codecs.infer_response(result, request_id, wanted, settings.stream_min_values)
    del result, arrays, binary  # the inputs and outputs: the body (streamed or whole) holds what it needs
    if isinstance(content, Streamed):
        return content.response(None if header is None else {"Inference-Header-Content-Length": str(header)})
    if header is None:
        return Response(content, media_type=JSON)
    return Response(
        content, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header)}
    )


INFER_ERRORS = _errors(400, 404, 409, 410, 413, 422, 429, 503, 504)


INFER_DOC = """KServe V2 inference (JSON or the binary tensor data extension).

Request `parameters`: `sequence_id`, `sequence_start`, `sequence_end` (Triton's sequences, kept
server-side as sessions); `sequence_position` (optional, retry-safe steps: the sequence's number
of time steps before this request, 0 with `sequence_start`; the resend of a recent step gets
its recorded reply, any other mismatch is 409 with the current `position`);
`timeout` (microseconds; 504 when exceeded; a sequence step still completes and a resend with
`sequence_position` collects it); `priority` (only 0; otherwise 400); `binary_data_output`;
`start_time` (ISO 8601 time of the first reading, no offset: UTC; sets a fresh state's clock on
a stateless request or with `sequence_start`, not with explicit state inputs).
A sequence reply's `parameters.sequence_position` is the position after the step.
Without `/versions/{v}`, the model's default version serves: the highest promoted by its
quality gate (model metadata `parameters.default_version`)."""


@router.post(
    "/v2/models/{name}/infer",
    responses=INFER_ERRORS,
    description=INFER_DOC,
    openapi_extra=body_schema("InferenceRequest"),
)
async def infer(name: str, request: Request) -> Response:
    return await _infer(request, name, None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    responses=INFER_ERRORS,
    description=INFER_DOC,
    openapi_extra=body_schema("InferenceRequest"),
)
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, name, version)

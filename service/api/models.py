"""Model listing and stateless prediction."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from service.api.body import json_response_bytes
from service.api.deps import services
from service.api.schemas import (
    ErrorBody,
    ModelInfo,
    ModelList,
    PredictRequest,
    PredictResponse,
    body_schema,
    parse,
    validate,
)
from service.api.split import LazySequences, encode_with_outputs, give_back_memory, split_inputs
from service.core.validate import check_one_origin, parse_batch, parse_start_time, parse_state

if TYPE_CHECKING:
    from service.core.registry import LoadedModel
    from service.core.services import Services

router = APIRouter(tags=["models"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 413, 422)}
OFFLOAD_BYTES = 256 * 1024  # bodies above this are decoded off the event loop


def _model_info(request: Request, name: str) -> dict:
    """`latest`: the highest loaded version; `default`: the one unpinned requests get (the
    highest promoted by its quality gate; see service/core/registry.py), and why."""
    registry = services(request).registry
    versions = [registry.get(name, v).describe() for v in registry.versions(name)]
    default, reason = registry.default_version(name)
    info = {"name": name, "latest": versions[-1]["version"], "default": default, "default_reason": reason}
    if not registry.get(name).promoted:
        info["warning"] = reason
    info["versions"] = versions
    return info


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> Response:
    registry = services(request).registry
    body = {"models": [_model_info(request, name) for name in registry.names()]}
    return Response(json_response_bytes(body), media_type="application/json")


@router.get("/v1/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorBody}})
async def get_model(name: str, request: Request) -> Response:
    return Response(json_response_bytes(_model_info(request, name)), media_type="application/json")


@router.post(
    "/v1/models/{name}/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra=body_schema("PredictRequest"),
)
async def predict(name: str, request: Request) -> Response:
    # Normally answered by service/api/fastpath.py before routing; same code either way.
    body = await run_predict(services(request), name, await request.body())
    return Response(body, media_type="application/json")


async def run_predict(svc: Services, name: str, raw: bytes, owner: str = "") -> bytes:
    """Stateless: run whole sequences from a given (default: fresh) state; raw body in, body out.
    (`owner`: the caller's key, unused: predictions touch no session.)

    A large body is decoded, and its answer encoded, in the codec thread: the event loop
    keeps answering other requests (health checks, steps) meanwhile."""
    large = len(raw) > OFFLOAD_BYTES
    loop = asyncio.get_running_loop()
    if large:
        model, sequences, state, return_state = await loop.run_in_executor(svc.codec, _decode, svc, name, raw, True)
    else:
        model, sequences, state, return_state = _decode(svc, name, raw)
    batch = len(sequences)

    # Equal lengths go through the batcher as one call; ragged batches as one call per sequence.
    batcher = svc.batcher_for(model)
    lengths = {seq.shape[0] for seq in sequences}
    if len(lengths) == 1:
        outputs, final = await batcher.run(sequences[0][None] if batch == 1 else np.stack(sequences), state)
        per_seq = list(outputs)
    else:
        results = await asyncio.gather(
            *(batcher.run(seq[None], tuple(s[:, i : i + 1] for s in state)) for i, seq in enumerate(sequences))
        )
        per_seq = [out[0] for out, _ in results]
        final = tuple(np.concatenate([st[k] for _, st in results], axis=1) for k in range(len(state)))
    response: dict = {"model": model.name, "version": model.version, "outputs": per_seq}
    if return_state:
        response["state"] = dict(zip(model.state_names, final, strict=True))
    if large:
        del response["outputs"]
        encoded = await loop.run_in_executor(svc.codec, encode_with_outputs, response, per_seq)
        loop.call_later(0.05, _trim, svc)  # once this request's arrays are gone
        return encoded
    return json_response_bytes(response)


def _trim(svc: Services) -> None:
    with contextlib.suppress(RuntimeError):  # the codec thread is shut down: the process is ending
        svc.codec.submit(give_back_memory)


def _decode(
    svc: Services, name: str, raw: bytes, by_sequence: bool = False
) -> tuple[LoadedModel, list[np.ndarray], tuple, bool]:
    """Body -> (model, sequences [T_i, F], initial state, return_state); pure, thread-safe.
    by_sequence: decode inputs one sequence at a time (service/api/split.py); any doubt
    about the body and it is decoded whole, with the usual errors."""
    if by_sequence:
        found = split_inputs(raw)
        if found is not None:
            body, pieces = found
            body["inputs"] = LazySequences(pieces)
            try:
                return _decoded(svc, name, validate(PredictRequest, body))
            except orjson.JSONDecodeError:
                pass
    return _decoded(svc, name, parse(PredictRequest, raw))


def _decoded(svc: Services, name: str, body: dict) -> tuple[LoadedModel, list[np.ndarray], tuple, bool]:
    """A validated PredictRequest (service/api/schemas.py) -> arrays for the model."""
    model = svc.registry.get(name, body.get("version"))
    settings = svc.settings
    sequences = parse_batch(body["inputs"], model.config, settings.max_batch_size, settings.max_steps_per_request)
    state, start_time = body.get("state"), body.get("start_time")
    check_one_origin(state, start_time)
    if state is not None:
        initial = parse_state(state, model.config, len(sequences))
    else:
        initial = model.initial_state(len(sequences), parse_start_time(start_time))
    return model, sequences, initial, body.get("return_state", False)


__all__ = ["PredictRequest", "router"]

"""Model listing and stateless prediction over HTTP: decoding and encoding only; the logic is
service/core/predict.py."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from service.api.body import json_response_bytes
from service.api.codecs import anomaly_rows
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
from service.core import predict as core

if TYPE_CHECKING:
    from service.core.services import Services

router = APIRouter(tags=["models"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 413, 422)}
OFFLOAD_BYTES = 256 * 1024  # bodies above this are decoded off the event loop


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> Response:
    body = core.model_list(services(request).registry)
    return Response(json_response_bytes(body), media_type="application/json")


@router.get("/v1/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorBody}})
async def get_model(name: str, request: Request) -> Response:
    body = core.model_info(services(request).registry, name)
    return Response(json_response_bytes(body), media_type="application/json")


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
    """Raw body in, body out (`owner`: the caller's key, unused: predictions touch no session).

    A large body is decoded, and its answer encoded, in the codec thread: the event loop
    keeps answering other requests (health checks, steps) meanwhile."""
    large = len(raw) > OFFLOAD_BYTES
    loop = asyncio.get_running_loop()
    if large:
        request = await loop.run_in_executor(svc.codec, _decode, svc, name, raw, True)
    else:
        request = _decode(svc, name, raw)
    result = await core.predict(svc, request)
    response: dict[str, Any] = {"model": result.model.name, "version": result.model.version, "outputs": result.outputs}
    if result.quantiles is not None:  # keyed by level, each shaped like outputs [sequence][time][output]
        keys = result.model.quantile_keys
        levels = [np.moveaxis(q, -1, 0).copy() for q in result.quantiles]  # [Q, T, O] per sequence
        response["quantiles"] = {key: [q[j] for q in levels] for j, key in enumerate(keys)}
    if result.anomaly is not None:  # per sequence, per reading: an object, or null for a first reading
        response["anomaly"] = [anomaly_rows(a) for a in result.anomaly]
    if result.state is not None:
        response["state"] = result.state
    if result.times is not None:
        response["forecast_times"] = result.times
    if large:
        del response["outputs"]  # encoded sequence by sequence, last
        encoded = await loop.run_in_executor(svc.codec, encode_with_outputs, response, result.outputs)
        loop.call_later(0.05, _trim, svc)  # once this request's arrays are gone
        return encoded
    return json_response_bytes(response)


def _trim(svc: Services) -> None:
    with contextlib.suppress(RuntimeError):  # the codec thread is shut down: the process is ending
        svc.codec.submit(give_back_memory)


def _decode(svc: Services, name: str, raw: bytes, by_sequence: bool = False) -> core.Prediction:
    """Body -> a prepared prediction; pure, thread-safe. by_sequence: decode inputs one
    sequence at a time (service/api/split.py); any doubt about the body and it is decoded
    whole, with the usual errors."""
    if by_sequence:
        found = split_inputs(raw)
        if found is not None:
            body, pieces = found
            body["inputs"] = LazySequences(pieces)
            try:
                return core.prepare(svc, name, validate(PredictRequest, body))
            except orjson.JSONDecodeError:
                pass
    return core.prepare(svc, name, parse(PredictRequest, raw))


__all__ = ["PredictRequest", "router"]

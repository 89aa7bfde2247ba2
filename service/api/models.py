"""Model listing and stateless prediction over HTTP: decoding and encoding only; the logic is
service/core/predict.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Request, Response

from models.times import forecast_times
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
from service.api.split import LazySequences, give_back_memory, split_or_refuse
from service.api.streamed import Rows, Streamed, json_body
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
    return body.response() if isinstance(body, Streamed) else Response(body, media_type="application/json")


async def run_predict(svc: Services, name: str, raw: bytes, owner: str = "") -> bytes | Streamed:
    """Raw body in, body out (`owner`: the caller's key, unused: predictions touch no session).

    A large body is decoded in the codec thread: the event loop keeps answering other
    requests (health checks, steps) meanwhile. A reply of at least `stream_min_values` output
    values is streamed from the result's arrays (service/api/streamed.py) instead of encoded
    whole: the same bytes, written as the client reads them."""
    large = len(raw) > OFFLOAD_BYTES
    loop = asyncio.get_running_loop()
    if large:
        request = await loop.run_in_executor(svc.codec, _decode, svc, name, raw, True)
    else:
        request = _decode(svc, name, raw)
    result = await core.predict(svc, request)
    del request  # the inputs: not kept while the reply is written
    stream = 0 < svc.settings.stream_min_values <= sum(o.size for o in result.outputs)
    after = None
    if large or stream:  # the model's working buffers are gone now, the reply's once it is written
        trim_soon(svc, loop)
        after = functools.partial(trim_soon, svc, loop)
    return json_body(predict_reply(result), stream, after)


def predict_reply(result: core.Predicted) -> dict[str, Any]:
    """The predict reply as a value for service.api.streamed (arrays and Rows, encoded whole
    or a slice at a time, the same bytes either way)."""
    model = result.model
    reply: dict[str, Any] = {"model": model.name, "version": model.version, "outputs": result.outputs}
    if result.quantiles is not None:  # keyed by level, each shaped like outputs [sequence][time][output]
        reply["quantiles"] = {key: [q[..., j] for q in result.quantiles] for j, key in enumerate(model.quantile_keys)}
    if result.anomaly is not None:  # per sequence, per reading: an object, or null for a first reading
        reply["anomaly"] = [Rows(a.shape[0], _anomaly_slice(a), 4) for a in result.anomaly]
    if result.state is not None:
        reply["state"] = result.state
    if result.labelled:
        assert result.start is not None and model.period_seconds is not None
        start, period, horizon = result.start, model.period_seconds, model.config.horizon

        def labels(lo: int, hi: int) -> list[list[str]]:
            return forecast_times(start, hi - lo, horizon, period, lo)

        reply["forecast_times"] = [Rows(o.shape[0], labels, horizon) for o in result.outputs]
    return reply


def _anomaly_slice(anomaly: np.ndarray) -> Callable[[int, int], list[Any]]:
    return lambda lo, hi: anomaly_rows(anomaly[lo:hi])


def trim_soon(svc: Services, loop: asyncio.AbstractEventLoop) -> None:
    """Once a large request's arrays are gone, give the heap back to the OS (in the codec
    thread, a moment later)."""

    def submit() -> None:
        with contextlib.suppress(RuntimeError):  # the codec thread is shut down: the process is ending
            svc.codec.submit(give_back_memory)

    loop.call_later(0.05, submit)


def _decode(svc: Services, name: str, raw: bytes, by_sequence: bool = False) -> core.Prediction:
    """Body -> a prepared prediction; pure, thread-safe. by_sequence (a large body): decode
    inputs one sequence at a time (service/api/split.py), never the whole body at once; a body
    the scan cannot split is refused naming why."""
    if by_sequence:
        body, pieces = split_or_refuse(raw, "inputs", "[")
        body["inputs"] = LazySequences(pieces)
        return core.prepare(svc, name, validate(PredictRequest, body))
    return core.prepare(svc, name, parse(PredictRequest, raw))


__all__ = ["PredictRequest", "router"]

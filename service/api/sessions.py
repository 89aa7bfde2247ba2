"""Streaming sessions over REST: create, step, inspect, fork, delete, and bulk steps."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response

from models.times import TimeRangeError, iso, step
from service.api import codecs, schemas
from service.api.body import json_response_bytes, read_uncached
from service.api.codecs import EntryError
from service.api.deps import owner, services
from service.api.models import OFFLOAD_BYTES, trim_soon
from service.api.schemas import (
    BulkStepResponse,
    ErrorBody,
    SessionInfo,
    StepResponse,
    body_schema,
    optional_body_schema,
    parse,
)
from service.api.split import decode_element, split_or_refuse
from service.api.streamed import Streamed
from service.core.engine import StepRequest
from service.core.errors import LimitExceeded, SessionNotFound
from service.sessions.base import SessionRecord, shown

if TYPE_CHECKING:
    from service.core.services import Services

router = APIRouter(tags=["sessions"])


def errors(*codes: int) -> dict:
    return {code: {"model": ErrorBody} for code in codes}


def session_info(
    record: SessionRecord,
    include_state: bool = False,
    state_names: tuple[str, ...] = (),
    period_seconds: float | None = None,
) -> dict:
    """The session as the API shows it; with `include_state`, every state tensor by name
    ([rows][width] each; `state_names` from the session's model, in graph order). A session
    created with a start time shows it, and (`period_seconds`: its model's) the time of its
    next reading, which an import takes as resume_time to go on labelling the same series."""
    info: dict[str, Any] = {
        "session_id": record.session_id,
        "model": record.model,
        "version": record.version,
        "position": record.position,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "ttl_seconds": record.ttl_seconds,
    }
    if record.start is not None:
        info["start_time"] = iso(record.start)
        if period_seconds is not None:
            with contextlib.suppress(TimeRangeError):  # a stream run on past year 9999: no label
                info["next_time"] = iso(step(record.start, record.position, period_seconds))
    if include_state:
        info["state"] = dict(zip(state_names, record.state, strict=True))
    return info


def _period(svc: Services, record: SessionRecord) -> float | None:
    """The sampling period of the session's model version (None: unknown, or no start time to
    step from, so nothing is looked up)."""
    if record.start is None:
        return None
    return svc.registry.get(record.model, record.version).period_seconds


def _json(data: dict | bytes, status: int = 200) -> Response:
    content = data if isinstance(data, bytes) else json_response_bytes(data)
    return Response(content, status_code=status, media_type="application/json")


@router.post(
    "/v1/models/{name}/sessions",
    status_code=201,
    response_model=SessionInfo,
    responses=errors(400, 404, 422, 429, 503),
    openapi_extra=optional_body_schema("CreateSessionRequest"),
)
async def create_session(name: str, request: Request) -> Response:
    body = parse(schemas.CreateSessionRequest, await request.body(), optional=True)
    record = await services(request).sessions.create(
        name,
        body.get("version"),
        body.get("ttl_seconds"),
        body.get("state"),
        start_time=body.get("start_time"),
        owner=owner(request),
        request_id=body.get("session_id"),
        resume_time=body.get("resume_time"),
    )
    return _json(session_info(record, period_seconds=_period(services(request), record)), 201)


@router.post(
    "/v1/sessions/{session_id}/steps",
    response_model=StepResponse,
    responses=errors(400, 404, 409, 410, 413, 422, 503),
    openapi_extra=body_schema("StepRequest"),
)
async def step_session(session_id: str, request: Request) -> Response:
    # Normally answered by service/api/fastpath.py before routing; same code either way.
    body = await apply_steps(services(request), session_id, await read_uncached(request), owner(request))
    return body.response() if isinstance(body, Streamed) else _json(body)


async def apply_steps(svc: Services, session_id: str, raw: bytes, owner: str = "") -> bytes | Streamed:
    """The step endpoint's whole job, from raw body to response body (the step's reply, which
    a retry gets again, byte for byte; streamed from the outputs when it is large)."""
    inputs, position = parse_step_request(raw)
    result = await svc.engine.step(StepRequest(session_id, inputs, position), owner=owner)
    return codecs.STEP_REPLY.body(result, svc.settings.stream_min_values)


def parse_step_request(raw: bytes | str, what: str = "request body") -> tuple[Any, Any]:
    """A StepRequest's (inputs, position), as the steps route and the WebSocket stream read it."""
    body = parse(schemas.StepRequest, raw, what)
    return body["inputs"], body.get("position")


@router.get("/v1/sessions/{session_id}", response_model=SessionInfo, responses=errors(404, 410, 503))
async def get_session(session_id: str, request: Request, include_state: bool = False) -> Response:
    svc = services(request)
    record = await svc.sessions.get(session_id, owner(request))
    names: tuple[str, ...] = ()
    if include_state:  # the pinned version stays loaded while sessions use it
        names = svc.registry.get(record.model, record.version).state_names
    return _json(session_info(record, include_state, names, _period(svc, record)))


@router.post(
    "/v1/sessions/{session_id}/fork",
    status_code=201,
    response_model=SessionInfo,
    responses=errors(400, 404, 410, 422, 429, 503),
    openapi_extra=optional_body_schema("ForkRequest"),
)
async def fork_session(session_id: str, request: Request) -> Response:
    body = parse(schemas.ForkRequest, await request.body(), optional=True)
    record = await services(request).sessions.fork(
        session_id, body.get("ttl_seconds"), owner(request), request_id=body.get("session_id")
    )
    return _json(session_info(record, period_seconds=_period(services(request), record)), 201)


@router.delete("/v1/sessions/{session_id}", status_code=204, responses=errors(404, 503))
async def delete_session(session_id: str, request: Request) -> Response:
    if not await services(request).sessions.delete(session_id, owner(request)):
        raise SessionNotFound(f"session '{shown(session_id)}' does not exist", session_id=shown(session_id))
    return Response(status_code=204)


@router.post(
    "/v1/models/{name}/sessions/steps",
    response_model=BulkStepResponse,
    responses=errors(400, 404, 413, 422),
    openapi_extra=body_schema("BulkStepRequest"),
)
async def bulk_steps(name: str, request: Request) -> Response:
    """Step many sessions of one model in one request; each gets its own result or error,
    in request order. Equal-length steps of one version go out as one ONNX Runtime call."""
    svc = services(request)
    svc.registry.get(name)  # unknown model: 404 for the whole request
    raw = await read_uncached(request)
    limits = (svc.settings.max_bulk_sessions, svc.settings.max_steps_per_request)
    # A large body (up to 8 MiB: ~1 s of orjson holding the GIL, and as much again for numpy)
    # is decoded entry by entry and its reply joined in the codec thread, so health checks
    # and other requests are answered meanwhile (they waited 1.4-2 s behind one such bulk).
    large = len(raw) > OFFLOAD_BYTES
    loop = asyncio.get_running_loop()
    if large:
        items = await loop.run_in_executor(svc.codec, _decode_bulk, raw, *limits, True)
    else:
        items = _decode_bulk(raw, *limits)
    requests = [item for item in items if isinstance(item, StepRequest)]
    del raw
    outcomes = await svc.engine.apply(requests, model=name, owner=owner(request))
    del requests
    # A reply of many values is written entry by entry as the client reads it (each entry let
    # go once written); a smaller one is joined at once.
    body = codecs.bulk_reply(items, outcomes, svc.settings.stream_min_values)
    if large or isinstance(body, Streamed):  # the decoding's and the model's buffers are gone now
        trim_soon(svc, loop)
    return body.response() if isinstance(body, Streamed) else _json(body)


def _decode_bulk(
    raw: bytes, max_entries: int, max_steps: int, by_entry: bool = False
) -> list[StepRequest | EntryError]:
    """Body -> each entry as a step request or its error; pure, thread-safe. by_entry: decode
    the entries one at a time (service/api/split.py: the GIL is given up between them), never
    the whole body at once; a body the scan cannot split is refused naming why."""
    entries: list[Any]
    if by_entry:
        rest, pieces = split_or_refuse(raw, "steps", "{")
        schemas.validate(schemas.BulkStepRequest, rest)  # unknown or misshapen fields
        entries = [decode_element(piece, "steps", i) for i, piece in enumerate(pieces)]
    else:
        entries = parse(schemas.BulkStepRequest, raw)["steps"]
    if len(entries) > max_entries:
        raise LimitExceeded(
            f"steps has {len(entries)} entries; at most {max_entries}",
            field="steps",
            limit="max_bulk_sessions",
            max=max_entries,
        )
    return codecs.bulk_requests(entries, max_steps, each=by_entry)

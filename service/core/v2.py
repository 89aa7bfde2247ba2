"""KServe V2 inference with Triton's sequence extension, independent of the wire: the HTTP
route (service/api/v2.py) and the gRPC service (service/grpc/) decode their tensors and
parameters, and everything after that (validation of what the tensors mean, the mapping of
sequences onto sessions, timeouts, retry-safe positions, which outputs) happens here, once.

Sequences. `sequence_id` (non-zero unsigned int or non-empty string) names a session of the
session engine (service/core) under the id `v2:<model>:<sequence_id>` (5 and "5" are the same sequence), or
`v2:<owner>:<model>:<sequence_id>` with API keys (each key has its own sequence ids and owns
their sessions: another key's sequence 5 is not yours), so it lives in the configured store,
its steps go through the batcher and are applied in order.
`sequence_start` (re)starts it from the initial state (or explicit state tensors, only at the
start); `sequence_end` deletes it after the step. `start_time` (ISO 8601) sets a fresh state's
clock on a stateless request or with `sequence_start`; not with explicit state tensors.

Retry-safety. `sequence_position` (optional, the number of time steps the sequence has taken
before this request; 0 with `sequence_start`) makes a step exactly-once like v1's `position`
(the step engine does it): a resend of one of the sequence's recent steps (same position,
same inputs) gets its recorded reply and applies nothing; any other mismatch is a position
conflict carrying the current position. A start with position 0 on a sequence that already
moved past position 0 is such a step too: replayed when it is a resend of the start, a conflict
otherwise, never a reset (send the start without `sequence_position`, or end the sequence, to
restart it). Every sequence reply carries `sequence_position`, the position after the step.
`sequence_end` deletes the session and its record: the resend of an applied end finds the
sequence ended (400), not its reply.

`timeout` (microseconds, Triton's unit) bounds the wait for the reply: a stateless request past
it is cancelled; a sequence step is never cut in half (its state must stay consistent), so it
completes in the background while the client gets the deadline error and can resend it with
`sequence_position` to collect the reply exactly once. `priority` is refused unless 0 (the
default): the service has one priority level, and silently ignoring a priority would mislead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.core.engine import StepRequest, StepResult
from service.core.errors import (
    BadRequest,
    DeadlineExceeded,
    InvalidInput,
    PositionConflict,
    ServiceError,
    SessionExpired,
    SessionNotFound,
    echo,
)
from service.core.lifecycle import Sessions
from service.core.registry import LoadedModel, ModelRegistry
from service.core.validate import check_positive, check_reply_size, check_start_range, parse_start_time
from service.sessions.base import SessionRecord

if TYPE_CHECKING:
    from service.core.services import Services

DATATYPE = "FP32"
SERVER_NAME = "seqserve"
PLATFORM = "onnxruntime_onnx"  # Triton's name for what serves the models
EXTENSIONS = ("binary_tensor_data", "parameters", "sequence", "model_configuration", "statistics", "model_repository")
MAX_SEQUENCE_ID_CHARS = 128
MAX_RANK = 8  # dimensions a tensor's shape may list (the model's take 3)
MAX_TIMEOUT_US = 3600 * 10**6
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end", "sequence_position")


class InferenceRequestError(BadRequest):
    """A V2 request the protocol rejects (400): bad tensor, datatype, shape, parameter."""

    code = "invalid_inference_request"


Error = InferenceRequestError


@dataclass(frozen=True, slots=True)
class Options:
    """What a request's parameters ask for, validated."""

    sequence_id: str | None = None
    start: bool = False
    end: bool = False
    position: int | None = None
    timeout_s: float | None = None
    start_time: str | None = None  # ISO 8601, as given (validated)
    start_seconds: float | None = None  # the same in unix seconds


# ---------------------------------------------------------------------------- parameters


def parse_options(params: Mapping[str, Any]) -> Options:
    """The sequence, retry and scheduling parameters of a request (HTTP JSON or gRPC)."""
    seq_id, start, end = _sequence(params)
    position = params.get("sequence_position")
    if position is not None:
        if type(position) is not int or position < 0:
            raise Error("sequence_position must be a non-negative integer", field="sequence_position")
        if seq_id is None:
            raise Error("sequence_position needs a sequence_id", field="sequence_position")
        if start and position != 0:
            raise Error(
                f"a sequence starts at position 0; sequence_start with sequence_position {position}",
                field="sequence_position",
            )
    priority = params.get("priority", 0)
    if type(priority) is not int or priority != 0:
        raise Error(
            f"priority {echo(priority)} is not supported: this server has a single priority level; send 0 or omit it",
            field="priority",
        )
    timeout = params.get("timeout")
    timeout_s = None
    if timeout is not None:
        if type(timeout) is not int or not 0 <= timeout <= MAX_TIMEOUT_US:
            raise Error(
                f"timeout must be an integer number of microseconds in [0, {MAX_TIMEOUT_US}] (0: none)",
                field="timeout",
            )
        timeout_s = timeout / 1e6 if timeout else None
    start_time = params.get("start_time")
    start_seconds = None
    if start_time is not None:
        if seq_id is not None and not start:
            raise Error("start_time is only taken with sequence_start (or without a sequence)", field="start_time")
        try:
            parse_start_time(start_time, any_order=True)  # read in the model's order by `infer`
        except InvalidInput as exc:
            raise Error(exc.message, field="start_time") from None
    return Options(seq_id, start, end, position, timeout_s, start_time, start_seconds)


def _sequence(params: Mapping[str, Any]) -> tuple[str | None, bool, bool]:
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


def parse_version(version: str | None) -> int | None:
    """A V2 version string ("" and None: the default version)."""
    if not version:
        return None
    if not (version.isascii() and version.isdigit()) or len(version) > 18:
        raise Error(f"model version must be a positive integer, got {echo(version)}", field="version")
    return int(version)


# ---------------------------------------------------------------------------- health and metadata
# Built here once; HTTP answers them as JSON, gRPC as Triton's messages.


async def not_ready(svc: Services) -> str | None:
    """Why the server is not ready (None: ready). Ready means predictions can be served: at
    least one model is loaded; the session store counts only with
    SEQSERVE_READY_REQUIRES_STORE (else an outage of Redis would take every replica out of
    its load balancer although stateless prediction still works)."""
    if len(svc.registry) == 0:
        return "no model is loaded"
    if svc.settings.ready_requires_store:
        try:
            await svc.store.ping()
        except ServiceError:
            return "session store unavailable"
    return None


def server_metadata(version: str) -> dict[str, Any]:
    """The V2 server metadata: name, version, extensions."""
    return {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}


def model_ready(registry: ModelRegistry, name: str, version: str | None) -> dict[str, Any]:
    """A loaded model version's readiness (NotFound when it is not loaded)."""
    model = registry.get(name, parse_version(version))
    return {"name": model.name, "version": str(model.version), "ready": True}


def model_metadata(registry: ModelRegistry, name: str, version: str | None) -> dict[str, Any]:
    """The V2 model metadata: the version asked for (or every loaded one), the tensors with
    their shapes, and in `parameters` which version is the default and why, each version's
    quality gate and whether it is promoted, and the state tensors."""
    model = registry.get(name, parse_version(version))
    versions = [model.version] if version else registry.versions(model.name)
    inputs, outputs = tensor_metadata(model)
    default, reason = registry.default_version(model.name)
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "default_version": str(default),
            "default_reason": reason,
            "promoted": {str(v): registry.get(model.name, v).promoted for v in versions},
            "gate": {str(v): registry.get(model.name, v).gate for v in versions},
            "state_tensors": [
                {"name": s.name, "shape": [s.rows, -1, s.width], "fill": s.fill, "doc": s.doc}
                for s in model.config.state_specs
            ],
        },
    }


# ---------------------------------------------------------------------------- tensors


def tensor_metadata(model: LoadedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) as V2 metadata: name, datatype, shape (-1: any size)."""
    cfg = model.config
    states = [[spec.rows, -1, spec.width] for spec in cfg.state_specs]
    inputs = [{"name": "input", "datatype": DATATYPE, "shape": [-1, -1, cfg.input_size]}]
    inputs += [
        {"name": n, "datatype": DATATYPE, "shape": s} for n, s in zip(model.input_names[1:], states, strict=True)
    ]
    outputs = [{"name": "output", "datatype": DATATYPE, "shape": [-1, -1, cfg.output_size]}]
    outputs += [
        {"name": n, "datatype": DATATYPE, "shape": s} for n, s in zip(model.output_names[1:], states, strict=True)
    ]
    if model.extra_outputs:  # [batch, time, outputs, levels] and [batch, time, 4]
        levels = len(model.quantile_keys)
        outputs.append({"name": "quantiles", "datatype": DATATYPE, "shape": [-1, -1, cfg.output_size, levels]})
    if model.anomaly:
        outputs.append({"name": "anomaly", "datatype": DATATYPE, "shape": [-1, -1, 4]})
    return inputs, outputs


def check_tensor(name: Any, datatype: Any, shape: Any, model: LoadedModel, max_batch: int, max_steps: int) -> list[int]:
    """A declared input tensor before its data is read: known name, FP32, a plausible shape.
    Returns the shape as a list of ints."""
    allowed = model.input_names
    if not isinstance(name, str) or not name:
        raise Error(f"every input needs a name; model '{model.name}' takes {allowed}")
    if name not in allowed:
        raise Error(f"unknown input '{name}'; model '{model.name}' takes {allowed}", field=name)
    if datatype != DATATYPE:
        raise Error(f"input '{name}' has datatype {echo(datatype)}; it must be FP32", field=name, expected=DATATYPE)
    if not (
        isinstance(shape, list) and len(shape) <= MAX_RANK and all(type(d) is int and 0 <= d < 2**63 for d in shape)
    ):
        raise Error(
            f"input '{name}': shape must be an array of at most {MAX_RANK} non-negative 64-bit integers, "
            f"got {echo(shape)}",
            field=name,
        )
    cfg = model.config
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
    elif len(shape) != 3 or math.prod(shape) > max_batch * (1 << 20):
        raise Error(f"input '{name}' must be a state tensor [rows, batch, width]; got shape {shape}", field=name)
    return shape


def check_inputs(arrays: dict[str, np.ndarray], model: LoadedModel) -> None:
    """The decoded inputs together: finite, `input` present, state tensors all or none, of
    the shapes the model's state specs give for the request's batch."""
    cfg = model.config
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise Error(f"input '{name}' holds NaN, infinite or out-of-range values", field=name)
    if "input" not in arrays:
        raise Error(f"input tensor 'input' is required: FP32 [batch, time, {cfg.input_size}]", field="input")
    if arrays["input"].ndim == 3:
        check_positive(arrays["input"], cfg, "input", model.name, Error)
    batch = arrays["input"].shape[0]
    state_names = model.input_names[1:]
    given = [n for n in state_names if n in arrays]
    if given and len(given) != len(state_names):
        raise Error(
            f"explicit state needs all of {state_names} (or none for the initial state); got {given}", field="state"
        )
    for n, shape in zip(state_names, cfg.state_shapes(batch), strict=True):
        if n in arrays and arrays[n].shape != shape:
            raise Error(f"input '{n}' must have shape {list(shape)}, got {list(arrays[n].shape)}", field=n)


def default_outputs(model: LoadedModel, options: Options) -> list[str]:
    """Without an outputs list: every output when stateless; on a sequence `output` and the
    quantiles/anomaly of a model with levels (its state is implicit and stays on the server)."""
    if options.sequence_id is not None:
        return ["output", *model.extra_outputs]
    return [*model.output_names, *model.extra_outputs]


def check_outputs(names: list[str], model: LoadedModel) -> None:
    known = [*model.output_names, *model.extra_outputs]
    seen: set[str] = set()
    for name in names:
        if name not in known:
            raise Error(f"unknown output {echo(name)}; model '{model.name}' gives {known}", field="outputs")
        if name in seen:
            raise Error(f"output '{name}' is requested twice", field="outputs")
        seen.add(name)


# ---------------------------------------------------------------------------- inference


@dataclass(frozen=True, slots=True)
class Labels:
    """The times a result's forecasts are for, built when asked for (as a whole, or a slice of
    readings at a time): `batch` sequences of `readings` readings each, the first of them reading
    `first` of a series whose reading 0 is at `start` (every sequence the same times)."""

    start: float
    period: float
    horizon: int
    batch: int
    readings: int
    first: int = 0

    def rows(self, lo: int, hi: int) -> list[list[str]]:
        """[time][lead] for readings lo..hi-1 of one sequence."""
        from models.times import forecast_times

        return forecast_times(self.start, hi - lo, self.horizon, self.period, self.first + lo)

    def whole(self) -> list[list[list[str]]]:
        one = self.rows(0, self.readings)
        return [one for _ in range(self.batch)]


@dataclass(slots=True)
class Result:
    """What an inference produced: the model version that served it, the tensors by name
    (exactly the requested outputs) and, for a sequence step, the position after it."""

    model: LoadedModel
    tensors: dict[str, np.ndarray]
    position: int | None = None
    # A request with start_time (stateless, or a sequence started with it) to a model that knows
    # its period: the times its forecasts are for (`times`).
    labels: Labels | None = None

    @property
    def times(self) -> list[list[list[str]]] | None:
        """[batch][time][lead] ISO times each forecast is for (predict.py's times_of, step_times
        for a sequence step), built on each access."""
        return None if self.labels is None else self.labels.whole()


_background: set[asyncio.Task[Any]] = set()  # sequence steps in flight (kept from garbage collection)


async def infer(
    svc: Services,
    model: LoadedModel,
    arrays: dict[str, np.ndarray],
    options: Options,
    wanted: list[str],
    pinned: bool,
    owner: str = "",
) -> Result:
    """Run one validated request. `pinned`: the client named the version explicitly. `owner`:
    the caller's API key owner id (service/core/auth.py), "" without keys.

    A sequence step runs in a task of its own that completes even when its caller gives up
    (deadline, cancelled RPC, closed connection): a step cut in half would leave the session
    in doubt, while a finished one can be collected by a resend with sequence_position."""
    if options.start_time is not None and len(arrays) > 1:
        raise Error(
            "give either explicit state inputs or the start_time parameter, not both",
            field="start_time",
            fields=["state", "start_time"],
        )
    if options.start_time is not None:
        try:
            seconds = parse_start_time(options.start_time, day_first=model.day_first)
        except InvalidInput as exc:
            raise Error(exc.message, field="start_time") from None
        options = dataclasses.replace(options, start_seconds=seconds)
    if options.sequence_id is None:
        if options.timeout_s is None:
            return await _stateless(svc, model, arrays, options, wanted)
        task = asyncio.ensure_future(_stateless(svc, model, arrays, options, wanted))
    else:
        task = asyncio.ensure_future(_sequence_step(svc, model, arrays, options, wanted, pinned, owner))
        _background.add(task)
        task.add_done_callback(_finished)
    try:
        return await asyncio.wait_for(asyncio.shield(task), options.timeout_s)
    except TimeoutError:
        assert options.timeout_s is not None  # wait_for(None) never times out
        waited = f"{options.timeout_s * 1e6:.0f} us"
        if options.sequence_id is None:
            task.cancel()
            raise DeadlineExceeded(f"the request did not complete within its timeout of {waited}") from None
        raise DeadlineExceeded(
            f"the step of sequence {options.sequence_id!r} did not complete within its timeout of {waited}; "
            "it is still being applied: resend it with sequence_position to collect its reply exactly once",
            sequence_id=options.sequence_id,
        ) from None


def _finished(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved here too: its caller may have stopped waiting


async def _stateless(
    svc: Services, model: LoadedModel, arrays: dict[str, np.ndarray], options: Options, wanted: list[str]
) -> Result:
    x = arrays["input"]
    check_reply_size(
        x.shape[0] * x.shape[1] * model.output_width,
        svc.settings.max_response_values,
        f"batch {x.shape[0]} x {x.shape[1]:,} steps x {model.output_width} output values per step",
    )
    given = tuple(arrays[n] for n in model.input_names[1:] if n in arrays)
    if not given:
        try:
            check_start_range(options.start_seconds, model.period_seconds, x.shape[1] - 1 + model.config.horizon)
        except InvalidInput as exc:
            raise Error(exc.message, field="start_time") from None
    state = given or model.initial_state(x.shape[0], options.start_seconds)
    outputs, final = await svc.batcher_for(model).run(x, state)
    by_name = dict(zip(model.output_names, (outputs, *final), strict=True))
    if model.extra_outputs:
        by_name.update(extra_tensors(model, outputs))
    from service.core.predict import labelled

    start = None if given else options.start_seconds
    labels = None
    if start is not None and model.period_seconds is not None and labelled(model, start):
        labels = Labels(start, model.period_seconds, model.config.horizon, x.shape[0], x.shape[1])
    return Result(model, {n: by_name[n] for n in wanted}, labels=labels)


def extra_tensors(model: LoadedModel, packed: np.ndarray) -> dict[str, np.ndarray]:
    """`output`, `quantiles` [B, T, O, Q] and `anomaly` [B, T, 4] (seen, outside_80,
    outside_95, score; the v1 codec's null is seen == 0) from packed rows [B, T, width]."""
    outputs, quantiles, anomaly = model.unpack(packed)
    tensors = {"output": outputs}
    if quantiles is not None:
        tensors["quantiles"] = quantiles
    if anomaly is not None:
        tensors["anomaly"] = anomaly
    return tensors


async def _sequence_step(
    svc: Services,
    model: LoadedModel,
    arrays: dict[str, np.ndarray],
    options: Options,
    wanted: list[str],
    pinned: bool,
    owner: str,
) -> Result:
    seq_id = options.sequence_id
    assert seq_id is not None
    x = arrays["input"]
    if x.shape[0] != 1:
        raise Error(f"sequence requests take batch 1; input has batch {x.shape[0]}", field="input")
    session_id = f"v2:{owner}:{model.name}:{seq_id}" if owner else f"v2:{model.name}:{seq_id}"
    sessions = svc.sessions
    if options.start:
        if options.position is None or not await _retried_start(sessions, session_id, owner):
            state_in = None
            if model.input_names[1] in arrays:
                state_in = {s: arrays[f"{s}0"][:, 0, :].tolist() for s in model.state_names}
            await sessions.create(
                model.name,
                model.version,
                state=state_in,
                session_id=session_id,
                start_time=options.start_time,
                owner=owner,
            )
    else:
        if len(arrays) > 1:
            raise Error(
                "state tensors can only be given with sequence_start; a running sequence carries its own state",
                field="state",
            )
        if pinned:
            record = await _record(sessions, session_id, seq_id, model.name, owner)
            if record.version != model.version:
                raise Error(
                    f"sequence {seq_id!r} runs on version {record.version} of model '{model.name}', "
                    f"not {model.version}",
                    field="version",
                )
    try:
        step = await svc.engine.step(StepRequest(session_id, x[0], options.position), owner=owner)
    except (SessionNotFound, SessionExpired) as exc:
        raise _not_started(seq_id, model.name, exc) from None
    served = step.model
    tensors: dict[str, np.ndarray] = extra_tensors(served, step.outputs[None])
    if any(n not in tensors for n in wanted):
        if step.state is None:  # a replay of a step that is no longer the sequence's latest
            record = await _record(sessions, session_id, seq_id, model.name, owner)
            raise PositionConflict(
                f"sequence {seq_id!r} was stepped again after the step that was replayed, so its state "
                "after that step is gone; request state outputs only where steps of one sequence do not overlap",
                position=record.position,
            )
        for n, array in zip(served.output_names[1:], step.state, strict=True):
            tensors[n] = array[:, None, :]
        missing = [n for n in wanted if n not in tensors]
        if missing:
            raise Error(f"sequence {seq_id!r} runs on a model without outputs {missing}", field="outputs")
    if options.end:
        await sessions.delete(session_id, owner)
    return Result(served, {n: tensors[n] for n in wanted}, step.position, _step_labels(step))


def _step_labels(step: StepResult) -> Labels | None:
    """A sequence step's forecast times (StepResult.times: a sequence started with start_time),
    as one sequence of labels; None without them, or once a stream has run past year 9999."""
    model, readings = step.model, step.outputs.shape[0]
    first = step.position - readings
    if step.start is None or model.period_seconds is None:
        return None
    from service.core.predict import step_times

    if step_times(model, step.start, first + readings - 1, 1) is None:  # the latest times: all fit if these do
        return None
    return Labels(step.start, model.period_seconds, model.config.horizon, 1, readings, first)


async def _retried_start(sessions: Sessions, session_id: str, owner: str) -> bool:
    """With sequence_position 0 on a start: does the sequence already exist past position 0?
    Then the step goes to the engine with position 0, which replays the start if it is one of
    the recent steps it recorded (a resend) and answers a position conflict otherwise."""
    try:
        record = await sessions.get(session_id, owner)
    except (SessionNotFound, SessionExpired):
        return False
    return record.position > 0


async def _record(sessions: Sessions, session_id: str, seq_id: str, model: str, owner: str) -> SessionRecord:
    try:
        return await sessions.get(session_id, owner)
    except (SessionNotFound, SessionExpired) as exc:
        raise _not_started(seq_id, model, exc) from None


def _not_started(seq_id: str, model: str, exc: Exception) -> InferenceRequestError:
    why = "has expired" if isinstance(exc, SessionExpired) else "was not started or has ended"
    return Error(
        f"sequence {seq_id!r} of model '{model}' {why}; start it with sequence_start=true",
        field="sequence_id",
        sequence_id=seq_id,
    )

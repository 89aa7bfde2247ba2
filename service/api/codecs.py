"""Wire formats, in one place: the core's typed results and errors become bytes here, and
request bodies become the core's typed requests.

- JSON v1: a step's reply (also the recording a retry replays, byte for byte), error bodies,
  WebSocket replies (with their HTTP-equivalent `status`), bulk results with per-item errors.
- KServe V2 tensors over HTTP: JSON `data` and the binary tensor data extension, for inputs
  and outputs. (The protobuf codec of the same protocol is service/grpc/tensors.py; what the
  tensors must look like is checked by service/core/v2.py for both.)

Parsing is orjson for the JSON and one numpy call per tensor, never Python work per float.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import orjson

from service.api.streamed import CHUNK_BYTES, AsText, Rows, Streamed, chunked, json_body, pieces, whole
from service.core import v2 as inference
from service.core.engine import StepColumns, StepRequest, StepResult
from service.core.errors import InvalidInput, ServiceError, echo, internal_error_body
from service.core.logs import request_id
from service.core.predict import step_times
from service.core.registry import LoadedModel
from service.core.v2 import DATATYPE, InferenceRequestError
from service.core.validate import as_array, first_non_number, holds_bool

log = logging.getLogger("seqserve.errors")
NUMPY = orjson.OPT_SERIALIZE_NUMPY

# ---------------------------------------------------------------------------- JSON v1


class StepReplyJSON:
    """The v1 step reply {session_id, model, version, position, outputs} (with `quantiles` and
    `anomaly` for a model with quantile levels, see `probabilistic`, and `forecast_times`
    [time][lead] for a session created with a start time, see StepResult.times): what the engine
    encodes for each step (the fast path answers it as is); encoding the same result again gives
    the same bytes, which is how a retry gets the first reply (service/core/engine.py)."""

    def encode(self, result: StepResult) -> bytes:
        return orjson.dumps(self.fields(result), option=NUMPY)

    def fields(self, result: StepResult) -> dict[str, Any]:
        """The reply as the object `encode` serialises (orjson, OPT_SERIALIZE_NUMPY): a bulk
        reply serialises all its entries' objects in one call (bulk_body), the same bytes."""
        model = result.model
        times = result.times
        if not model.extra_outputs:
            plain: dict[str, Any] = {
                "session_id": result.session_id,
                "model": model.name,
                "version": model.version,
                "position": result.position,
                "outputs": result.outputs,
            }
            if times is not None:
                plain["forecast_times"] = times
            return plain
        # A model with quantile levels: its packed rows split into outputs, quantiles, anomaly.
        outputs, quantiles, anomaly = model.unpack(result.outputs)
        body = {
            "session_id": result.session_id,
            "model": model.name,
            "version": model.version,
            "position": result.position,
            "outputs": outputs,
            **probabilistic(model, quantiles, anomaly, many=outputs.shape[0] > 1),
        }
        if times is not None:
            body["forecast_times"] = times
        return body

    def streams(self, result: StepResult, min_values: int) -> bool:
        """Whether the reply is written a slice at a time (service/api/streamed.py): at least
        `min_values` output values (0: never) over more than one reading."""
        return 0 < min_values <= result.outputs.size and result.outputs.shape[0] > 1

    def body(self, result: StepResult, min_values: int) -> bytes | Streamed:
        """The reply as one body, or streamed (`streams`): the same bytes either way."""
        if not self.streams(result, min_values):
            return result.payload
        return Streamed(chunked(self.pieces(result)))

    def pieces(self, result: StepResult) -> Iterator[bytes]:
        """The reply's bytes in bounded pieces, from the result's arrays: `encode`'s bytes."""
        model = result.model
        readings = result.outputs.shape[0]
        body: dict[str, Any] = {
            "session_id": result.session_id,
            "model": model.name,
            "version": model.version,
            "position": result.position,
        }
        if not model.extra_outputs:
            body["outputs"] = result.outputs
        else:
            outputs, quantiles, anomaly = model.unpack(result.outputs)
            body["outputs"] = outputs
            if quantiles is not None:
                body["quantiles"] = {key: quantiles[..., j] for j, key in enumerate(model.quantile_keys)}
            if anomaly is not None:
                rows = Rows(readings, _anomaly_slice(anomaly), 4)
                body["anomaly"] = rows if readings > 1 else anomaly_rows(anomaly)[0]
        times = _times(result)
        if times is not None:
            body["forecast_times"] = times
        return pieces(body)


STEP_REPLY = StepReplyJSON()


def _anomaly_slice(anomaly: np.ndarray) -> Callable[[int, int], list[Any]]:
    return lambda lo, hi: anomaly_rows(anomaly[lo:hi])


def _times(result: StepResult) -> Rows | None:
    """A step's forecast times ([time][lead], StepResult.times) built a slice at a time; None
    when the step has none. The last reading's are the latest: when they can be written, all
    can."""
    readings = result.outputs.shape[0]
    first = result.position - readings
    model, start = result.model, result.start
    if step_times(model, start, first + readings - 1, 1) is None:
        return None

    def labels(lo: int, hi: int) -> list[list[str]]:
        return step_times(model, start, first + lo, hi - lo) or []

    return Rows(readings, labels, model.config.horizon)


def anomaly_rows(anomaly: np.ndarray) -> list[dict[str, Any] | None]:
    """[T, 4] anomaly rows -> one {"outside_80", "outside_95", "score"} per reading, None for a
    reading with no earlier forecast (a session's first)."""
    return [
        {"outside_80": bool(o80), "outside_95": bool(o95), "score": float(score)} if seen else None
        for seen, o80, o95, score in anomaly.tolist()
    ]


def probabilistic(
    model: LoadedModel, quantiles: np.ndarray | None, anomaly: np.ndarray | None, many: bool
) -> dict[str, Any]:
    """The v1 fields of a model with quantile levels, from unpacked rows [T, ...]: `quantiles`,
    an object keyed by level ("0.025", ...) whose values are shaped like `outputs` ([T, O]);
    `anomaly`, per reading just received whether it fell outside the 80 % and 95 % intervals
    forecast for it one step earlier and its score (distance from the 95 % interval's centre
    in half-widths): one object, or null, for one reading; a list when `many`."""
    out: dict[str, Any] = {}
    if quantiles is not None:
        by_level = np.moveaxis(quantiles, -1, 0).copy()  # [Q, ..., O], each level contiguous
        out["quantiles"] = dict(zip(model.quantile_keys, by_level, strict=True))
    if anomaly is not None:
        rows = anomaly_rows(anomaly)
        out["anomaly"] = rows if many else rows[0]
    return out


def error_body(exc: ServiceError) -> bytes:
    """A domain error as the JSON body of an HTTP error response."""
    return orjson.dumps(exc.body())


def internal_error(rid: str) -> bytes:
    return orjson.dumps(internal_error_body(rid))


def stream_reply(outcome: StepResult | Exception) -> bytes:
    """A WebSocket reply: the step reply, or the error body with its HTTP-equivalent status."""
    if isinstance(outcome, StepResult):
        return outcome.payload
    if isinstance(outcome, ServiceError):
        return orjson.dumps({"status": outcome.status, **outcome.body()})
    return orjson.dumps({"status": 500, **internal_error_body(request_id())})


def stream_error(exc: ServiceError) -> bytes:
    return orjson.dumps({"status": exc.status, **exc.body()})


def stream_internal_error(rid: str) -> bytes:
    return orjson.dumps({"status": 500, **internal_error_body(rid)})


# ---------------------------------------------------------------------------- bulk steps

BULK_FIELDS = frozenset({"session_id", "inputs", "position"})
INT_EXACT = 2.0**53  # integers below this convert exactly to float64: alone or together, the same float32


class EntryError:
    """A bulk entry refused before it reached the engine, with the id it named (if a string)."""

    __slots__ = ("error", "session_id")

    def __init__(self, session_id: str | None, error: ServiceError) -> None:
        self.session_id = session_id
        self.error = error


def bulk_requests(entries: list[Any], max_steps: int, each: bool = False) -> list[StepRequest | EntryError]:
    """Each entry ({session_id, inputs, position?}) as a step request, or its error. When all
    inputs are uniform (the common case: one reading per session) they are converted as one
    [N, T, F] array, in one numpy call; otherwise each entry is converted by the engine, which
    names its own precise error. `each` (a large body, in the codec thread): each entry's
    inputs converted by its own numpy call, so the GIL is given up between entries."""
    plain = None if each else _plain_requests(entries, max_steps)
    if plain is not None:
        return plain  # type: ignore[return-value]  # a list of requests is a list of items
    items: list[StepRequest | EntryError] = []
    for entry in entries:
        session_id = entry.get("session_id") if isinstance(entry, dict) else None
        if not isinstance(session_id, str):
            error = InvalidInput("each entry needs a session_id string", field="session_id")
            items.append(EntryError(None, error))  # echo only ids, not whatever stood in their place
            continue
        if not entry.keys() <= BULK_FIELDS:
            unknown = sorted(set(entry) - BULK_FIELDS)
            error = InvalidInput(f"entry has unknown fields {unknown}; allowed: {sorted(BULK_FIELDS)}")
            items.append(EntryError(session_id, error))
            continue
        items.append(StepRequest(session_id, entry.get("inputs"), entry.get("position")))
    requests = [item for item in items if isinstance(item, StepRequest)]
    if each:
        for request in requests:
            steps = _steps(request.inputs, max_steps)
            if steps is not None:
                request.inputs = steps
        return items
    convert_together(requests, max_steps)
    return items


_SESSION_ID, _INPUTS = itemgetter("session_id"), itemgetter("inputs")


def _plain_requests(entries: list[Any], max_steps: int) -> list[StepRequest] | None:
    """The entries as step requests when every one is exactly {session_id: string, inputs}
    (the common bulk body), checked and built by C loops (map, set) instead of a Python step
    per entry, their inputs converted together when uniform (convert_together); None for
    anything else, which bulk_requests then reads entry by entry."""
    if not entries or set(map(type, entries)) != {dict} or set(map(len, entries)) != {2}:
        return None
    try:
        ids = list(map(_SESSION_ID, entries))
        inputs = list(map(_INPUTS, entries))
    except KeyError:
        return None
    if set(map(type, ids)) != {str}:
        return None
    together = _together(inputs, max_steps)
    return list(map(StepRequest, ids, inputs if together is None else together))


def convert_together(requests: Sequence[StepRequest], max_steps: int) -> None:
    """Inputs still in their JSON form, when uniform (the same steps and features in every
    request, and valid), converted as one [N, T, F] array by one numpy call (a bulk request; a
    WebSocket client's pipelined messages), each request then holding its row: the same bytes
    the engine's conversion of each alone gives, for a fraction of its fixed cost per call.
    Otherwise nothing changes: the engine converts each and names each one's precise error."""
    together = _together(list(map(_REQUEST_INPUTS, requests)), max_steps)
    if together is not None:
        deque(map(setattr, requests, repeat("inputs"), together), maxlen=0)  # each its row, in C


_REQUEST_INPUTS = attrgetter("inputs")
_NUMBERS = frozenset({float, int})


def _together(inputs: list[Any], max_steps: int) -> np.ndarray | None:
    """All inputs as one float32 [N, T, F] array, or None when they are not uniform and valid.
    The nested lists are checked (every entry T rows of F numbers, no true/false) and
    flattened by C loops, then converted by one numpy call from a flat list of floats, the
    fastest way into numpy; as_array() of each entry gives the same values."""
    if not inputs or not isinstance(inputs[0], list):
        return None
    steps = len(inputs[0])
    if not 0 < steps <= max_steps or set(map(type, inputs)) != {list} or set(map(len, inputs)) != {steps}:
        return None
    rows = list(chain.from_iterable(inputs))
    if set(map(type, rows)) != {list}:
        return None
    widths = set(map(len, rows))
    if len(widths) != 1:
        return None
    flat = list(chain.from_iterable(rows))
    if not set(map(type, flat)) <= _NUMBERS:  # true/false are bool: not readings
        return None
    try:
        values = np.array(flat, np.float64)
    except (OverflowError, ValueError, TypeError):  # an integer past float's range
        return None
    if values.size and not float(np.abs(values).max()) < INT_EXACT:
        # NaN cannot come from JSON; infinities and values past float32 are refused by each
        # entry's own conversion, which names them. JSON integers this large convert
        # differently alone (int64, or no number at all past int64's range) than among
        # floats (through float64): such a batch is converted entry by entry, so each gets
        # exactly what it gets alone.
        return None
    return values.astype(np.float32).reshape(len(inputs), steps, widths.pop())


def _steps(inputs: Any, max_steps: int) -> np.ndarray | None:
    """One entry's inputs as float32 [T, F], or None (left to the engine, which names the
    precise error) when they are not a valid non-empty 2-D array within the step limit."""
    if not isinstance(inputs, list) or not 0 < len(inputs) <= max_steps:
        return None
    try:
        steps = as_array(inputs, "inputs")
    except ServiceError:
        return None
    return steps if steps.ndim == 2 else None


def bulk_body(items: Sequence[StepRequest | EntryError], outcomes: Sequence[StepResult | Exception]) -> bytes:
    """{"results": [...]}: per entry, in request order, its step reply or its error with the
    session id and the HTTP-equivalent status. Serialised by one orjson call for the whole
    batch (a seventh of the time of one call per entry, measured at 256 entries): the bytes
    are those of each entry's own encoding joined by commas, as orjson writes no spaces."""
    replies = _column_entries(outcomes) if isinstance(outcomes, StepColumns) else None
    if replies is None:
        results = iter(outcomes)
        entries = [_bulk_entry(item, None if isinstance(item, EntryError) else next(results)) for item in items]
    elif len(replies) == len(items):
        entries = replies
    else:
        answers = iter(replies)
        entries = [
            orjson.Fragment(_bulk_item(item, None)) if isinstance(item, EntryError) else next(answers) for item in items
        ]
    return orjson.dumps({"results": entries}, option=NUMPY)


def _column_entries(columns: StepColumns) -> list[Any] | None:
    """Each entry of a batch stepped as columns as the object serialised in its place: the
    reply StepReplyJSON.fields gives its StepResult (the same keys in the same order, its row
    of the outputs), built straight from the columns; None (each entry then encoded from its
    StepResult) for another codec, or a model with quantile levels."""
    model = columns.model
    if not isinstance(columns.codec, StepReplyJSON) or model.extra_outputs:
        return None
    name, version = model.name, model.version
    entries: list[Any] = [
        {"session_id": sid, "model": name, "version": version, "position": position, "outputs": outputs}
        for sid, position, outputs in zip(columns.session_ids, columns.positions, columns.outputs, strict=True)
    ]
    if columns.starts is not None:
        readings = columns.outputs.shape[1]
        for entry, start in zip(entries, columns.starts, strict=True):
            if start is not None:
                times = step_times(model, start, entry["position"] - readings, readings)
                if times is not None:
                    entry["forecast_times"] = times
    for k, outcome in columns.overrides.items():
        entries[k] = _bulk_entry(StepRequest(columns.session_ids[k], None), outcome)
    return entries


def _bulk_entry(item: StepRequest | EntryError, outcome: StepResult | Exception | None) -> Any:
    """One entry of bulk_body as the object serialised in its place (_bulk_item's bytes)."""
    if isinstance(outcome, StepResult):
        if isinstance(outcome.codec, StepReplyJSON):
            return outcome.codec.fields(outcome)
        return orjson.Fragment(outcome.payload)
    return orjson.Fragment(_bulk_item(item, outcome))


def bulk_reply(
    items: Sequence[StepRequest | EntryError], outcomes: Sequence[StepResult | Exception], min_values: int
) -> bytes | Streamed:
    """`bulk_body`, or the same bytes streamed when the replies hold at least `min_values`
    output values in all (0: never): each entry encoded as its turn comes, and let go once
    written."""
    if isinstance(outcomes, StepColumns):
        done = (o for o in outcomes.overrides.values() if isinstance(o, StepResult))
        stepped = len(outcomes) - len(outcomes.overrides)
        values = outcomes.outputs[0].size * stepped + sum(o.outputs.size for o in done)
    else:
        values = sum(o.outputs.size for o in outcomes if isinstance(o, StepResult))
    if not 0 < min_values <= values:
        return bulk_body(items, outcomes)
    return Streamed(chunked(_bulk_pieces(list(items), list(outcomes), min_values)))


def _bulk_pieces(
    items: list[StepRequest | EntryError | None], outcomes: list[StepResult | Exception | None], min_values: int
) -> Iterator[bytes]:
    yield b'{"results":['
    k = 0
    for n, item in enumerate(items):
        items[n] = None  # this entry's inputs and outputs go once it is written
        outcome = None
        if not isinstance(item, EntryError):
            outcome, outcomes[k] = outcomes[k], None
            k += 1
        if n:
            yield b","
        assert item is not None
        if isinstance(outcome, StepResult) and STEP_REPLY.streams(outcome, min_values):
            yield from STEP_REPLY.pieces(outcome)
        else:
            yield _bulk_item(item, outcome)
    yield b"]}"


def _bulk_item(item: StepRequest | EntryError, outcome: StepResult | Exception | None) -> bytes:
    if isinstance(item, EntryError):
        return orjson.dumps({"session_id": item.session_id, "status": item.error.status, **item.error.body()})
    if isinstance(outcome, StepResult):
        return outcome.payload
    if isinstance(outcome, ServiceError):
        return orjson.dumps({"session_id": item.session_id, "status": outcome.status, **outcome.body()})
    # a bug hit this entry alone (the engine logged it): its own 500, the others stand
    return orjson.dumps({"session_id": item.session_id, "status": 500, **internal_error_body(request_id())})


# ---------------------------------------------------------------------------- KServe V2 tensors (HTTP)

TENSOR_FIELDS = frozenset({"name", "shape", "datatype", "parameters", "data"})
OUTPUT_FIELDS = frozenset({"name", "parameters"})
Error = InferenceRequestError


def check_fields(value: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Error(f"{what} must be a JSON object")
    unknown = value.keys() - allowed
    if unknown:
        raise Error(f"{what} has unknown fields {echo(sorted(unknown))}; allowed: {sorted(allowed)}")
    return value


def tensor_array(
    spec: dict[str, Any], name: str, shape: list[int], binary: bytes, offset: int
) -> tuple[np.ndarray, int]:
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
                f"input '{name}': binary_data_size {echo(size)} does not match shape {shape} of FP32 "
                f"({count * 4} bytes)",
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
    if array.dtype.kind not in "fiu" or holds_bool(data, 1):  # true/false are not readings
        raise Error(
            f"input '{name}': data must hold only numbers (FP32), found {first_non_number(data, 1)}", field=name
        )
    if array.size != count:
        raise Error(
            f"input '{name}': shape {shape} needs {count} value{'' if count == 1 else 's'}, data has {array.size}",
            field=name,
            expected=count,
        )
    with np.errstate(over="ignore"):
        array = array.astype(np.float32).reshape(shape)
    return array, offset


def decode_inputs(specs: Any, binary: bytes, model: LoadedModel, max_batch: int, max_steps: int) -> dict:
    """Validated inputs by name: `input` [B, T, F] and any state tensors [rows, B, width]."""
    if not isinstance(specs, list) or not specs:
        raise Error(f"inputs must be a non-empty array of tensors; model '{model.name}' takes {model.input_names}")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, spec in enumerate(specs):
        spec = check_fields(spec, TENSOR_FIELDS, f"inputs[{i}]")
        name: Any = spec.get("name")  # check_tensor refuses anything but a known input's name
        shape = inference.check_tensor(name, spec.get("datatype"), spec.get("shape"), model, max_batch, max_steps)
        if name in arrays:
            raise Error(f"input '{name}' is given twice", field=name)
        arrays[name], offset = tensor_array(spec, name, shape, binary, offset)
    if offset != len(binary):
        raise Error(f"the request has {len(binary) - offset} bytes of binary data that no input claims")
    inference.check_inputs(arrays, model)
    return arrays


def requested_outputs(specs: Any, model: LoadedModel, default: list[str], binary: bool) -> list[tuple[str, bool]]:
    """(name, as binary) per output to return."""
    if specs is None:
        return [(n, binary) for n in default]
    if not isinstance(specs, list):
        raise Error("outputs must be an array of {name, parameters?}")
    chosen: list[tuple[str, bool]] = []
    for i, spec in enumerate(specs):
        spec = check_fields(spec, OUTPUT_FIELDS, f"outputs[{i}]")
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise Error(f"outputs[{i}].parameters must be an object")
        if params.get("classification"):
            raise Error("the classification extension is not supported", field="outputs")
        as_binary = params.get("binary_data", binary)
        if not isinstance(as_binary, bool):
            raise Error(f"outputs[{i}].parameters.binary_data must be true or false")
        name: Any = spec.get("name")  # an unknown name is refused where outputs are picked
        chosen.append((name, as_binary))
    inference.check_outputs([n for n, _ in chosen], model)
    return chosen


def infer_response(
    result: inference.Result, rid: Any, wanted: list[tuple[str, bool]], min_values: int = 0
) -> tuple[bytes | Streamed, int | None]:
    """The V2 inference response: (body, length of its JSON header when binary data follows it,
    else None). With at least `min_values` output values (0: never) the body is streamed: JSON
    `data` a slice at a time, binary data in chunks after the header (its length known, so
    sent with Content-Length); the same bytes as encoded whole."""
    stream = 0 < min_values <= sum(result.tensors[name].size for name, _ in wanted)
    items = []
    blobs: list[np.ndarray] = []
    for name, as_binary in wanted:
        array = result.tensors[name]
        item: dict[str, Any] = {"name": name, "datatype": DATATYPE, "shape": list(array.shape)}
        if as_binary:
            blob = np.ascontiguousarray(array, "<f4")
            item["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(blob)
        else:
            item["data"] = np.ascontiguousarray(array, np.float32).ravel()
        items.append(item)
    body: dict[str, Any] = {"model_name": result.model.name, "model_version": str(result.model.version)}
    if rid is not None:
        body["id"] = rid
    if result.position is not None:
        body["parameters"] = {"sequence_position": result.position}
    labels = result.labels
    if labels is not None:  # a JSON string, [batch][time][lead]: V2 parameter values are scalars
        times = [Rows(labels.readings, labels.rows, labels.horizon) for _ in range(labels.batch)]
        body.setdefault("parameters", {})["forecast_times"] = AsText(times)
    body["outputs"] = items
    if not blobs:
        return json_body(body, stream), None
    header = orjson.dumps(whole(body), option=NUMPY)  # the times, and outputs not asked as binary, whole
    if not stream:
        return b"".join([header, *(blob.tobytes() for blob in blobs)]), len(header)
    length = len(header) + sum(blob.nbytes for blob in blobs)
    return Streamed(_binary_chunks(header, blobs), "application/octet-stream", length=length), len(header)


def _binary_chunks(header: bytes, blobs: list[np.ndarray]) -> Iterator[bytes]:
    yield header
    while blobs:
        flat = blobs.pop(0).reshape(-1).view(np.uint8)  # let go of each tensor once written
        for lo in range(0, len(flat), CHUNK_BYTES):
            yield flat[lo : lo + CHUNK_BYTES].tobytes()

"""Request and response shapes. The request shapes are what validates request bodies and what
the OpenAPI document is drawn from (service/api/openapi.py), so the two cannot drift.

A body is decoded with orjson (fast, with JSON errors that say where) and validated against its
shape with a pydantic TypeAdapter (`parse`): which fields exist, which are required, their
types and ranges, all from the declaration, in strict mode (no "0" for 0, no true for 1).
Request shapes are TypedDicts, not models: validating into a dict costs about half as much as
building a model instance, and the step request is validated once per reading streamed.
Tensor fields (`inputs`, `state`) are at most checked here to be JSON arrays/objects (a step's
inputs not even that: numpy's check says it); their numbers, shapes and limits depend on the
model being served and are checked by numpy in one call (service/core/validate.py), never per float
in Python. Their JSON schema still says exactly what they hold. A validation failure becomes
one InvalidInput (422) naming the field, e.g. "position must be greater than or equal to 0".

Response shapes are pydantic models for the document only (responses are encoded by orjson).
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, Required

import orjson
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from service.core.errors import InvalidInput, MalformedJSON, ServiceError, echo, json_problem
from service.core.validate import MAX_POSITION, parse_start_time

# Examples name the model `make run` trains by default: `electricity`, one feature (half-hourly
# demand in MW) and a clock set from `start_time`. Every body example below is accepted by a
# server that serves it (tests/e2e/test_openapi_examples.py sends each one).
DEFAULT_MODEL = "electricity"
EXAMPLE_SESSION_ID = "q83vEjRWeJC7zd7_EjRWeA"
EXAMPLE_START = "2000-06-05T00:00:00Z"

Steps = list[list[float]]


def _schema_of(kind: Any) -> dict[str, Any]:
    return TypeAdapter(kind).json_schema()


def _json_array(value: Any) -> Any:
    if not isinstance(value, list):
        raise PydanticCustomError("json_array", "must be a JSON array")
    return value  # as it came, not copied: service/core/validate.py reads it with numpy


def _json_object(value: Any) -> Any:
    if not isinstance(value, dict):
        raise PydanticCustomError("json_object", "must be a JSON object")
    return value


def _start_time(value: Any) -> Any:
    # InvalidInput with the formats, naming the field; kept as sent. A day/month/year date is
    # read in the model's order once the model is known (service/core/predict.py, lifecycle.py).
    parse_start_time(value, any_order=True)
    return value


def _resume_time(value: Any) -> Any:
    parse_start_time(value, "resume_time", any_order=True)  # the same formats as start_time, named as sent
    return value


def _nullable(validator: Any) -> Any:
    return lambda value: None if value is None else validator(value)


# A step's inputs (validated once per streamed reading): taken as they are here and checked
# whole by numpy against the session's model (service/core/validate.py: "inputs must be a JSON array
# of numbers", ragged rows, feature count, limits), which costs less than a second pass.
StepsInput = Annotated[Any, WithJsonSchema(_schema_of(Steps))]
# Predict's inputs may be a list of undecoded sequences (service/api/split.py): kept as is.
BatchInput = Annotated[Any, PlainValidator(_json_array), WithJsonSchema(_schema_of(list[Steps]))]
SessionState = Annotated[
    Any, PlainValidator(_nullable(_json_object)), WithJsonSchema(_schema_of(dict[str, Steps] | None))
]
BatchState = Annotated[
    Any, PlainValidator(_nullable(_json_object)), WithJsonSchema(_schema_of(dict[str, list[Steps]] | None))
]
StartTime = Annotated[
    Any,
    PlainValidator(_start_time),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}),
]
ResumeTime = Annotated[
    Any,
    PlainValidator(_resume_time),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}),
]
BulkEntries = Annotated[
    Any,
    PlainValidator(_json_array),
    WithJsonSchema({"type": "array", "x-items": "BulkStep"}),  # the reference is resolved in request_schema
]
START_TIME_DOC = (
    "time of the first reading: ISO 8601 date or date-time (no offset: UTC), 1949-01, 2010/01/01 00:00, 1990Q1, "
    "a year, or epoch seconds; sets the model's clock, and replies carry the times forecast. Not with state"
)
STEP_TIMES_DOC = (
    "[time][lead]: the ISO 8601 times (UTC) this step's forecasts are for, when the session was created with "
    "start_time and the model knows its sampling period (the same times predict gives those readings)"
)
POSITION_DOC = "steps the client believes were applied; enables retry-safety and ordering checks"


def _config(*examples: dict[str, Any]) -> ConfigDict:
    config = ConfigDict(extra="forbid", strict=True)
    if examples:
        config["json_schema_extra"] = {"examples": list(examples)}
    return config


# ---------------------------------------------------------------------------- request shapes


class PredictRequest(TypedDict):
    __pydantic_config__ = _config(  # type: ignore[misc]
        {"inputs": [[[22262.0], [21756.0], [21400.0]]], "start_time": EXAMPLE_START},
        {"inputs": [[[22262.0], [21756.0]], [[30110.0], [29870.0]]], "return_state": True},
    )
    inputs: Required[Annotated[BatchInput, Field(description="[batch][time][features], raw units; lengths may differ")]]
    version: NotRequired[Annotated[int | None, Field(ge=1, description="default: the highest promoted version")]]
    state: NotRequired[
        Annotated[
            BatchState,
            Field(
                description="initial state, every state tensor by name: {'h': [rows][batch][width], ...}; "
                "default: fresh"
            ),
        ]
    ]
    start_time: NotRequired[Annotated[StartTime, Field(description=START_TIME_DOC)]]
    return_state: NotRequired[Annotated[bool, Field(description="answer the final state too")]]


ClientSessionId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{16,64}$",
        description="an id the client chooses for the new session (e.g. 128 random bits, URL-safe base64): makes "
        "the request idempotent. A resend with the same id (same API key, same model) answers the session the "
        "first attempt created instead of creating another; an id held otherwise is 409 session_exists",
    ),
]


class CreateSessionRequest(TypedDict):
    __pydantic_config__ = _config({"start_time": EXAMPLE_START, "ttl_seconds": 3600}, {})  # type: ignore[misc]
    version: NotRequired[Annotated[int | None, Field(ge=1, description="default: the highest promoted version")]]
    ttl_seconds: NotRequired[Annotated[float | None, Field(gt=0, description="idle time-to-live")]]
    state: NotRequired[
        Annotated[
            SessionState,
            Field(description="resume from a state exported elsewhere: every state tensor by name, [rows][width] each"),
        ]
    ]
    start_time: NotRequired[Annotated[StartTime, Field(description=START_TIME_DOC)]]
    resume_time: NotRequired[
        Annotated[
            ResumeTime,
            Field(
                description="with state: the time of the first reading the resumed stream receives (an exported "
                "session's next_time), so that its step replies carry forecast_times; only with state"
            ),
        ]
    ]
    session_id: NotRequired[ClientSessionId]


class ForkRequest(TypedDict):
    __pydantic_config__ = _config({"ttl_seconds": 600})  # type: ignore[misc]
    ttl_seconds: NotRequired[Annotated[float | None, Field(gt=0, description="the fork's idle time-to-live")]]
    session_id: NotRequired[ClientSessionId]


class StepRequest(TypedDict):
    __pydantic_config__ = _config(  # type: ignore[misc]
        {"inputs": [[22262.0]], "position": 0}, {"inputs": [[22262.0], [21756.0]]}
    )
    inputs: Required[Annotated[StepsInput, Field(description="[time][features], one or more steps in raw units")]]
    position: NotRequired[Annotated[int | None, Field(ge=0, le=MAX_POSITION, description=POSITION_DOC)]]


class BulkStep(TypedDict):
    """One entry of a bulk request (validated per entry by the session engine: each gets its own
    result or error, in request order)."""

    __pydantic_config__ = _config()  # type: ignore[misc]
    session_id: Required[str]
    inputs: Required[Annotated[StepsInput, Field(description="[time][features], one or more steps in raw units")]]
    position: NotRequired[Annotated[int | None, Field(ge=0, le=MAX_POSITION, description=POSITION_DOC)]]


class BulkStepRequest(TypedDict):
    __pydantic_config__ = _config(  # type: ignore[misc]
        {"steps": [{"session_id": EXAMPLE_SESSION_ID, "inputs": [[22262.0]], "position": 0}]}
    )
    steps: Required[
        Annotated[
            BulkEntries, Field(description="{session_id, inputs, position?} per session; at most max_bulk_sessions")
        ]
    ]


# KServe V2 (service/api/v2.py validates these with the protocol's 400 instead of 422; what a
# tensor holds is checked against the model in service/api/codecs.py, shared with gRPC)

V2_INPUT = {"name": "input", "shape": [1, 2, 1], "datatype": "FP32", "data": [22262.0, 21756.0]}


class InferTensor(TypedDict):
    __pydantic_config__ = _config()  # type: ignore[misc]
    name: Required[
        Annotated[
            str, Field(description="`input` [batch, time, features], or a state input `<name>0` [rows, batch, width]")
        ]
    ]
    shape: Required[list[int]]
    datatype: Required[Annotated[str, Field(description="FP32")]]
    parameters: NotRequired[
        Annotated[
            dict[str, Any] | None,
            Field(description="`binary_data_size`: the tensor's bytes in the binary extension instead of `data`"),
        ]
    ]
    data: NotRequired[
        Annotated[
            Any,
            PlainValidator(_json_array),  # not copied: read by numpy in one call
            WithJsonSchema({"type": "array", "items": {}}),
            Field(description="row-major numbers, flat or nested"),
        ]
    ]


class InferRequestedOutput(TypedDict):
    __pydantic_config__ = _config()  # type: ignore[misc]
    name: Required[str]
    parameters: NotRequired[
        Annotated[dict[str, Any] | None, Field(description="`binary_data`: this output in the binary extension")]
    ]


class InferenceRequest(TypedDict):
    __pydantic_config__ = _config(  # type: ignore[misc]
        {"inputs": [V2_INPUT]},
        {
            "parameters": {"sequence_id": 42, "sequence_start": True, "start_time": EXAMPLE_START},
            "inputs": [{"name": "input", "shape": [1, 1, 1], "datatype": "FP32", "data": [22262.0]}],
        },
    )
    id: NotRequired[str | None]
    parameters: NotRequired[
        Annotated[
            dict[str, Any] | None,
            Field(
                description="sequence_id, sequence_start, sequence_end, sequence_position, start_time, timeout, "
                "priority, binary_data_output"
            ),
        ]
    ]
    inputs: Required[list[InferTensor]]
    outputs: NotRequired[list[InferRequestedOutput] | None]


class RepositoryIndexRequest(TypedDict):
    __pydantic_config__ = _config({"ready": True})  # type: ignore[misc]
    ready: NotRequired[Annotated[bool, Field(description="list only the loaded versions")]]
    repository_name: NotRequired[str]


# Every request body shape: validated by `parse`, put into the OpenAPI document by openapi.py.
REQUEST_SHAPES: tuple[type, ...] = (
    PredictRequest,
    CreateSessionRequest,
    ForkRequest,
    StepRequest,
    BulkStep,
    BulkStepRequest,
    InferTensor,
    InferRequestedOutput,
    InferenceRequest,
    RepositoryIndexRequest,
)
ADAPTERS: dict[type, TypeAdapter[Any]] = {shape: TypeAdapter(shape) for shape in REQUEST_SHAPES}


REF = "#/components/schemas/{model}"


def request_schema(shape: type) -> dict[str, Any]:
    """The shape's JSON schema, nested shapes as components references."""
    schema = ADAPTERS[shape].json_schema(ref_template=REF)
    for field in schema.get("properties", {}).values():
        if "x-items" in field:
            field["items"] = {"$ref": REF.format(model=field.pop("x-items"))}
    return schema


# ---------------------------------------------------------------------------- validation


def parse(
    shape: type,
    raw: bytes | str,
    what: str = "request body",
    optional: bool = False,
    error: type[ServiceError] = InvalidInput,
) -> dict[str, Any]:
    """A request body -> the validated dict of `shape`; MalformedJSON (400) or `error` (by
    default InvalidInput, 422) naming the field. `optional`: an empty body is {}."""
    if optional and not raw.strip():
        return {}
    if not raw:
        raise MalformedJSON(f"{what} is empty; expected a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"{what} is not valid JSON: {json_problem(exc, raw)}") from None
    return validate(shape, value, what, error)


def validate(
    shape: type, value: Any, what: str = "request body", error: type[ServiceError] = InvalidInput
) -> dict[str, Any]:
    """A decoded JSON value -> the validated dict of `shape`, or `error` naming the field
    (InvalidInput, 422, for v1 bodies; the V2 protocol's 400 for V2 ones)."""
    try:
        return ADAPTERS[shape].validate_python(value)
    except ValidationError as exc:
        raise _problem(shape, exc, what, error) from None


def _problem(shape: type, exc: ValidationError, what: str, error_type: type[ServiceError]) -> ServiceError:
    fields = shape.__annotations__
    errors = exc.errors(include_url=False, include_context=False)
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
    if unknown:
        return error_type(f"{what} has unknown fields {echo(sorted(unknown))}; allowed: {sorted(fields)}")
    error = errors[0]
    loc = error["loc"]
    if not loc:
        return error_type(f"{what} must be a JSON object")
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")  # inputs[0].shape
    description = _description(shape, str(loc[0])) if len(loc) == 1 else None
    hint = f" ({description})" if description else ""
    if error["type"] == "missing":
        return error_type(f"{where} is required{hint}", field=where)
    bounds = _bounds(shape, str(loc[0])) if len(loc) == 1 else None
    given = error.get("input")
    if bounds is not None and (
        error["type"] in ("greater_than_equal", "less_than_equal")
        or (error["type"] == "int_type" and isinstance(given, float) and (given.is_integer() or abs(given) == INF))
    ):
        # 10**30 arrives as the float 1e+30 (JSON integers past 64 bits): out of range, not "not an integer"
        low, high = bounds
        return error_type(
            f"{where} {echo(given)} is out of range: it must be an integer from {low} to {high}{hint}",
            field=where,
            min=low,
            max=high,
        )
    message = str(error["msg"]).replace("Input should be", "must be")
    for python, json in JSON_WORDS:
        message = message.replace(python, json)
    if not message.startswith("must"):
        message = f"is invalid: {message}"
    return error_type(f"{where} {message}{hint}", field=where)


# pydantic's words for types, in the JSON terms a client sees.
JSON_WORDS = (
    ("a valid list", "a JSON array"),
    ("a valid dictionary", "a JSON object"),
    ("a valid boolean", "true or false"),
    ("a valid integer", "an integer"),
    ("a valid number", "a number"),
    ("a valid string", "a string"),
)


INF = float("inf")


def _bounds(shape: type, name: str) -> tuple[int, int] | None:
    """An integer field's [minimum, maximum] from the request's JSON schema, when it has both."""
    field = request_schema(shape).get("properties", {}).get(name, {})
    for option in [field, *field.get("anyOf", [])]:
        if option.get("type") == "integer" and "minimum" in option and "maximum" in option:
            return int(option["minimum"]), int(option["maximum"])
    return None


def _description(shape: type, name: str) -> str | None:
    properties = request_schema(shape).get("properties", {})
    return properties.get(name, {}).get("description")


def body_schema(name: str) -> dict:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def optional_body_schema(name: str) -> dict:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": ref}}}}


# ---------------------------------------------------------------------------- response shapes


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str = Field(description="what is wrong, in words")
    code: str = Field(description="stable machine-readable code, e.g. session_not_found")


class StateTensor(BaseModel):
    name: str = Field(description="key in state export/import; graph input `<name>0`, output `<name>n`")
    shape: list[int] = Field(description="[rows, width] per session (the graph's is [rows, batch, width])")
    graph_shape: list[int] = Field(description="[rows, -1, width]: the batch axis is 1")
    input: str
    output: str
    fill: float = Field(description="every element of a fresh session's tensor")
    doc: str = ""


class Gate(BaseModel):
    model_config = ConfigDict(extra="allow")
    promoted: bool
    reason: str | None = None
    metric: str | None = None
    model: float | None = None
    best_baseline: str | None = None
    best_baseline_value: float | None = None
    # the baseline `ratio_to_best_baseline` is against (the best of every baseline; `best_baseline`
    # is the one the gate was decided against)
    ratio_to_best_baseline: float | None = None
    ratio_baseline: str | None = None
    ratio_baseline_value: float | None = None


class ModelVersion(BaseModel):
    name: str
    version: int
    cell: str
    head: str
    num_layers: int
    hidden_size: int
    input_size: int
    output_size: int
    horizon: int
    features: list[str]
    outputs: list[str]
    quantiles: list[str] = Field(
        [], description="quantile levels the replies carry under `quantiles` (keys like '0.1'); [] for none"
    )
    anomaly: list[str] = Field([], description="fields of each reply's `anomaly` objects; [] when it has none")
    state: dict[str, list[int]] = Field(description="[rows, width] per state tensor, by name")
    state_tensors: list[StateTensor] = Field(description="every state tensor, in graph order")
    state_bytes: int = Field(description="bytes of state one session holds")
    clock: dict | None = Field(None, description="how start_time sets the phase state; null: the model has none")
    positive_target: dict | None = Field(
        None,
        description="{index, name, reason}: the input column whose readings must be positive (the model forecasts "
        "in logs or with multiplicative seasons; 0 or a negative reading is refused, 422); null: any finite reading",
    )
    period_seconds: float | None = Field(
        None,
        description="the sampling period training found (seconds; business days 120960, months 2629746); null: unknown",
    )
    gate: Gate | None = Field(None, description="the quality gate's verdict; null: none recorded (counts as promoted)")
    promoted: bool
    provider: str
    created: str | None = None
    metrics: dict | None = None


class ModelInfo(BaseModel):
    name: str
    latest: int = Field(description="the highest loaded version")
    default: int = Field(description="the version served when none is given: the highest promoted one")
    default_reason: str
    warning: str | None = Field(None, description="set when no loaded version is promoted")
    versions: list[ModelVersion]


class ModelList(BaseModel):
    models: list[ModelInfo]


class Anomaly(BaseModel):
    outside_80: bool = Field(description="the reading fell outside the 80 % interval forecast for it one step earlier")
    outside_95: bool = Field(description="... outside the 95 % interval")
    score: float = Field(description="distance from that 95 % interval's centre in half-widths (|score| > 1: outside)")


QUANTILES_DOC = "by quantile level ('0.025', '0.1', ...), each shaped like `outputs`; models with levels only"
ANOMALY_DOC = (
    "per reading received: against the intervals the session forecast for it at the previous step; "
    "null for a session's first reading; one object for one reading, a list for several"
)


class PredictResponse(BaseModel):
    model: str
    version: int
    outputs: list[Steps] = Field(description="[batch][time][outputs], raw units (logits for classifiers)")
    quantiles: dict[str, list[Steps]] | None = Field(None, description=QUANTILES_DOC)
    anomaly: list[list[Anomaly | None]] | None = Field(
        None, description="[batch][time]: each reading against the previous step's intervals (null: none yet)"
    )
    state: dict[str, list[list[list[float]]]] | None = None
    forecast_times: list[list[list[str]]] | None = Field(
        None,
        description="[batch][time][lead]: the ISO 8601 times (UTC) each forecast is for, when start_time was given "
        "and the model knows its sampling period",
    )


class SessionInfo(BaseModel):
    session_id: str
    model: str
    version: int
    position: int
    created_at: float
    expires_at: float
    ttl_seconds: float
    start_time: str | None = Field(None, description="ISO 8601 (UTC) time of the session's reading 0, when given")
    next_time: str | None = Field(
        None,
        description="ISO 8601 (UTC) time of the next reading (at `position`), when the start time and the model's "
        "period are known: give it as resume_time with the exported state to resume the stream's times elsewhere",
    )
    state: dict[str, list[list[float]]] | None = None


class StepResponse(BaseModel):
    session_id: str
    model: str
    version: int
    position: int
    outputs: Steps
    quantiles: dict[str, Steps] | None = Field(None, description=QUANTILES_DOC)
    anomaly: Anomaly | list[Anomaly | None] | None = Field(None, description=ANOMALY_DOC)
    forecast_times: list[list[str]] | None = Field(None, description=STEP_TIMES_DOC)


class BulkStepResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    session_id: str | None = Field(description="the entry's session_id; null when the entry had no session_id string")
    position: int | None = None
    outputs: Steps | None = None
    quantiles: dict[str, Steps] | None = Field(None, description=QUANTILES_DOC)
    anomaly: Anomaly | list[Anomaly | None] | None = Field(None, description=ANOMALY_DOC)
    forecast_times: list[list[str]] | None = Field(None, description=STEP_TIMES_DOC)
    status: int = 200
    error: str | None = None
    code: str | None = None


class BulkStepResponse(BaseModel):
    results: list[BulkStepResult]

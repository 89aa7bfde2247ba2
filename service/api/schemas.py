"""Request and response shapes, for the OpenAPI document and for clients reading it.

Hot-path bodies are parsed with orjson and validated with numpy (service/runtime.py), not by
these models; the routes declare them so /docs and the OpenAPI schema describe the API truly.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

Steps = list[list[float]]


def body_schema(name: str) -> dict:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def optional_body_schema(name: str) -> dict:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": ref}}}}


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
    state: dict[str, list[int]] = Field(description="[rows, width] per state tensor, by name")
    state_tensors: list[StateTensor] = Field(description="every state tensor, in graph order")
    state_bytes: int = Field(description="bytes of state one session holds")
    clock: dict | None = Field(None, description="how start_time sets the phase state; null: the model has none")
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


class PredictRequest(BaseModel):
    inputs: list[Steps] = Field(description="[batch][time][features], raw units; lengths may differ")
    version: int | None = Field(None, description="default: the highest promoted version")
    state: dict[str, list[list[list[float]]]] | None = Field(
        None,
        description="initial state, every state tensor by name: {'h': [rows][batch][width], ...}; default: fresh",
    )
    start_time: str | None = Field(
        None, description="ISO 8601 time of the first reading (no offset: UTC); sets the model's clock. Not with state"
    )
    return_state: bool = False


class PredictResponse(BaseModel):
    model: str
    version: int
    outputs: list[Steps] = Field(description="[batch][time][outputs], raw units (logits for classifiers)")
    state: dict[str, list[list[list[float]]]] | None = None


class CreateSessionRequest(BaseModel):
    version: int | None = None
    ttl_seconds: float | None = Field(None, gt=0, description="idle time-to-live")
    state: dict[str, list[list[float]]] | None = Field(
        None, description="resume from a state exported elsewhere: every state tensor by name, [rows][width] each"
    )
    start_time: str | None = Field(
        None, description="ISO 8601 time of the first reading (no offset: UTC); sets the model's clock. Not with state"
    )


class ForkRequest(BaseModel):
    ttl_seconds: float | None = Field(None, gt=0)


class SessionInfo(BaseModel):
    session_id: str
    model: str
    version: int
    position: int
    created_at: float
    expires_at: float
    ttl_seconds: float
    state: dict[str, list[list[float]]] | None = None


class StepRequest(BaseModel):
    inputs: Steps = Field(description="[time][features], one or more steps in raw units")
    position: int | None = Field(
        None, ge=0, description="steps the client believes were applied; enables retry-safety and ordering checks"
    )


class StepResponse(BaseModel):
    session_id: str
    model: str
    version: int
    position: int
    outputs: Steps


class BulkStep(BaseModel):
    session_id: str
    inputs: Steps
    position: int | None = Field(None, ge=0)


class BulkStepRequest(BaseModel):
    steps: list[BulkStep]


class BulkStepResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    session_id: str | None = Field(description="the entry's session_id; null when the entry had no session_id string")
    position: int | None = None
    outputs: Steps | None = None
    status: int = 200
    error: str | None = None
    code: str | None = None


class BulkStepResponse(BaseModel):
    results: list[BulkStepResult]

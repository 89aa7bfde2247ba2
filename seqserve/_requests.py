"""Every request the client sends, built in one place: the asyncio client and its sessions,
the WebSocket stream and, through them, the blocking client (which runs the asyncio one).
A builder returns the method, path, JSON body and query; sending, retrying and reading the
answer are the callers' (seqserve/aio.py, seqserve/_stream.py)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: Any = None  # JSON-encodable (numpy arrays included), None: no body
    params: Mapping[str, str] | None = None

    def content(self) -> bytes | None:
        """The body as sent (orjson, numpy arrays encoded directly)."""
        return None if self.body is None else orjson.dumps(self.body, option=orjson.OPT_SERIALIZE_NUMPY)


# Arrays go to orjson as they are (no per-float Python objects); it takes C-contiguous ones.


def _state(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: np.asarray(v, dtype=np.float32).tolist() for k, v in state.items()}


def models() -> Request:
    return Request("GET", "/v1/models")


def model(name: str) -> Request:
    return Request("GET", f"/v1/models/{name}")


def predict(
    name: str,
    sequences: Sequence[np.ndarray],
    version: int | None = None,
    return_state: bool = False,
    state: Mapping[str, Any] | None = None,
    start_time: Any = None,
) -> Request:
    """Stateless prediction of whole sequences ([time, features] each); `state` by name,
    [rows][batch][width] each; `start_time` the time of the first reading (a fresh state)."""
    body: dict[str, Any] = {"inputs": [np.ascontiguousarray(s, dtype=np.float32) for s in sequences]}
    if return_state:
        body["return_state"] = True
    if version is not None:
        body["version"] = version
    if state is not None:
        body["state"] = _state(state)
    if start_time is not None:
        body["start_time"] = start_time
    return Request("POST", f"/v1/models/{name}/predict", body)


def create(
    name: str,
    version: int | None = None,
    ttl: float | None = None,
    state: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Request:
    """A new session, from a fresh state or an exported one ({name: [rows][width]}); `extra`
    fields go into the body as they are (e.g. start_time)."""
    body: dict[str, Any] = {"session_id": new_id(), **(extra or {})}
    if version is not None:
        body["version"] = version
    if ttl is not None:
        body["ttl_seconds"] = ttl
    if state is not None:
        body["state"] = _state(state)
    return Request("POST", f"/v1/models/{name}/sessions", body)


def session_path(session_id: str) -> str:
    return f"/v1/sessions/{session_id}"


def step(session_id: str, steps: np.ndarray, position: int) -> Request:
    """One step request: the readings and the position the session must be at."""
    return Request("POST", f"{session_path(session_id)}/steps", step_body(steps, position))


def step_body(steps: np.ndarray, position: int) -> dict[str, Any]:
    """The body of a step, over REST and as a WebSocket message alike."""
    return {"inputs": np.ascontiguousarray(steps), "position": position}


def stream_message(steps: np.ndarray, position: int) -> str:
    """One WebSocket message of a stream."""
    return orjson.dumps(step_body(steps, position), option=orjson.OPT_SERIALIZE_NUMPY).decode()


def stream_url(base_url: str, session_id: str) -> str:
    scheme, rest = base_url.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{session_path(session_id)}/stream"


def bulk(model_name: str, entries: Sequence[tuple[str, np.ndarray, int]]) -> Request:
    """Steps of many sessions of one model: (session id, readings, position) each."""
    steps = [{"session_id": sid, **step_body(x, position)} for sid, x, position in entries]
    return Request("POST", f"/v1/models/{model_name}/sessions/steps", {"steps": steps})


def info(session_id: str, include_state: bool = False) -> Request:
    params = {"include_state": "true"} if include_state else None
    return Request("GET", session_path(session_id), params=params)


def fork(session_id: str, ttl: float | None = None) -> Request:
    body: dict[str, Any] = {"session_id": new_id()}
    if ttl is not None:
        body["ttl_seconds"] = ttl
    return Request("POST", f"{session_path(session_id)}/fork", body)


def new_id() -> str:
    """The id a create or fork names for its new session (128 random bits): the request is
    built once and resent as is by the retry loop, so a create whose reply was lost finds
    its session instead of leaving an orphan counted against the quotas."""
    return secrets.token_urlsafe(16)


def delete(session_id: str) -> Request:
    return Request("DELETE", session_path(session_id))

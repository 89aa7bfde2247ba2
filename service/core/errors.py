"""Typed domain errors, raised where the problem is found and mapped to HTTP in one place
(service/api/errors.py). Each names the problem for the client: a stable `code`, a message,
and any details that help it recover (e.g. the current position on a conflict). Codes and
their statuses come from the table the Python client uses too (models/error_codes.py): a
class declares its `code`, its `status` is looked up there."""

from __future__ import annotations

import collections
from typing import Any

from models.error_codes import status_of

ECHO_CHARS = 80
# The body of every 500, plus "request_id": nothing about the server's insides.
INTERNAL_ERROR = {"error": "internal error; see the server log", "code": "internal_error"}


def internal_error_body(request_id: str) -> dict[str, Any]:
    """What any unexpected failure answers (500): the request id to find it in the log."""
    return {**INTERNAL_ERROR, "request_id": request_id}


def clipped(text: str, limit: int = 512) -> str:
    """A message that may quote client input, cut to `limit` characters: status lines and
    headers (gRPC's grpc-message, at most 16 KB of metadata) must always reach the client."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clipped_body(body: dict[str, Any], limit: int = 512) -> dict[str, Any]:
    """An error body with every string value clipped (client strings echoed in details)."""
    return {k: clipped(v, limit) if isinstance(v, str) else v for k, v in body.items()}


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """A client's value as an error message may show it: at most `limit` characters, nesting
    shown two levels deep. Never a plain repr, which a deeply nested value turns into a
    RecursionError (a 500) and a large one into megabytes of message."""
    text = _echo(value, 2)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _echo(value: Any, depth: int) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "<a very large integer>"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:ECHO_CHARS])
    if isinstance(value, list | tuple):
        if depth == 0:
            return "[...]" if value else "[]"
        inner = [_echo(v, depth - 1) for v in value[:8]]
        return "[" + ", ".join(inner) + (", ...]" if len(value) > 8 else "]")
    if isinstance(value, dict):
        if depth == 0:
            return "{...}" if value else "{}"
        inner = [f"{_echo(k, 0)}: {_echo(v, depth - 1)}" for k, v in list(value.items())[:4]]
        return "{" + ", ".join(inner) + (", ...}" if len(value) > 4 else "}")
    return f"<{type(value).__name__}>"


# Every refusal by a configured limit, by the limit's setting name: a fixed set (the names are
# constants in the code that refuses, never client input). Process-wide, because refusals
# happen below any one app (the HTTP protocol, the gRPC server, the engine, a store); each
# metrics registry exports it as seqserve_refusals_total{limit} (service/core/metrics.py).
REFUSALS: collections.Counter[str] = collections.Counter()


def json_problem(exc: Exception, raw: bytes | str) -> str:
    """What is wrong with a body the JSON parser refused, in the client's terms. orjson says
    "str is not valid UTF-8: surrogates not allowed" for bytes that are not UTF-8 text
    (binary data sent as JSON, a wrong Inference-Header-Content-Length): that is said, with
    the offending byte and where it is; any other message is the parser's (line, column and
    character), which is already in those terms."""
    text = str(exc)
    if "UTF-8" not in text:
        return text
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as bad:
            byte = bytes(raw)[bad.start]
            return (
                f"it is not UTF-8 text (byte 0x{byte:02x} at offset {bad.start} is not valid UTF-8; JSON must be UTF-8)"
            )
    return "it is not valid UTF-8 text (JSON must be UTF-8)"


def refused(limit: str) -> None:
    """Count one refusal by `limit` (a setting's name, e.g. "max_response_bytes")."""
    REFUSALS[limit] += 1


class ServiceError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:  # a new code: its status is the table's (KeyError if not in it)
            cls.status = status_of(cls.code)

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        limit = details.get("limit")
        if isinstance(limit, str):  # an error naming the limit that refused it
            refused(limit)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.details}


class BadRequest(ServiceError):
    code = "bad_request"


class MalformedJSON(BadRequest):
    code = "malformed_json"


class Unauthorized(ServiceError):
    code = "unauthorized"


class NotFound(ServiceError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class SessionExpired(ServiceError):
    """Gone (410): the session existed; `reason` says why it is gone ("expired", "evicted").
    Stores set `owner` on the exception (never in the body), so a key that did not own the
    session is told 404 like for any unknown id."""

    code = "session_expired"
    owner: str = ""


class SessionEvicted(SessionExpired):
    """Removed to make room (memory store at SEQSERVE_MAX_SESSIONS): 410, reason "evicted"."""

    code = "session_evicted"


class ModelChanged(ServiceError):
    """The session's model version is now a different graph (e.g. the repository was rebuilt):
    its state belongs to the old one and cannot continue. Create a new session."""

    code = "model_changed"


class PositionConflict(ServiceError):
    """The client's idea of the session position is not the server's; `position` tells it."""

    code = "position_conflict"


class SessionExists(ServiceError):
    """A new session's id is already taken (random ids: only given ids can collide)."""

    code = "session_exists"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class InvalidInput(ServiceError):
    code = "invalid_input"


class NonFiniteResult(InvalidInput):
    """The model produced inf or NaN from the request's state and inputs (finite themselves,
    but e.g. a tampered imported state with huge values): nothing was applied or returned."""

    code = "non_finite_result"


class LimitExceeded(ServiceError):
    """A configurable limit refused the request; `limit` names it and `max` gives its value."""

    code = "limit_exceeded"


class TooManySessions(ServiceError):
    code = "too_many_sessions"


class TooManyCalls(ServiceError):
    """A connection, stream or call limit (429; gRPC RESOURCE_EXHAUSTED): `limit` names it."""

    code = "too_many_calls"


class StoreUnavailable(ServiceError):
    """503. The message never names hosts, ports or paths (they go to the log only)."""

    code = "session_store_unavailable"


class NotReady(ServiceError):
    code = "not_ready"


class DeadlineExceeded(ServiceError):
    """The request's own timeout (V2 `timeout`, a gRPC deadline) passed before its reply."""

    code = "deadline_exceeded"

"""The error codes of the service's answers: the one table that the server's domain errors
(service/core/errors.py and the transports' own refusals) and the Python client's typed errors
(seqserve/errors.py) are both built from, so the two cannot drift apart.

Every refusal is a JSON body ``{"error": message, "code": code, ...details}`` with the HTTP
status below. `family` is the more general code a client may treat it as (a limit refused is
invalid input; an evicted session expired), or None.

Plain data, no imports beyond the standard library: the client imports this module on a
machine with neither torch nor the server.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    status: int
    family: str | None
    meaning: str


TABLE: tuple[ErrorCode, ...] = (
    ErrorCode("bad_request", 400, None, "the request is malformed"),
    ErrorCode("malformed_json", 400, "bad_request", "the body is not valid JSON"),
    ErrorCode("invalid_inference_request", 400, "bad_request", "a V2 request the protocol rejects"),
    ErrorCode("method_not_allowed", 405, "bad_request", "the route does not take this method"),
    ErrorCode("unauthorized", 401, None, "no API key, or not a valid one"),
    ErrorCode("not_found", 404, None, "no such route or resource"),
    ErrorCode("model_not_found", 404, "not_found", "no model of that name is loaded"),
    ErrorCode("version_not_found", 404, "not_found", "the model has no such loaded version"),
    ErrorCode("session_not_found", 404, "not_found", "no such session (never existed, or deleted)"),
    ErrorCode("session_expired", 410, None, "the session existed and is gone (idle TTL)"),
    ErrorCode("session_evicted", 410, "session_expired", "the session was removed to make room"),
    ErrorCode(
        "model_changed",
        410,
        None,
        "the session's model version is now another graph: its state cannot continue on it",
    ),
    ErrorCode("position_conflict", 409, None, "the session is not at the position the request states"),
    ErrorCode("session_exists", 409, None, "the session id is already taken"),
    ErrorCode("version_in_use", 409, None, "the model version still has sessions"),
    ErrorCode("header_timeout", 408, None, "the request's headers did not arrive in time"),
    ErrorCode("payload_too_large", 413, None, "the body is larger than the server takes"),
    ErrorCode("headers_too_large", 431, None, "the header block is larger than the server takes"),
    ErrorCode("invalid_input", 422, None, "the values do not fit the model"),
    ErrorCode("limit_exceeded", 422, "invalid_input", "a configured limit refused the request"),
    ErrorCode("invalid_request", 422, "invalid_input", "the body does not match the request schema"),
    ErrorCode("non_finite_result", 422, "invalid_input", "the model's outputs or new state were not finite"),
    ErrorCode("too_many_sessions", 429, None, "a session quota is full"),
    ErrorCode("too_many_calls", 429, None, "a stream or call limit is reached (gRPC RESOURCE_EXHAUSTED)"),
    ErrorCode("internal_error", 500, None, "a bug: the server log has the request id"),
    ErrorCode("session_store_unavailable", 503, None, "the session store cannot be reached now"),
    ErrorCode("not_ready", 503, None, "the service is not ready (starting, or no model loaded)"),
    ErrorCode("too_many_connections", 503, None, "the server holds as many connections as it takes"),
    ErrorCode("deadline_exceeded", 504, None, "the request's own timeout passed"),
)

CODES: dict[str, ErrorCode] = {entry.code: entry for entry in TABLE}


def status_of(code: str) -> int:
    """The HTTP status that goes with `code` (KeyError for a code not in the table)."""
    return CODES[code].status

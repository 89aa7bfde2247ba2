"""Typed domain errors, raised where the problem is found and mapped to HTTP in one place
(service/api/errors.py). Each names the problem for the client: a stable `code`, a message,
and any details that help it recover (e.g. the current position on a conflict)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.details}


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class MalformedJSON(BadRequest):
    code = "malformed_json"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class SessionExpired(ServiceError):
    status, code = 410, "session_expired"


class ModelChanged(ServiceError):
    """The session's model version is now a different graph (e.g. the repository was rebuilt):
    its state belongs to the old one and cannot continue. Create a new session."""

    status, code = 410, "model_changed"


class PositionConflict(ServiceError):
    """The client's idea of the session position is not the server's; `position` tells it."""

    status, code = 409, "position_conflict"


class SessionExists(ServiceError):
    """A new session's id is already taken (random ids: only given ids can collide)."""

    status, code = 409, "session_exists"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class InvalidInput(ServiceError):
    status, code = 422, "invalid_input"


class LimitExceeded(ServiceError):
    """A configurable limit refused the request; `limit` names it and `max` gives its value."""

    status, code = 422, "limit_exceeded"


class TooManySessions(ServiceError):
    status, code = 429, "too_many_sessions"


class StoreUnavailable(ServiceError):
    status, code = 503, "session_store_unavailable"


class NotReady(ServiceError):
    status, code = 503, "not_ready"


class DeadlineExceeded(ServiceError):
    """The request's own timeout (V2 `timeout`, a gRPC deadline) passed before its reply."""

    status, code = 504, "deadline_exceeded"

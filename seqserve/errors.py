"""Typed errors for the service's answers, one class per stable `code` the service sends.

The service answers every refusal with a JSON body ``{"error": ..., "code": ..., ...details}``;
:func:`error_from_response` turns such a body into the matching exception, so callers can
``except SessionExpired`` instead of comparing strings. An unknown code still maps by HTTP
status (a newer server may add codes), so nothing is ever left untyped.

Example::

    from seqserve import Client, PositionConflict

    try:
        session.step([[21000.0]])
    except PositionConflict as exc:
        print("someone else moved the session to", exc.server_position)
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SeqserveError(Exception):
    """Base of every error this client raises. `status` is the HTTP status (0 when the
    failure was local, e.g. a transport error after all retries), `code` the service's code,
    `body` the whole error body (details such as `limit`, `max`, `position`)."""

    status: int = 0
    code: str = "error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}


class TransportFailure(SeqserveError):
    """The server could not be reached (or kept failing with 429/502/503/504) within the
    retry budget. For a step, whether the last attempt was applied is unknown: the session
    object keeps its position, so calling `step` again with the same readings is safe."""


class ProtocolError(SeqserveError):
    """The server answered something this client cannot make sense of (e.g. a step reply
    whose position is not the one the request implies)."""


class BadRequest(SeqserveError):
    status, code = 400, "bad_request"


class Unauthorized(SeqserveError):
    """401: no API key, or not a valid one (pass ``api_key=`` to the client)."""

    status, code = 401, "unauthorized"


class Forbidden(SeqserveError):
    status, code = 403, "forbidden"


class NotFound(SeqserveError):
    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class SessionLost(SeqserveError):
    """The session is gone (deleted, expired, evicted, or unknown to the server).

    Carries what the client knew when it found out: `session_id`, `position` (steps the
    client saw acknowledged), and `pending` (the readings of the request that was not
    applied, or None). A session created with ``recreate=True`` handles this itself by
    recreating the session from its last exported state instead of raising."""

    session_id: str | None = None
    position: int | None = None
    pending: np.ndarray | None = None


class SessionNotFound(SessionLost, NotFound):
    code = "session_not_found"


class SessionExpired(SessionLost):
    status, code = 410, "session_expired"


class Conflict(SeqserveError):
    status, code = 409, "conflict"


class PositionConflict(Conflict):
    """409: the session's position is not where this client left it, and it is not the
    position its own last request would explain: another writer stepped the session (or
    the server lost steps). Nothing was applied by the refused request.
    `client_position` is what this client saw acknowledged, `server_position` the server's."""

    code = "position_conflict"
    client_position: int | None = None

    @property
    def server_position(self) -> int | None:
        value = self.body.get("position")
        return value if isinstance(value, int) else None


class SessionExists(Conflict):
    code = "session_exists"


class VersionInUse(Conflict):
    code = "version_in_use"


class PayloadTooLarge(SeqserveError):
    status, code = 413, "payload_too_large"


class InvalidInput(SeqserveError):
    status, code = 422, "invalid_input"


class LimitExceeded(InvalidInput):
    code = "limit_exceeded"


class InvalidRequest(InvalidInput):
    code = "invalid_request"


class TooManySessions(SeqserveError):
    status, code = 429, "too_many_sessions"


class TooManyRequests(SeqserveError):
    status, code = 429, "too_many_requests"


class ServerError(SeqserveError):
    """5xx the service did not describe further (e.g. an unexpected 500, a proxy's 502)."""

    status, code = 500, "internal_error"


class Unavailable(ServerError):
    status, code = 503, "unavailable"


class StoreUnavailable(Unavailable):
    code = "session_store_unavailable"


class NotReady(Unavailable):
    code = "not_ready"


_BY_CODE: dict[str, type[SeqserveError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        ModelNotFound,
        VersionNotFound,
        SessionNotFound,
        SessionExpired,
        PositionConflict,
        SessionExists,
        VersionInUse,
        PayloadTooLarge,
        InvalidInput,
        LimitExceeded,
        InvalidRequest,
        TooManySessions,
        TooManyRequests,
        ServerError,
        StoreUnavailable,
        NotReady,
    )
}
_BY_CODE.update(
    {"malformed_json": BadRequest, "invalid_inference_request": BadRequest, "method_not_allowed": BadRequest}
)
_BY_STATUS: dict[int, type[SeqserveError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: SessionExpired,
    413: PayloadTooLarge,
    422: InvalidInput,
    429: TooManyRequests,
    503: Unavailable,
}


def error_from_body(status: int, body: Any) -> SeqserveError:
    """The typed error for an error body (a dict with `error` and `code`) and its status."""
    if not isinstance(body, dict):
        body = {"error": str(body)[:200] if body else f"HTTP {status}"}
    code = body.get("code") if isinstance(body.get("code"), str) else None
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status) or (ServerError if status >= 500 else SeqserveError)
    message = body.get("error") if isinstance(body.get("error"), str) else f"HTTP {status}"
    return cls(message, status=status, code=code or cls.code, body=body)

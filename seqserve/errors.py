"""Typed errors for the service's answers, one class per stable `code` the service sends.

The service answers every refusal with a JSON body ``{"error": ..., "code": ..., ...details}``;
:func:`error_from_body` turns such a body into the matching exception, so callers can
``except SessionExpired`` instead of comparing strings. The codes and their statuses are the
server's own table (models/error_codes.py): a code without a class of its own here maps to
the class of its family (an evicted session is a SessionExpired), and an unknown code (a newer
server may add codes) by HTTP status, so nothing is ever left untyped.

Example::

    from seqserve import Client, PositionConflict

    try:
        session.step([[21000.0]])
    except PositionConflict as exc:
        print("someone else moved the session to", exc.server_position)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.error_codes import CODES, TABLE


class SeqserveError(Exception):
    """Base of every error this client raises. `status` is the HTTP status (0 when the
    failure was local, e.g. a transport error after all retries), `code` the service's code,
    `body` the whole error body (details such as `limit`, `max`, `position`)."""

    status: int = 0
    code: str = "error"
    _by_code: ClassVar[dict[str, type[SeqserveError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__ and cls.code in CODES:  # one of the server's codes: its status
            cls.status = CODES[cls.code].status
            SeqserveError._by_code[cls.code] = cls

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
    code = "bad_request"


class Unauthorized(SeqserveError):
    """401: no API key, or not a valid one (pass ``api_key=`` to the client)."""

    code = "unauthorized"


class Forbidden(SeqserveError):
    status, code = 403, "forbidden"


class NotFound(SeqserveError):
    code = "not_found"


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
    code = "session_expired"


class ModelChanged(SeqserveError):
    """410: the session's model version is now another graph (the model file was replaced):
    its state, and any state exported from it, belong to the old graph and cannot continue on
    the new one. Not a SessionLost: ``recreate=True`` does not rebuild from such a state; the
    caller decides (e.g. a new session from the start, or another version). Carries
    `session_id`, `position` and `pending` like SessionLost."""

    code = "model_changed"
    session_id: str | None = None
    position: int | None = None
    pending: np.ndarray | None = None


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
    code = "payload_too_large"


class InvalidInput(SeqserveError):
    code = "invalid_input"


class LimitExceeded(InvalidInput):
    code = "limit_exceeded"


class InvalidRequest(InvalidInput):
    code = "invalid_request"


class TooManySessions(SeqserveError):
    code = "too_many_sessions"


class TooManyRequests(SeqserveError):
    status, code = 429, "too_many_requests"


class ServerError(SeqserveError):
    """5xx the service did not describe further (e.g. an unexpected 500, a proxy's 502)."""

    code = "internal_error"


class Unavailable(ServerError):
    status, code = 503, "unavailable"


class StoreUnavailable(Unavailable):
    code = "session_store_unavailable"


class NotReady(Unavailable):
    code = "not_ready"


# Every code of the server's table: its own class here, else its family's (by status when
# neither has one, e.g. too_many_connections is an Unavailable).
_BY_CODE: dict[str, type[SeqserveError]] = {
    entry.code: cls
    for entry in TABLE
    if (cls := SeqserveError._by_code.get(entry.code) or SeqserveError._by_code.get(entry.family or "")) is not None
}
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

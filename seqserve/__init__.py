"""Python client for seqserve: stateless predictions and exactly-once streaming sessions.

Needs only httpx, websockets and numpy (pandas optional); no torch, no server code (the one
module it shares with the server is the table of error codes, models/error_codes.py).

Example::

    from seqserve import Client

    with Client("http://127.0.0.1:8000") as client, client.session("electricity") as session:
        y = session.step([[22262.0]])                 # REST, one request at a time
        for y in session.stream([[21756.0], [21420.0]]):  # WebSocket, pipelined
            print(y)
"""

from typing import TYPE_CHECKING, Any

# Names resolve on first use, so `seqserve.cli` (the console script, also in the slim serving
# image without httpx) imports none of the client's dependencies.
_EXPORTS = {
    "AsyncClient": "seqserve.aio",
    "AsyncSession": "seqserve.aio",
    "BadRequest": "seqserve.errors",
    "BulkStepError": "seqserve.aio",
    "Client": "seqserve.client",
    "Conflict": "seqserve.errors",
    "InvalidInput": "seqserve.errors",
    "LimitExceeded": "seqserve.errors",
    "ModelChanged": "seqserve.errors",
    "ModelNotFound": "seqserve.errors",
    "NotFound": "seqserve.errors",
    "NotReady": "seqserve.errors",
    "PayloadTooLarge": "seqserve.errors",
    "PositionConflict": "seqserve.errors",
    "ProtocolError": "seqserve.errors",
    "RetryPolicy": "seqserve._protocol",
    "Intervals": "seqserve._protocol",
    "SeqserveError": "seqserve.errors",
    "ServerError": "seqserve.errors",
    "Session": "seqserve.client",
    "SessionExpired": "seqserve.errors",
    "SessionLost": "seqserve.errors",
    "SessionNotFound": "seqserve.errors",
    "StoreUnavailable": "seqserve.errors",
    "TooManySessions": "seqserve.errors",
    "TransportFailure": "seqserve.errors",
    "Unauthorized": "seqserve.errors",
    "Unavailable": "seqserve.errors",
    "VersionNotFound": "seqserve.errors",
}

if TYPE_CHECKING:
    from seqserve._protocol import Intervals, RetryPolicy
    from seqserve.aio import AsyncClient, AsyncSession, BulkStepError
    from seqserve.client import Client, Session
    from seqserve.errors import (
        BadRequest,
        Conflict,
        InvalidInput,
        LimitExceeded,
        ModelChanged,
        ModelNotFound,
        NotFound,
        NotReady,
        PayloadTooLarge,
        PositionConflict,
        ProtocolError,
        SeqserveError,
        ServerError,
        SessionExpired,
        SessionLost,
        SessionNotFound,
        StoreUnavailable,
        TooManySessions,
        TransportFailure,
        Unauthorized,
        Unavailable,
        VersionNotFound,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'seqserve' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncClient",
    "AsyncSession",
    "BadRequest",
    "BulkStepError",
    "Client",
    "Conflict",
    "Intervals",
    "InvalidInput",
    "LimitExceeded",
    "ModelChanged",
    "ModelNotFound",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "PositionConflict",
    "ProtocolError",
    "RetryPolicy",
    "SeqserveError",
    "ServerError",
    "Session",
    "SessionExpired",
    "SessionLost",
    "SessionNotFound",
    "StoreUnavailable",
    "TooManySessions",
    "TransportFailure",
    "Unauthorized",
    "Unavailable",
    "VersionNotFound",
]

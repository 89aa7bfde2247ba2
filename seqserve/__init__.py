"""Python client for seqserve: stateless predictions and exactly-once streaming sessions.

Needs only httpx, websockets and numpy (pandas optional); no torch, no server code.

Example::

    from seqserve import Client

    with Client("http://127.0.0.1:8000") as client, client.session("electricity") as session:
        y = session.step([[22262.0]])                 # REST, one request at a time
        for y in session.stream([[21756.0], [21420.0]]):  # WebSocket, pipelined
            print(y)
"""

from seqserve._protocol import RetryPolicy
from seqserve.aio import AsyncClient, AsyncSession, BulkStepError
from seqserve.client import Client, Session
from seqserve.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    LimitExceeded,
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

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "BadRequest",
    "BulkStepError",
    "Client",
    "Conflict",
    "InvalidInput",
    "LimitExceeded",
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

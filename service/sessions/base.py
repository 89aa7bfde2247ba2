"""What a session is, and the small interface every session store implements.

A store keeps, per session: the pinned model version, the position (steps applied so far),
the recurrent state (float32 [layers, hidden] per state tensor), an idle TTL, and the last
response for retry-safety. `save` is a check-and-set on the position so that two writers
(two requests, two replicas) can never both apply a step on the same old state.
"""

from __future__ import annotations

import abc
import asyncio
import secrets
from dataclasses import dataclass

import numpy as np

from service.errors import ServiceError


def shown(session_id: str) -> str:
    """A session id as echoed in an error: clients control it, so bound what comes back."""
    return session_id if len(session_id) <= 64 else session_id[:64] + "..."


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable and not enumerable."""
    return secrets.token_urlsafe(16)


@dataclass(slots=True)
class LastStep:
    """The most recent applied request: replayed verbatim if the client retries it."""

    position_before: int
    digest: bytes  # hash of the request's inputs
    response: bytes  # the JSON body that was returned


@dataclass(slots=True)
class SessionRecord:
    session_id: str
    model: str
    version: int
    position: int
    state: tuple[np.ndarray, ...]  # each float32 [layers, hidden]
    ttl_seconds: float
    expires_at: float  # wall-clock epoch seconds
    created_at: float
    last: LastStep | None = None


class SessionStore(abc.ABC):
    """Async so that a networked store (Redis) fits behind the same calls."""

    kind: str = "abstract"

    @abc.abstractmethod
    async def create(self, record: SessionRecord, replace: bool = False) -> None:
        """Store a new session. An id already taken is refused, unless `replace`, which swaps
        the old session for this one in one atomic operation (V2 sequence restarts)."""

    @abc.abstractmethod
    async def load(self, session_id: str) -> SessionRecord:
        """The record, with its idle expiry refreshed. Raises SessionNotFound/SessionExpired."""

    @abc.abstractmethod
    async def save(self, record: SessionRecord, expected_position: int) -> None:
        """Write position, state, expiry and last step, only if the stored position is still
        `expected_position`; otherwise raise PositionConflict with the stored position."""

    @abc.abstractmethod
    async def delete(self, session_id: str) -> bool: ...

    async def load_many(self, session_ids: list[str]) -> list[SessionRecord | ServiceError]:
        """Bulk steps: every record, or the error that loading it raised, in order."""
        results = await asyncio.gather(*(self.load(sid) for sid in session_ids), return_exceptions=True)
        return [_domain(r) for r in results]

    async def save_many(self, items: list[tuple[SessionRecord, int]]) -> list[ServiceError | None]:
        """Bulk steps: save(record, expected_position) for each; None or the error, in order."""
        results = await asyncio.gather(*(self.save(r, p) for r, p in items), return_exceptions=True)
        return [None if r is None else _domain(r) for r in results]

    @abc.abstractmethod
    async def count(self) -> int: ...

    async def list_ids(self, limit: int = 1000) -> list[str]:
        return []

    async def usage(self) -> dict[tuple[str, int], int]:
        """Sessions per (model, version), counted now: decides when a version may be unloaded."""
        return {}

    def model_sessions(self, model: str) -> int:
        """Sessions of one model, for the per-model limit; cheap (may be a recent count)."""
        return 0

    def stats(self) -> dict[str, float]:
        """Counters for /metrics, read synchronously at scrape time."""
        return {"active": 0, "evicted": 0, "expired": 0}

    async def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise StoreUnavailable when the store cannot be reached."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Background work (expiry sweeps, connections)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and background tasks."""


def _domain(result: object) -> object:
    """Domain errors are per-item answers; anything else is a bug and propagates."""
    if isinstance(result, BaseException) and not isinstance(result, ServiceError):
        raise result
    return result

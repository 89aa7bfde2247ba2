"""Applying steps to sessions: exactly once, in arrival order, and retry-safe.

Within a process, a FIFO lock per session serialises its requests (asyncio.Lock wakes waiters
in arrival order); different sessions proceed in parallel and meet again in the batcher.
Across processes, the store's check-and-set on the position means a step computed from a
stale state is never written: the loser gets 409 with the current position.

Retry-safety: a client that did not see a response resends the same inputs with the same
`position`. If that position is the one before the last applied request and the inputs hash
the same, the stored response is returned again and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson

from service.batching import Batcher
from service.errors import InvalidInput, LimitExceeded, PositionConflict, TooManySessions
from service.registry import LoadedModel, ModelRegistry
from service.runtime import parse_state, parse_steps
from service.sessions.base import LastStep, SessionRecord, SessionStore, new_session_id, shown
from service.settings import Settings

JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
CAS_ATTEMPTS = 3


def digest(inputs: np.ndarray) -> bytes:
    return hashlib.blake2b(inputs.tobytes(), digest_size=16, person=str(inputs.shape).encode()[:16]).digest()


class _KeyedLocks:
    """One FIFO lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        store: SessionStore,
        batcher_for: Callable[[LoadedModel], Batcher],
        on_steps: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.batcher_for = batcher_for
        self.on_steps = on_steps
        self._locks = _KeyedLocks()

    def _ttl(self, ttl: float | None) -> float:
        if ttl is None:
            return self.settings.session_ttl_seconds
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0:
            raise InvalidInput("ttl_seconds must be a positive number", field="ttl_seconds")
        if ttl > self.settings.max_session_ttl_seconds:
            raise LimitExceeded(
                f"ttl_seconds {ttl} exceeds the maximum {self.settings.max_session_ttl_seconds}",
                field="ttl_seconds",
                limit="max_session_ttl_seconds",
                max=self.settings.max_session_ttl_seconds,
            )
        return float(ttl)

    def _check_quota(self, model: str) -> None:
        limit = self.settings.max_sessions_per_model
        if limit and self.store.model_sessions(model) >= limit:
            raise TooManySessions(
                f"model '{model}' already holds {limit} sessions; delete some or wait for them to expire",
                limit="max_sessions_per_model",
                max=limit,
            )

    async def create(
        self,
        name: str,
        version: int | None = None,
        ttl: float | None = None,
        state: Any = None,
        session_id: str | None = None,
    ) -> SessionRecord:
        """A new session at position 0. `session_id`, when given (e.g. a V2 sequence id), names
        it instead of a random id, and replaces any session already under that id."""
        model = self.registry.get(name, version)
        ttl_s = self._ttl(ttl)
        self._check_quota(model.name)
        if state is None:
            arrays = tuple(s[:, 0, :] for s in model.zero_state(1))
        else:
            arrays = tuple(s[:, 0, :] for s in parse_state(state, model.config, None))
        now = time.time()
        record = SessionRecord(
            session_id or new_session_id(), model.name, model.version, 0, arrays, ttl_s, now + ttl_s, now
        )
        if session_id is None:
            await self.store.create(record)
            return record
        async with self._locks.hold(session_id):  # after steps already queued on the old session
            await self.store.create(record, replace=True)
        return record

    async def get(self, session_id: str) -> SessionRecord:
        return await self.store.load(session_id)

    async def fork(self, session_id: str, ttl: float | None = None) -> SessionRecord:
        async with self._locks.hold(session_id):
            source = await self.store.load(session_id)
        ttl_s = source.ttl_seconds if ttl is None else self._ttl(ttl)
        self._check_quota(source.model)
        now = time.time()
        record = SessionRecord(
            new_session_id(),
            source.model,
            source.version,
            source.position,
            tuple(s.copy() for s in source.state),
            ttl_s,
            now + ttl_s,
            now,
        )
        await self.store.create(record)
        return record

    async def delete(self, session_id: str) -> bool:
        async with self._locks.hold(session_id):
            return await self.store.delete(session_id)

    async def step(self, session_id: str, inputs: Any, position: Any = None, model: str | None = None) -> bytes:
        """Apply steps; returns the JSON response body (bytes, kept for replay).
        `model`, when given, must be the session's model (bulk steps are per model)."""
        if position is not None and (not isinstance(position, int) or isinstance(position, bool) or position < 0):
            raise InvalidInput("position must be a non-negative integer", field="position")
        async with self._locks.hold(session_id):
            for attempt in range(CAS_ATTEMPTS):
                try:
                    return await self._apply(session_id, inputs, position, model)
                except PositionConflict:
                    # Another replica wrote this session between our load and save. A client
                    # that stated no position asked for "append"; recompute on the new state.
                    if position is not None or attempt == CAS_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")

    async def _apply(self, session_id: str, inputs: Any, position: int | None, model: str | None) -> bytes:
        record = await self.store.load(session_id)
        if model is not None and record.model != model:
            raise InvalidInput(f"session '{shown(session_id)}' belongs to model '{record.model}', not '{model}'")
        loaded = self.registry.get(record.model, record.version)
        steps = parse_steps(inputs, loaded.config, self.settings.max_steps_per_request)
        key = digest(steps)
        if position is not None and position != record.position:
            last = record.last
            if last is not None and position == last.position_before and key == last.digest:
                return last.response
            raise PositionConflict(
                f"position {position} does not match the session's position {record.position}",
                position=record.position,
            )
        state = tuple(s[:, None, :] for s in record.state)
        outputs, new_state = await self.batcher_for(loaded).run(steps[None], state)
        before = record.position
        record.position = before + steps.shape[0]
        response = orjson.dumps(
            {
                "session_id": session_id,
                "model": record.model,
                "version": record.version,
                "position": record.position,
                "outputs": outputs[0],
            },
            option=JSON_OPTS,
        )
        record.state = tuple(s[:, 0, :] for s in new_state)
        record.last = LastStep(before, key, response)
        await self.store.save(record, expected_position=before)
        if self.on_steps is not None:
            self.on_steps(loaded.key, steps.shape[0])
        return response

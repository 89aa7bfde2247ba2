"""Applying steps to sessions: exactly once, in arrival order, and retry-safe.

Within a process, a FIFO lock per session serialises its requests (asyncio.Lock wakes waiters
in arrival order); different sessions proceed in parallel and meet again in the batcher.
Across processes, the store's check-and-set on the position means a step computed from a
stale state is never written: the loser gets 409 with the current position.

Retry-safety: a client that did not see a response resends the same inputs with the same
`position`. If one of the session's recent steps (the last `replay_window`) was applied at that
position with inputs that hash the same, its stored response is returned again and nothing is
applied twice, even when other steps were applied since. Requests without a position are never
answered from a record: identical readings from two requests are two steps.

Between this process and the store, every write carries a fresh token (sessions/base.py), so a
write re-sent after its reply was lost is recognised as itself; a conflict means it was not
applied, and a position-less step is then recomputed on the new state.

State is bound to the exact graph it came from: a session records its model's fingerprint,
and a step on a session whose model version was replaced by a different graph is refused
(410 model_changed) before anything is computed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.batching import Batcher
from service.errors import (
    InvalidInput,
    LimitExceeded,
    ModelChanged,
    PositionConflict,
    ServiceError,
    SessionExpired,
    SessionNotFound,
    internal_error_body,
)
from service.logs import request_id
from service.registry import LoadedModel, ModelRegistry
from service.runtime import (
    as_array,
    check_features,
    check_one_origin,
    parse_start_time,
    parse_state,
    parse_steps,
)
from service.sessions.base import LastStep, Quota, SessionRecord, SessionStore, new_session_id, new_token, shown
from service.settings import Settings

log = logging.getLogger("seqserve.errors")
JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
CAS_ATTEMPTS = 3
BULK_FIELDS = frozenset({"session_id", "inputs", "position"})


def digest(inputs: np.ndarray) -> bytes:
    return hashlib.blake2b(inputs.tobytes(), digest_size=16, person=str(inputs.shape).encode()[:16]).digest()


class _KeyedLocks:
    """One FIFO lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def acquire(self, key: str) -> None:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._forget(key)
            raise

    def release(self, key: str) -> None:
        self._locks[key][0].release()
        self._forget(key)

    def _forget(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)


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

    @property
    def quota(self) -> Quota:
        """Checked by the store in the same atomic step as the create (exact across replicas)."""
        return Quota(self.settings.max_sessions_per_model, self.settings.max_sessions_per_key)

    async def _load(self, session_id: str, owner: str) -> SessionRecord:
        """The session, if `owner` owns it. Another key's session is reported exactly like a
        session that does not exist (no oracle), and so is another key's expired session."""
        try:
            record = await self.store.load(session_id)
        except SessionExpired as exc:
            if getattr(exc, "owner", owner) != owner:
                raise _not_found(session_id) from None
            raise
        if record.owner != owner:
            raise _not_found(session_id)
        return record

    async def create(
        self,
        name: str,
        version: int | None = None,
        ttl: float | None = None,
        state: Any = None,
        session_id: str | None = None,
        start_time: Any = None,
        owner: str = "",
    ) -> SessionRecord:
        """A new session at position 0, owned by `owner`. `session_id`, when given (e.g. a V2
        sequence id, which the caller namespaces per owner), names it instead of a random id,
        and replaces any session already under that id (a replacement adds no session to the
        quotas). `state` ({name: [rows][width]}) resumes an exported stream; otherwise the state
        is fresh, its clock set from `start_time` (ISO 8601) when given. Not both."""
        check_one_origin(state, start_time)
        start = parse_start_time(start_time)
        model = self.registry.get(name, version)
        ttl_s = self._ttl(ttl)
        if state is None:
            arrays = tuple(s[:, 0, :] for s in model.initial_state(1, start))
        else:
            arrays = tuple(s[:, 0, :] for s in parse_state(state, model.config, None))
        now = time.time()
        record = SessionRecord(
            session_id or new_session_id(),
            model.name,
            model.version,
            0,
            arrays,
            ttl_s,
            now + ttl_s,
            now,
            fingerprint=model.fingerprint,
            owner=owner,
        )
        if session_id is None:
            await self.store.create(record, quota=self.quota)
            return record
        async with self._locks.hold(session_id):  # after steps already queued on the old session
            await self.store.create(record, replace=True, quota=self.quota)
        return record

    async def get(self, session_id: str, owner: str = "") -> SessionRecord:
        return await self._load(session_id, owner)

    async def fork(self, session_id: str, ttl: float | None = None, owner: str = "") -> SessionRecord:
        async with self._locks.hold(session_id):
            source = await self._load(session_id, owner)
        ttl_s = source.ttl_seconds if ttl is None else self._ttl(ttl)
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
            fingerprint=source.fingerprint,
            owner=owner,
        )
        await self.store.create(record, quota=self.quota)
        return record

    async def delete(self, session_id: str, owner: str = "") -> bool:
        """False when there is no such session of `owner` (another key's counts as none)."""
        async with self._locks.hold(session_id):
            return await self.store.delete(session_id, owner)

    async def step(
        self, session_id: str, inputs: Any, position: Any = None, model: str | None = None, owner: str = ""
    ) -> bytes:
        """Apply steps; returns the JSON response body (bytes, kept for replay).
        `model`, when given, must be the session's model (bulk steps are per model)."""
        _check_position(position)
        async with self._locks.hold(session_id):
            for attempt in range(CAS_ATTEMPTS):
                try:
                    return await self._apply(session_id, inputs, position, model, owner)
                except PositionConflict:
                    # Another replica wrote this session between our load and save. A client
                    # that stated no position asked for "append"; recompute on the new state.
                    if position is not None or attempt == CAS_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")

    async def _apply(self, session_id: str, inputs: Any, position: int | None, model: str | None, owner: str) -> bytes:
        record = await self._load(session_id, owner)
        loaded, steps, key, replay = self._prepare(record, inputs, position, model)
        if replay is not None:
            return replay
        state = tuple(s[:, None, :] for s in record.state)
        outputs, new_state = await self.batcher_for(loaded).run(steps[None], state)
        before = record.position
        response = self._advance(record, steps, key, outputs[0], tuple(s[:, 0, :] for s in new_state))
        record.token = new_token()
        await self.store.save(record, expected_position=before)
        if self.on_steps is not None:
            self.on_steps(loaded.key, steps.shape[0])
        return response

    def _prepare(
        self,
        record: SessionRecord,
        inputs: Any,
        position: int | None,
        model: str | None,
        parsed: np.ndarray | None = None,
    ) -> tuple[LoadedModel, np.ndarray, bytes, bytes | None]:
        """Validate a step request against its session: (model, steps, digest, replay), where
        `replay` is the stored response when this is a retry of the last applied request.
        `parsed`: the inputs already converted (bulk), still to be checked against the model."""
        if model is not None and record.model != model:
            raise InvalidInput(f"session '{shown(record.session_id)}' belongs to model '{record.model}', not '{model}'")
        loaded = self.model_of(record)
        if parsed is not None:
            check_features(parsed.shape[1], loaded.config, "inputs")
            steps = parsed
        else:
            steps = parse_steps(inputs, loaded.config, self.settings.max_steps_per_request)
        key = digest(steps)
        if position is not None and position != record.position:
            for past in reversed(record.history):
                if position == past.position_before and key == past.digest:
                    return loaded, steps, key, past.response
            raise PositionConflict(
                f"position {position} does not match the session's position {record.position}",
                position=record.position,
            )
        return loaded, steps, key, None

    def model_of(self, record: SessionRecord) -> LoadedModel:
        """The loaded model a session's state belongs to; ModelChanged when its version is now
        another graph (a rebuilt repository): the state would be garbage to it, or the wrong
        shape for it."""
        loaded = self.registry.get(record.model, record.version)
        specs = loaded.config.state_specs
        layout_ok = len(record.state) == len(specs) and all(
            array.shape == (spec.rows, spec.width) for array, spec in zip(record.state, specs, strict=False)
        )
        if not layout_ok or (record.fingerprint and record.fingerprint != loaded.fingerprint):
            raise ModelChanged(
                f"session '{shown(record.session_id)}' was created with another graph than the one now served as "
                f"'{record.model}' version {record.version} (the model file changed); its state cannot continue "
                "on it: create a new session",
                session_id=shown(record.session_id),
                model=record.model,
                version=record.version,
            )
        return loaded

    def _advance(
        self, record: SessionRecord, steps: np.ndarray, key: bytes, outputs: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> bytes:
        """Move the record past `steps` (not yet saved) and return the response body."""
        before = record.position
        record.position = before + steps.shape[0]
        response = orjson.dumps(
            {
                "session_id": record.session_id,
                "model": record.model,
                "version": record.version,
                "position": record.position,
                "outputs": outputs,
            },
            option=JSON_OPTS,
        )
        record.state = state
        record.history = (*record.history, LastStep(before, key, response))[-self.settings.replay_window :]
        return response

    async def step_stream(
        self, session_id: str, requests: list[tuple[Any, Any]], owner: str = ""
    ) -> list[bytes | ServiceError]:
        """Several step requests of one session that arrived together (a WebSocket client that
        does not wait for each reply), answered in order exactly as one-by-one `step` calls
        would answer them. When they are all valid and in sequence they are applied as one
        ORT call over the concatenated steps and one store write; otherwise one by one."""
        if len(requests) > 1:
            merged = await self._apply_run(session_id, requests, owner)
            if merged is not None:
                return list(merged)
        results: list[bytes | ServiceError] = []
        for inputs, position in requests:
            try:
                results.append(await self.step(session_id, inputs, position, owner=owner))
            except ServiceError as exc:
                results.append(exc)
        return results

    async def _apply_run(
        self, session_id: str, requests: list[tuple[Any, Any]], owner: str
    ) -> list[bytes | ServiceError] | None:
        """The merged path of step_stream, or None (nothing applied) when any request needs the
        one-by-one path: an error to report, a retry to replay, a conflict, a lost race."""
        async with self._locks.hold(session_id):
            try:
                record = await self._load(session_id, owner)
                loaded = self.model_of(record)
                parts, position = [], record.position
                for inputs, stated in requests:
                    _check_position(stated)
                    if stated is not None and stated != position:
                        return None
                    steps = parse_steps(inputs, loaded.config, self.settings.max_steps_per_request)
                    parts.append(steps)
                    position += steps.shape[0]
            except ServiceError:
                return None
            state = tuple(s[:, None, :] for s in record.state)
            outputs, new_state = await self.batcher_for(loaded).run(np.concatenate(parts)[None], state)
            start, offset = record.position, 0
            responses: list[bytes | ServiceError] = []
            for steps in parts:
                rows = outputs[0, offset : offset + steps.shape[0]]
                offset += steps.shape[0]
                responses.append(self._advance(record, steps, digest(steps), rows, record.state))
            record.state = tuple(s[:, 0, :] for s in new_state)
            record.token = new_token()
            try:
                await self.store.save(record, expected_position=start)
            except PositionConflict:  # another replica wrote first: nothing saved, go one by one
                return None
            except ServiceError as exc:  # store down: the write may or may not have landed, so
                return [exc] * len(requests)  # report it as a single step would, never re-apply
            if self.on_steps is not None:
                self.on_steps(loaded.key, offset)
            return responses

    async def step_many(self, model: str, entries: list[Any], owner: str = "") -> list[bytes]:
        """Bulk: one step request per entry ({session_id, inputs, position?}), all for `model`.

        The per-session work a single step repeats (a task, a lock round, a batcher hop, a
        store round trip) is done once for the whole request here: sessions are locked in a
        global order (no deadlock with another bulk request), loaded together, validated one
        by one, stacked per (version, length) into one ONNX Runtime call each, and saved
        together. Each entry gets its own response body or error body, in request order.
        Entries repeating a session id in the same request are applied after the others,
        one at a time, in request order."""
        results: list[bytes | None] = [None] * len(entries)
        plan: list[_Work] = []
        later: list[_Work] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            session_id = entry.get("session_id") if isinstance(entry, dict) else None
            try:
                if not isinstance(session_id, str):
                    session_id = None  # echo only ids, not whatever stood in their place
                    raise InvalidInput("each entry needs a session_id string", field="session_id")
                unknown = set(entry) - BULK_FIELDS
                if unknown:
                    raise InvalidInput(f"entry has unknown fields {sorted(unknown)}; allowed: {sorted(BULK_FIELDS)}")
                _check_position(entry.get("position"))
            except ServiceError as exc:
                results[i] = _error_body(session_id, exc)
                continue
            work = _Work(i, session_id, entry.get("inputs"), entry.get("position"))
            (later if session_id in seen else plan).append(work)
            seen.add(session_id)

        locked: list[str] = []
        try:
            for sid in sorted({w.session_id for w in plan}):
                await self._locks.acquire(sid)
                locked.append(sid)  # only what is held is released, even if cancelled midway
            groups: dict[tuple[str, int], list[_Work]] = {}
            records = await self.store.load_many([w.session_id for w in plan])
            together = self._parse_together([w.inputs for w in plan])
            for k, (work, record) in enumerate(zip(plan, records, strict=True)):
                try:
                    if isinstance(record, SessionExpired) and getattr(record, "owner", owner) != owner:
                        raise _not_found(work.session_id)
                    if isinstance(record, ServiceError):
                        raise record
                    if record.owner != owner:
                        raise _not_found(work.session_id)
                    work.record = record
                    parsed = None if together is None else together[k]
                    work.loaded, work.steps, work.key, replay = self._prepare(
                        record, work.inputs, work.position, model, parsed
                    )
                except ServiceError as exc:
                    results[work.index] = _error_body(work.session_id, exc)
                    continue
                if replay is not None:
                    results[work.index] = replay
                else:
                    groups.setdefault((work.loaded.key, work.steps.shape[0]), []).append(work)
            retries = await asyncio.gather(*(self._run_group(items, results) for items in groups.values()))
        finally:
            for sid in locked:
                self._locks.release(sid)

        # Position-less entries that lost a race with another replica, and repeated ids.
        for work in sorted([w for group in retries for w in group] + later, key=lambda w: w.index):
            try:
                results[work.index] = await self.step(
                    work.session_id, work.inputs, work.position, model=model, owner=owner
                )
            except ServiceError as exc:
                results[work.index] = _error_body(work.session_id, exc)
            except Exception:  # a bug hit this entry alone: its own 500, the others stand
                log.exception("unhandled error in a bulk entry")
                results[work.index] = orjson.dumps(
                    {"session_id": work.session_id, "status": 500, **internal_error_body(request_id())}
                )
        return [r if r is not None else b"null" for r in results]

    def _parse_together(self, inputs: list[Any]) -> np.ndarray | None:
        """All entries' inputs as one [N, T, F] array when they are uniform and valid (the
        common case: one reading per device), so validation runs once, in C; None sends every
        entry through its own parse and its own precise error."""
        if not inputs or not isinstance(inputs[0], list) or len(inputs[0]) > self.settings.max_steps_per_request:
            return None
        try:
            together = as_array(inputs, "inputs")
        except ServiceError:
            return None
        if together.ndim != 3 or together.shape[1] == 0:
            return None
        return together

    async def _run_group(self, items: list[_Work], results: list[bytes | None]) -> list[_Work]:
        """One ORT call for equal-length steps of one version; returns entries to retry."""
        loaded = items[0].loaded
        inputs = np.stack([w.steps for w in items])
        n_states = len(items[0].record.state)
        state = tuple(np.stack([w.record.state[k] for w in items], axis=1) for k in range(n_states))
        try:
            outputs, new_state = await self.batcher_for(loaded).run(inputs, state)
        except Exception as exc:
            if len(items) == 1 and isinstance(exc, ServiceError):
                results[items[0].index] = _error_body(items[0].session_id, exc)
                return []
            return items  # nothing was saved: each goes again on its own, so only the culprit fails
        rows = zip(*(list(s.transpose(1, 0, 2)) for s in new_state), strict=True)  # per row: (h, c) views
        for w, out, row_state in zip(items, outputs, rows, strict=True):
            w.before = w.record.position
            results[w.index] = self._advance(w.record, w.steps, w.key, out, row_state)
            w.record.token = new_token()
        errors = await self.store.save_many([(w.record, w.before) for w in items])
        applied, retry = 0, []
        for w, error in zip(items, errors, strict=True):
            if error is None:
                applied += w.steps.shape[0]
            elif isinstance(error, PositionConflict) and w.position is None:
                retry.append(w)  # another replica wrote first: recompute via the single path
            else:
                results[w.index] = _error_body(w.session_id, error)
        if self.on_steps is not None and applied:
            self.on_steps(loaded.key, applied)
        return retry


@dataclass(slots=True)
class _Work:
    """One bulk entry on its way through step_many."""

    index: int
    session_id: str
    inputs: Any
    position: int | None
    record: SessionRecord = None  # type: ignore[assignment]
    loaded: LoadedModel = None  # type: ignore[assignment]
    steps: np.ndarray = None  # type: ignore[assignment]
    key: bytes = b""
    before: int = 0


def _check_position(position: Any) -> None:
    if position is not None and (not isinstance(position, int) or isinstance(position, bool) or position < 0):
        raise InvalidInput("position must be a non-negative integer", field="position")


def _not_found(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"session '{shown(session_id)}' does not exist", session_id=shown(session_id))


def _error_body(session_id: Any, exc: ServiceError) -> bytes:
    return orjson.dumps({"session_id": session_id, "status": exc.status, **exc.body()})

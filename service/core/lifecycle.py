"""Session lifecycle: create (fresh, at a start time, or from an exported state), read, fork,
delete. Shares the engine's per-session locks, so a replace or a delete comes after the steps
already queued on the session, never between a step's read and its write."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from service.core.engine import owned
from service.core.errors import InvalidInput, LimitExceeded, ServiceError, SessionExists
from service.core.locks import KeyedLocks
from service.core.registry import ModelRegistry
from service.core.settings import Settings
from service.core.validate import check_one_origin, check_start_range, parse_start_time, parse_state
from service.sessions.base import Quota, SessionRecord, SessionStore, new_session_id


def per_key_quota(settings: Settings, tenants: int) -> int:
    """The sessions one API key may hold (0: no limit). Unset, it is a quarter of
    `max_sessions` once two or more keys share the service, so that no one key can take every
    slot and leave the others a 429; with one key (or none) there is no one else to starve."""
    if settings.max_sessions_per_key is not None:
        return settings.max_sessions_per_key
    return max(1, settings.max_sessions // 4) if tenants >= 2 else 0


class Sessions:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        store: SessionStore,
        locks: KeyedLocks,
        tenants: Callable[[], int] = lambda: 0,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.locks = locks
        self.tenants = tenants  # how many API keys are configured (0: anonymous, one owner)

    @property
    def quota(self) -> Quota:
        """Checked by the store in the same atomic step as the create (exact across replicas)."""
        return Quota(self.settings.max_sessions_per_model, per_key_quota(self.settings, self.tenants()))

    def _ttl(self, ttl: Any) -> float:
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

    async def _load(self, session_id: str, owner: str) -> SessionRecord:
        try:
            record: SessionRecord | ServiceError = await self.store.load(session_id)
        except ServiceError as exc:
            record = exc
        return owned(record, session_id, owner)

    async def create(
        self,
        name: str,
        version: int | None = None,
        ttl: Any = None,
        state: Any = None,
        session_id: str | None = None,
        start_time: Any = None,
        owner: str = "",
        request_id: str | None = None,
        resume_time: Any = None,
    ) -> SessionRecord:
        """A new session at position 0, owned by `owner`. `session_id`, when given (e.g. a V2
        sequence id, which the caller namespaces per owner), names it instead of a random id,
        and replaces any session already under that id (a replacement adds no session to the
        quotas). `state` ({name: [rows][width]}) resumes an exported stream; otherwise the state
        is fresh, its clock set from `start_time` (ISO 8601) when given. Not both. With `state`,
        `resume_time` is the time of the first reading the resumed stream receives (an export's
        next_time): it only labels the forecasts (the state holds the phase already). The
        start time is kept with the session; every step reply labels its forecasts from it."""
        check_one_origin(state, start_time)
        if resume_time is not None and state is None:
            raise InvalidInput(
                "resume_time labels a stream resumed from an exported state: give it with state "
                "(a fresh stream takes start_time)",
                field="resume_time",
            )
        what = "start_time" if resume_time is None else "resume_time"
        model = self.registry.get(name, version)
        start = parse_start_time(start_time if resume_time is None else resume_time, what, model.day_first)
        # The first reading's forecasts must be labellable (a stream may run on for longer).
        check_start_range(start, model.period_seconds, model.config.horizon, what)
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
            start=start,
        )
        if request_id is not None:  # the client's id: a resent create gets the first one's session
            record.session_id = request_id
            return await self._create_once(record, owner)
        if session_id is None:
            await self.store.create(record, quota=self.quota)
            return record
        async with self.locks.hold(session_id):  # after steps already queued on the old session
            await self.store.create(record, replace=True, quota=self.quota)
        return record

    async def get(self, session_id: str, owner: str = "") -> SessionRecord:
        return await self._load(session_id, owner)

    async def _create_once(self, record: SessionRecord, owner: str) -> SessionRecord:
        """Create `record` under the id the client chose, idempotently: if the id is already
        this owner's session of the same model (the first attempt's reply was lost), that
        session is the answer and nothing new is created or counted against a quota; any
        other holder of the id is a 409."""
        try:
            await self.store.create(record, quota=self.quota)
            return record
        except SessionExists as taken:
            try:
                existing = await self._load(record.session_id, owner)
            except ServiceError:
                raise taken from None
            if existing.model != record.model:
                raise
            return existing

    async def fork(
        self, session_id: str, ttl: Any = None, owner: str = "", request_id: str | None = None
    ) -> SessionRecord:
        async with self.locks.hold(session_id):
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
            start=source.start,  # the fork continues the same series: same clock
        )
        if request_id is not None:  # the client's id for the fork: a resent fork gets the first one's
            record.session_id = request_id
            return await self._create_once(record, owner)
        await self.store.create(record, quota=self.quota)
        return record

    async def delete(self, session_id: str, owner: str = "") -> bool:
        """False when there is no such session of `owner` (another key's counts as none)."""
        async with self.locks.hold(session_id):
            return await self.store.delete(session_id, owner)

"""The in-process session store: the default, and the fastest.

Recurrent state lives in preallocated float32 blocks indexed by a slot (StatePool, one per
state layout), not in a numpy array per session: a million idle sessions cost little more
than their raw state bytes,
and reading or writing a state is one row copy. Sessions expire after an idle TTL (a heap of
deadlines, swept every second, plus a check on access).

Capacity (SEQSERVE_MAX_SESSIONS) and fairness: when the store is full, expired sessions are
swept first; if it is still full, a create evicts the *creating key's own* least recently used
session, never another key's. A key holding no session then gets 429 (limit max_sessions).
Without API keys every client is the same owner, so this is plain LRU. An evicted session
answers 410 with `reason: "evicted"` to its owner (404 to anyone else), for as long as its
tombstone is remembered. Per-model and per-key quotas (429) are exact: counted on create,
freed on delete, expiry and eviction.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter, OrderedDict

import numpy as np

from service.core.errors import (
    PositionConflict,
    ServiceError,
    SessionEvicted,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    TooManySessions,
)
from service.sessions.base import NO_QUOTA, LastStep, Quota, SessionRecord, SessionStore, gone, shown, too_many

BLOCK = 1024
TOMBSTONES = 10_000


class StatePool:
    """Fixed-size slots holding one session's state tensors ([rows, width] each), allocated a
    block at a time. Sessions whose tensors all share one shape (h and c) use a 3-D block
    [slots, tensors, rows, width]; any other layout (e.g. h, c and a [1, K] history ring) is
    packed into one flat float32 row per slot, each tensor a reshaped slice of it."""

    def __init__(self, shapes: tuple[tuple[int, int], ...]) -> None:
        self.shapes = shapes
        self.uniform = len(set(shapes)) == 1
        if self.uniform:
            self.shape: tuple[int, ...] = (len(shapes), *shapes[0])
        else:
            self.shape = (sum(r * w for r, w in shapes),)
        bounds, start = [], 0
        for rows, width in shapes:
            bounds.append((start, start + rows * width, (rows, width)))
            start += rows * width
        self._bounds = tuple(bounds)
        self._blocks: list[np.ndarray] = []
        self._free: list[int] = []

    @staticmethod
    def key(state: tuple[np.ndarray, ...]) -> tuple[tuple[int, int], ...]:
        return tuple(s.shape for s in state)  # type: ignore[misc]

    def allocate(self) -> int:
        if not self._free:
            base = len(self._blocks) * BLOCK
            self._blocks.append(np.empty((BLOCK, *self.shape), np.float32))
            self._free.extend(range(base + BLOCK - 1, base - 1, -1))
        return self._free.pop()

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def row(self, slot: int) -> np.ndarray:
        return self._blocks[slot // BLOCK][slot % BLOCK]

    def write(self, slot: int, state: tuple[np.ndarray, ...]) -> None:
        row = self.row(slot)
        if self.uniform:
            for k, array in enumerate(state):
                row[k] = array
        else:
            for (start, stop, shape), array in zip(self._bounds, state, strict=True):
                row[start:stop].reshape(shape)[...] = array

    def read(self, slot: int) -> tuple[np.ndarray, ...]:
        copy = self.row(slot).copy()  # one fresh copy; a view per state tensor (indexing beats tuple())
        if self.uniform:
            return (copy[0],) if self.shape[0] == 1 else (copy[0], copy[1]) if self.shape[0] == 2 else tuple(copy)
        return tuple(copy[start:stop].reshape(shape) for start, stop, shape in self._bounds)


class _Entry:
    __slots__ = (
        "created_at", "expires_at", "fingerprint", "history", "model", "owner", "pool", "position", "slot", "start",
        "token", "ttl", "version",
    )  # fmt: skip

    def __init__(self, record: SessionRecord, pool: StatePool, slot: int) -> None:
        self.model = record.model
        self.version = record.version
        self.fingerprint = record.fingerprint
        self.position = record.position
        self.ttl = record.ttl_seconds
        self.expires_at = record.expires_at
        self.created_at = record.created_at
        self.history: tuple[LastStep, ...] = record.history
        # The last write's token. In-process saves never lose their reply, so a re-sent write
        # can only be the very last one; one token is enough (and costs one reference).
        self.token = record.token
        self.owner = record.owner
        self.start = record.start
        self.pool = pool
        self.slot = slot


class MemorySessionStore(SessionStore):
    kind = "memory"

    def __init__(self, max_sessions: int, sweep_interval: float = 1.0) -> None:
        self.max_sessions = max_sessions
        self.sweep_interval = sweep_interval
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._pools: dict[tuple[tuple[int, int], ...], StatePool] = {}  # one per state layout
        self._deadlines: list[tuple[float, str]] = []
        # id -> (why it is gone, its owner): 410 for the owner, 404 for anyone else
        self._tombstones: OrderedDict[str, tuple[type[SessionExpired], str]] = OrderedDict()
        self._sweeper: asyncio.Task[None] | None = None
        self._usage: Counter[tuple[str, int]] = Counter()
        self._by_owner: dict[str, OrderedDict[str, None]] = {}  # per owner, least recently used first
        self.evictions = 0
        self.expirations = 0

    # -- interface

    async def create(self, record: SessionRecord, replace: bool = False, quota: Quota = NO_QUOTA) -> None:
        if record.session_id in self._entries:
            if not replace:
                raise SessionExists(f"session id '{record.session_id}' is already taken", session_id=record.session_id)
            self._remove(record.session_id)  # frees its slots: a restart never counts twice
        if quota.per_model and self.model_sessions(record.model) >= quota.per_model:
            raise too_many("max_sessions_per_model", quota.per_model, f"model '{record.model}'")
        owned = self._by_owner.get(record.owner)
        if quota.per_key and owned is not None and len(owned) >= quota.per_key:
            raise too_many("max_sessions_per_key", quota.per_key, "this API key")
        if len(self._entries) >= self.max_sessions:
            self.sweep()
        if len(self._entries) >= self.max_sessions:
            owned = self._by_owner.get(record.owner)
            if not owned:
                # Nothing of this key's own to evict. The answer names no count: the store's
                # size and how much of it other keys hold are theirs, not this caller's.
                raise TooManySessions(
                    "no session can be created now: the session store is full and this API key holds none to "
                    "replace; retry later",
                    limit="max_sessions",
                )
            victim = next(iter(owned))
            self._remove(victim)
            self._bury(victim, SessionEvicted, record.owner)
            self.evictions += 1
        states = record.state
        key = StatePool.key(states)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = StatePool(key)
        slot = pool.allocate()
        pool.write(slot, states)
        self._entries[record.session_id] = _Entry(record, pool, slot)
        self._by_owner.setdefault(record.owner, OrderedDict())[record.session_id] = None
        self._usage[(record.model, record.version)] += 1
        heapq.heappush(self._deadlines, (record.expires_at, record.session_id))

    async def load(self, session_id: str) -> SessionRecord:
        return self._load(session_id, time.time())

    async def save(self, record: SessionRecord, expected_position: int) -> None:
        self._save(record, expected_position, time.time())

    async def load_many(self, session_ids: list[str]) -> list[SessionRecord | ServiceError]:
        results: list[SessionRecord | ServiceError] = []
        now = time.time()  # no I/O: one clock reading and a plain loop for the whole batch
        for sid in session_ids:
            try:
                results.append(self._load(sid, now))
            except ServiceError as exc:
                results.append(exc)
        return results

    async def save_many(self, items: list[tuple[SessionRecord, int]]) -> list[ServiceError | None]:
        results: list[ServiceError | None] = []
        now = time.time()
        for record, expected in items:
            try:
                self._save(record, expected, now)
                results.append(None)
            except ServiceError as exc:
                results.append(exc)
        return results

    def _load(self, session_id: str, now: float) -> SessionRecord:
        entry = self._live_entry(session_id, now)
        entry.expires_at = now + entry.ttl
        self._entries.move_to_end(session_id)
        self._by_owner[entry.owner].move_to_end(session_id)
        return SessionRecord(
            session_id,
            entry.model,
            entry.version,
            entry.position,
            entry.pool.read(entry.slot),
            entry.ttl,
            entry.expires_at,
            entry.created_at,
            entry.history,
            entry.fingerprint,
            owner=entry.owner,
            start=entry.start,
        )

    def _save(self, record: SessionRecord, expected_position: int, now: float) -> None:
        entry = self._live_entry(record.session_id, now)
        if record.token and record.token == entry.token:
            return  # this very write was applied already
        if entry.position != expected_position or entry.created_at != record.created_at:
            raise PositionConflict(
                f"session is at position {entry.position}, not {expected_position}",
                position=entry.position,
            )
        entry.pool.write(entry.slot, record.state)
        entry.position = record.position
        entry.history = record.history
        entry.token = record.token
        entry.ttl = record.ttl_seconds
        entry.expires_at = now + entry.ttl
        self._entries.move_to_end(record.session_id)
        self._by_owner[entry.owner].move_to_end(record.session_id)

    async def delete(self, session_id: str, owner: str | None = None) -> bool:
        entry = self._entries.get(session_id)
        if entry is None or (owner is not None and entry.owner != owner):
            return False
        self._remove(session_id)
        return True

    async def count(self) -> int:
        return len(self._entries)

    async def list_ids(self, limit: int = 1000) -> list[str]:
        return list(self._entries)[-limit:]

    async def usage(self) -> dict[tuple[str, int], int]:
        return dict(self._usage)

    def model_sessions(self, model: str) -> int:
        return sum(n for (name, _), n in self._usage.items() if name == model)

    def stats(self) -> dict[str, float]:
        return {"active": len(self._entries), "evicted": self.evictions, "expired": self.expirations, "available": 1}

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # -- internals

    def _live_entry(self, session_id: str, now: float | None = None) -> _Entry:
        entry = self._entries.get(session_id)
        if entry is None:
            tomb = self._tombstones.get(session_id)
            if tomb is not None:
                cls, owner = tomb
                raise gone(cls, session_id, owner, "evicted" if cls is SessionEvicted else "expired")
            raise SessionNotFound(f"session '{shown(session_id)}' does not exist", session_id=shown(session_id))
        if entry.expires_at <= (time.time() if now is None else now):
            self._expire(session_id)
            raise gone(SessionExpired, session_id, entry.owner, "expired")
        return entry

    def _remove(self, session_id: str) -> None:
        entry = self._entries.pop(session_id)
        entry.pool.release(entry.slot)
        owned = self._by_owner[entry.owner]
        del owned[session_id]
        if not owned:
            del self._by_owner[entry.owner]
        key = (entry.model, entry.version)
        self._usage[key] -= 1
        if not self._usage[key]:
            del self._usage[key]

    def _expire(self, session_id: str) -> None:
        owner = self._entries[session_id].owner
        self._remove(session_id)
        self.expirations += 1
        self._bury(session_id, SessionExpired, owner)

    def _bury(self, session_id: str, cls: type[SessionExpired], owner: str) -> None:
        self._tombstones[session_id] = (cls, owner)
        self._tombstones.move_to_end(session_id)
        if len(self._tombstones) > TOMBSTONES:
            self._tombstones.popitem(last=False)

    def sweep(self, now: float | None = None) -> int:
        """Expire every session whose idle deadline has passed; returns how many."""
        now = time.time() if now is None else now
        expired = 0
        while self._deadlines and self._deadlines[0][0] <= now:
            _, session_id = heapq.heappop(self._deadlines)
            entry = self._entries.get(session_id)
            if entry is None:
                continue
            if entry.expires_at <= now:
                self._expire(session_id)
                expired += 1
            else:  # touched since: one heap entry per session, re-armed at its new deadline
                heapq.heappush(self._deadlines, (entry.expires_at, session_id))
        if len(self._deadlines) > 2 * len(self._entries) + BLOCK:  # deleted/evicted leftovers
            self._deadlines = [(e.expires_at, sid) for sid, e in self._entries.items()]
            heapq.heapify(self._deadlines)
        return expired

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()

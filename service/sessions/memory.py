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
import operator
import time
from collections import Counter, OrderedDict
from typing import cast

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
from service.sessions.base import (
    NO_QUOTA,
    Columns,
    LastStep,
    Quota,
    SessionRecord,
    SessionStore,
    gone,
    known_starts,
    shown,
    too_many,
)

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

    def gather(self, slots: list[int]) -> list[tuple[np.ndarray, ...]]:
        """read() of many slots (a bulk step): one fancy-index copy per block touched, then a
        view per state tensor of each row, instead of a copy and a tuple built per slot."""
        rows = self._rows(slots)
        if self.uniform:
            return list(zip(*(rows[:, k] for k in range(self.shape[0])), strict=True))
        return list(
            zip(*(rows[:, start:stop].reshape(len(slots), *shape) for start, stop, shape in self._bounds), strict=True)
        )

    def _rows(self, slots: list[int]) -> np.ndarray:
        """The slots' rows [n, *shape], copied by one fancy index per block touched."""
        index = np.fromiter(slots, np.intp, len(slots))
        if len(self._blocks) == 1:
            return self._blocks[0][index]
        rows = np.empty((len(slots), *self.shape), np.float32)
        blocks = index // BLOCK
        for b in np.unique(blocks).tolist():
            picked = blocks == b
            rows[picked] = self._blocks[b][index[picked] % BLOCK]
        return rows

    def gather_columns(self, slots: list[int]) -> tuple[np.ndarray, ...]:
        """The slots' states laid out as a model call takes them: per state tensor [rows,
        slots, width], contiguous (a columnar bulk step: no object per slot)."""
        rows = self._rows(slots)
        if self.uniform:
            return tuple(np.ascontiguousarray(rows.transpose(1, 2, 0, 3)))
        n = len(slots)
        return tuple(
            np.ascontiguousarray(rows[:, start:stop].reshape(n, *shape).transpose(1, 0, 2))
            for start, stop, shape in self._bounds
        )

    def scatter_columns(self, slots: list[int], state: tuple[np.ndarray, ...]) -> None:
        """The inverse of gather_columns: per state tensor [rows, slots, width] written to
        distinct slots, one fancy-index assignment per block touched."""
        n = len(slots)
        if self.uniform:
            rows = np.stack(state).transpose(2, 0, 1, 3)  # [n, tensors, rows, width]
        else:
            rows = np.empty((n, *self.shape), np.float32)
            for (start, stop, _), array in zip(self._bounds, state, strict=True):
                rows[:, start:stop] = array.transpose(1, 0, 2).reshape(n, stop - start)
        if rows.shape != (n, *self.shape):
            raise ValueError(f"states of shape {rows.shape[1:]} do not fit slots of {self.shape}")
        self._put(slots, rows)

    def _put(self, slots: list[int], rows: np.ndarray) -> None:
        """rows [n, *shape] into distinct `slots`: one fancy-index assignment per block touched."""
        index = np.fromiter(slots, np.intp, len(slots))
        if len(self._blocks) == 1:
            self._blocks[0][index] = rows
            return
        blocks = index // BLOCK
        for b in np.unique(blocks).tolist():
            picked = blocks == b
            self._blocks[b][index[picked] % BLOCK] = rows[picked]

    def scatter(self, slots: list[int], states: list[tuple[np.ndarray, ...]]) -> None:
        """write() of many slots: the states stacked once (C loops), one fancy-index
        assignment per block touched."""
        n = len(slots)
        if self.uniform:
            rows = np.array(states, np.float32)  # [n, tensors, rows, width]
            if rows.shape != (n, *self.shape):
                raise ValueError(f"states of shape {rows.shape[1:]} do not fit slots of {self.shape}")
        else:
            rows = np.empty((n, *self.shape), np.float32)
            for k, (start, stop, _) in enumerate(self._bounds):
                rows[:, start:stop] = np.array([s[k] for s in states], np.float32).reshape(n, stop - start)
        if len(set(slots)) < n:  # one slot twice: written in order, the last one stays
            for slot, row in zip(slots, rows, strict=True):
                self.row(slot)[...] = row
            return
        self._put(slots, rows)


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


# What a columnar load reads of each entry: one tuple per entry, compared in C.
_KIND = operator.attrgetter("pool", "model", "version", "fingerprint", "owner")
_EXPIRES = operator.attrgetter("expires_at")
_POSITION = operator.attrgetter("position")
_SLOT = operator.attrgetter("slot")
_START = operator.attrgetter("start")


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
        """No I/O: one clock reading, a plain loop over the entries, and the states gathered
        per pool as arrays (StatePool.gather), not copied row by row."""
        results: list[SessionRecord | ServiceError] = []
        now = time.time()
        by_pool: dict[int, tuple[StatePool, list[int], list[SessionRecord]]] = {}
        for sid in session_ids:
            try:
                entry = self._touch(sid, now)
            except ServiceError as exc:
                results.append(exc)
                continue
            record = self._record(sid, entry, ())
            results.append(record)
            pooled = by_pool.get(id(entry.pool))
            if pooled is None:
                pooled = by_pool[id(entry.pool)] = (entry.pool, [], [])
            pooled[1].append(entry.slot)
            pooled[2].append(record)
        for pool, slots, records in by_pool.values():
            for record, state in zip(records, pool.gather(slots), strict=True):
                record.state = state
        return results

    async def save_many(self, items: list[tuple[SessionRecord, int]]) -> list[ServiceError | None]:
        """Each save checked as save() does it; the states of those that pass written per pool
        by one scatter (StatePool.scatter)."""
        results: list[ServiceError | None] = []
        now = time.time()
        by_pool: dict[int, tuple[StatePool, list[int], list[tuple[np.ndarray, ...]]]] = {}
        for record, expected in items:
            try:
                entry = self._check(record, expected, now)
            except ServiceError as exc:
                results.append(exc)
                continue
            results.append(None)
            if entry is None:
                continue
            pool = entry.pool
            pooled = by_pool.get(id(pool))
            if pooled is None:
                pooled = by_pool[id(pool)] = (pool, [], [])
            pooled[1].append(entry.slot)
            pooled[2].append(record.state)
            self._update(entry, record, now)
        for pool, slots, states in by_pool.values():
            pool.scatter(slots, states)
        return results

    async def load_columns(self, session_ids: list[str], owner: str) -> Columns | None:
        """The columnar load (SessionStore.load_columns): the entries looked up and checked
        together (one tuple per entry compared, in C), touched as a load touches them, their
        states gathered as the model's arrays; None, touching nothing, when any is missing,
        expired, another owner's or of another kind (the engine's general path answers it)."""
        found = list(map(self._entries.get, session_ids))
        if not found or None in found:
            return None
        entries = cast(list[_Entry], found)
        kind = _KIND(entries[0])
        if kind[4] != owner or len(set(map(_KIND, entries))) != 1:
            return None
        now = time.time()
        if min(map(_EXPIRES, entries)) <= now:
            return None
        pool: StatePool = kind[0]
        moved, mine = self._entries.move_to_end, self._by_owner[owner].move_to_end
        for sid, entry in zip(session_ids, entries, strict=True):
            entry.expires_at = now + entry.ttl
            moved(sid)
            mine(sid)
        return Columns(
            session_ids,
            kind[1],
            kind[2],
            kind[3],
            list(map(_POSITION, entries)),
            known_starts(list(map(_START, entries))),
            pool.gather_columns(list(map(_SLOT, entries))),
            entries,
        )

    async def save_columns(
        self, columns: Columns, length: int, state: tuple[np.ndarray, ...], tokens: list[str]
    ) -> list[ServiceError | None]:
        """The columnar save: each entry checked as save() checks it (still this session's
        entry, at the position it was loaded at, live), updated as save() updates it, and the
        states of those that pass written by one scatter."""
        now = time.time()
        get = self._entries.get
        entries: list[_Entry] = columns.handles
        ids, positions = columns.session_ids, columns.positions
        results: list[ServiceError | None] = [
            None if get(sid) is e and e.position == at and e.expires_at > now else self._refusal(sid, at, now)
            for sid, e, at in zip(ids, entries, positions, strict=True)
        ]
        passed = results.count(None) == len(results)
        moved = self._entries.move_to_end
        mine = self._by_owner[entries[0].owner].move_to_end if entries[0].owner in self._by_owner else None
        for sid, entry, at, token, error in zip(ids, entries, positions, tokens, results, strict=True):
            if error is not None:
                continue
            entry.position = at + length
            entry.token = token
            entry.expires_at = now + entry.ttl
            moved(sid)
            mine(sid)  # type: ignore[misc]  # an owner with a live entry is listed
        pool: StatePool = entries[0].pool
        if passed:
            pool.scatter_columns(list(map(_SLOT, entries)), state)
        else:
            keep = [k for k, error in enumerate(results) if error is None]
            if keep:
                pool.scatter_columns([entries[k].slot for k in keep], tuple(s[:, keep] for s in state))
        return results

    def _refusal(self, session_id: str, expected_position: int, now: float) -> ServiceError:
        """Why a columnar save of this session is refused: what _check raises for it."""
        try:
            entry = self._live_entry(session_id, now)
        except ServiceError as exc:
            return exc
        return PositionConflict(
            f"session is at position {entry.position}, not {expected_position}", position=entry.position
        )

    def _load(self, session_id: str, now: float) -> SessionRecord:
        entry = self._touch(session_id, now)
        return self._record(session_id, entry, entry.pool.read(entry.slot))

    def _touch(self, session_id: str, now: float) -> _Entry:
        """The live entry, its idle expiry refreshed and marked most recently used."""
        entry = self._live_entry(session_id, now)
        entry.expires_at = now + entry.ttl
        self._entries.move_to_end(session_id)
        self._by_owner[entry.owner].move_to_end(session_id)
        return entry

    @staticmethod
    def _record(session_id: str, entry: _Entry, state: tuple[np.ndarray, ...]) -> SessionRecord:
        return SessionRecord(
            session_id,
            entry.model,
            entry.version,
            entry.position,
            state,
            entry.ttl,
            entry.expires_at,
            entry.created_at,
            entry.history,
            entry.fingerprint,
            "",  # token: a loaded record is written with a fresh one
            entry.owner,
            entry.start,
        )

    def _save(self, record: SessionRecord, expected_position: int, now: float) -> None:
        entry = self._check(record, expected_position, now)
        if entry is not None:
            entry.pool.write(entry.slot, record.state)
            self._update(entry, record, now)

    def _check(self, record: SessionRecord, expected_position: int, now: float) -> _Entry | None:
        """The entry a save may write (its check-and-set passed), or None when this very write
        was applied already; PositionConflict (or not found / expired) otherwise."""
        entry = self._live_entry(record.session_id, now)
        if record.token and record.token == entry.token:
            return None  # this very write was applied already
        if entry.position != expected_position or entry.created_at != record.created_at:
            raise PositionConflict(
                f"session is at position {entry.position}, not {expected_position}",
                position=entry.position,
            )
        return entry

    def _update(self, entry: _Entry, record: SessionRecord, now: float) -> None:
        """Everything of a save but the state (written by the caller, alone or per batch)."""
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

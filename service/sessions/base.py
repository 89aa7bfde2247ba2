"""What a session is, and the small interface every session store implements.

A store keeps, per session: the pinned model version and the fingerprint of its graph, the
time of its first reading when the client gave one (written at create, never by a step), the
position (steps applied so far), the recurrent state (float32 [layers, hidden] per state
tensor), an idle TTL, and a bounded record of its recent steps for retry-safety (LastStep).
`save` is a check-and-set on the position so that two writers (two requests, two replicas) can never both
apply a step on the same old state.

Idempotency is by request identity, never by content: every write carries a fresh random
token, and the store remembers the tokens of its recent writes. A write that finds its own
token recorded was already applied (its reply was lost and it was sent again, by this code or
by the Redis client) and is answered "applied"; any other mismatch is a conflict. Two
requests that happen to carry identical readings are two steps.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import operator
import secrets
import struct
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

from service.core.errors import PositionConflict, ServiceError, SessionExpired, TooManySessions


def shown(session_id: str) -> str:
    """A session id as echoed in an error: clients control it, so bound what comes back."""
    return session_id if len(session_id) <= 64 else session_id[:64] + "..."


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable and not enumerable."""
    return secrets.token_urlsafe(16)


def new_token() -> str:
    """The identity of one write: 128 random bits as 32 hex characters."""
    return secrets.token_hex(16)


TOKEN_CHARS = 32
# Tokens remembered per session: a re-sent write is recognised while fewer than this many
# other writes landed on the session since it (re-sends follow within milliseconds).
TOKEN_WINDOW = 32


@dataclass(slots=True)
class LastStep:
    """A recently applied request with a stated position, kept so that a client's retry of it
    (same position, same inputs) gets the same reply. The reply is never stored: it is a pure
    function of the session id, the model version, the session's start time (written once at
    create), the position and the outputs, so a record
    holds the outputs (raw float32 [T, outputs]) when they are small, else the state the step
    started from (raw float32, the state tensors in graph order), from which the engine
    recomputes them (ONNX Runtime gives the same bits for one row alone or stacked). Exactly
    one of `outputs` and `state` is set; the engine decides which and bounds the sum per
    session (SEQSERVE_REPLAY_MAX_BYTES)."""

    position_before: int
    digest: bytes  # hash of the request's inputs (shape included), 16 bytes
    outputs: bytes = b""
    state: bytes = b""

    @property
    def size(self) -> int:
        """Bytes this entry keeps (what counts against the replay budget)."""
        return len(self.outputs) + len(self.state)


# A history blob starts with this magic; the entries follow, each an _ENTRY header and its
# bytes. Blobs of the previous format (no magic: entries of position, length, digest and a JSON
# reply) start with a non-negative int64, whose eighth byte is below 0x80, so the two never mix.
_MAGIC = b"SQRPLY\x01\xff"
_ENTRY = struct.Struct("<qB16sI")  # position before, kind (1 outputs, 2 state), digest, size
_OLD_ENTRY = struct.Struct("<qI16s")
_OUTPUTS, _STATE = 1, 2


def encode_history(history: tuple[LastStep, ...]) -> bytes:
    """Recent steps as bytes (for stores that keep bytes); b"" when there are none."""
    if not history:
        return b""
    parts = [_MAGIC]
    for s in history:
        kind, data = (_STATE, s.state) if s.state else (_OUTPUTS, s.outputs)
        parts += [_ENTRY.pack(s.position_before, kind, s.digest, len(data)), data]
    return b"".join(parts)


def decode_history(blob: bytes) -> tuple[LastStep, ...]:
    if not blob.startswith(_MAGIC):
        return _decode_old_history(blob)
    steps, offset = [], len(_MAGIC)
    while offset < len(blob):
        before, kind, digest, size = _ENTRY.unpack_from(blob, offset)
        offset += _ENTRY.size
        data = blob[offset : offset + size]
        offset += size
        steps.append(LastStep(before, digest, state=data) if kind == _STATE else LastStep(before, digest, data))
    return tuple(steps)


def _decode_old_history(blob: bytes) -> tuple[LastStep, ...]:
    """Records written by the previous release kept each reply whole (JSON): their outputs are
    read out of it once, so a retry across an upgrade still gets its reply."""
    steps, offset = [], 0
    while offset + _OLD_ENTRY.size <= len(blob):
        before, size, digest = _OLD_ENTRY.unpack_from(blob, offset)
        offset += _OLD_ENTRY.size
        steps.append(LastStep(before, digest, old_reply_outputs(blob[offset : offset + size])))
        offset += size
    return tuple(steps)


def old_reply_outputs(reply: bytes) -> bytes:
    """The raw float32 outputs of a reply recorded whole by the previous release (b"" if it is
    not one: that entry then answers a retry with a conflict, as a step past the window does)."""
    try:
        outputs = orjson.loads(reply)["outputs"]
        return np.asarray(outputs, np.float32).tobytes()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return b""


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
    history: tuple[LastStep, ...] = ()  # the most recent steps, oldest first
    fingerprint: str = ""  # the graph the state belongs to (LoadedModel.fingerprint); "" unknown
    token: str = ""  # identity of the write that produced this record (set before each save)
    owner: str = ""  # owner id of the API key that created it ("" without keys); never shown
    # Unix seconds of the reading at position 0 (the create's start_time), when known: step
    # replies label their forecasts from it. Written at create only; a step never changes it.
    start: float | None = None

    @property
    def last(self) -> LastStep | None:
        return self.history[-1] if self.history else None

    def copy(self) -> SessionRecord:
        """A shallow copy (the arrays and history shared, as copy.copy gives), in a sixth of
        copy.copy's time: the record cache makes two per step."""
        return SessionRecord(*_RECORD_FIELDS(self))


_RECORD_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(SessionRecord)))


def stack_states(states: list[tuple[np.ndarray, ...]], shapes: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, ...]:
    """Sessions' states [rows, width] per tensor (each of `shapes`) -> per tensor [rows,
    sessions, width]. When every tensor has one shape (h and c), one np.array call stacks them
    all (a C loop, a third of np.stack's time per session) and one transposed copy lays them
    out. ValueError when a session's tensors are not of `shapes`."""
    if len(shapes) > 1 and len(set(shapes)) == 1:
        together = np.array(states, np.float32)  # [sessions, tensors, rows, width]
        if together.shape[1:] != (len(shapes), *shapes[0]):
            raise ValueError(f"states of shape {together.shape[1:]} are not of {shapes}")
        laid = np.ascontiguousarray(together.transpose(1, 2, 0, 3))  # [tensors, rows, sessions, width]
        return tuple(laid)
    stacked = tuple(np.stack([state[k] for state in states], axis=1) for k in range(len(shapes)))
    if tuple((s.shape[0], s.shape[2]) for s in stacked) != shapes:
        raise ValueError(f"states are not of {shapes}")
    return stacked


@dataclass(slots=True)
class Columns:
    """A batch of sessions as arrays, for the bulk route's common case (service.core.engine's
    columnar path): every session of one model version, graph and owner, each stepped once
    with no stated position. What a store hands out from `load_columns` and takes back in
    `save_columns`; nothing per session but the ids and the store's own `handles`."""

    session_ids: list[str]
    model: str
    version: int
    fingerprint: str
    positions: list[int]  # each session's position as loaded
    starts: list[float | None] | None  # each session's start time; None when no session has one
    state: tuple[np.ndarray, ...]  # per state tensor [rows, sessions, width]: the model's layout
    handles: list[Any]  # the store's per-session objects (entries, cached records) for the save


def known_starts(starts: list[float | None]) -> list[float | None] | None:
    """`Columns.starts` from each session's start time: None when no session has one."""
    return None if starts.count(None) == len(starts) else starts


@dataclass(frozen=True, slots=True)
class Quota:
    """Session limits a create must respect, checked by the store atomically with the write
    (0: no limit). A replaced session (V2 sequence restart) does not count twice."""

    per_model: int = 0
    per_key: int = 0


NO_QUOTA = Quota()


def gone(cls: type[SessionExpired], session_id: str, owner: str, reason: str) -> SessionExpired:
    """A 410 for a session that existed, carrying its owner for the engine's ownership check."""
    exc = cls(f"session '{shown(session_id)}' {reason}", session_id=shown(session_id), reason=reason)
    exc.owner = owner
    return exc


class Superseded(PositionConflict):
    """A save refused because another write landed on the session first. `current` is the
    record the store holds now when it answered it with the refusal (a shared store does, so
    that the step is planned again without another round trip), else None."""

    def __init__(self, message: str, current: SessionRecord | None = None, **details: object) -> None:
        super().__init__(message, **details)
        self.current = current


def too_many(limit: str, value: int, what: str) -> TooManySessions:
    return TooManySessions(
        f"{what} already holds {value} session{'' if value == 1 else 's'}; delete some or wait for them to expire",
        limit=limit,
        max=value,
    )


class SessionStore(abc.ABC):
    """Async so that a networked store (Redis) fits behind the same calls."""

    kind: str = "abstract"

    @abc.abstractmethod
    async def create(self, record: SessionRecord, replace: bool = False, quota: Quota = NO_QUOTA) -> None:
        """Store a new session. An id already taken is refused, unless `replace`, which swaps
        the old session for this one in one atomic operation (V2 sequence restarts). Beyond
        `quota` (sessions of the record's model, of its owner) raise TooManySessions."""

    @abc.abstractmethod
    async def load(self, session_id: str) -> SessionRecord:
        """The record, with its idle expiry refreshed. Raises SessionNotFound/SessionExpired."""

    def cached(self, session_id: str) -> SessionRecord | None:
        """The record as this process last saw it in the store, if it keeps a copy (a copy the
        caller may change), else None. Possibly stale: only a save's check-and-set confirms it
        (the engine plans from it and lets the save decide). Stores in this process return None."""
        return None

    @abc.abstractmethod
    async def save(self, record: SessionRecord, expected_position: int) -> None:
        """Write position, state, expiry and history, only if the stored position is still
        `expected_position`; otherwise raise PositionConflict (a Superseded, with the stored
        record when the store answers it) with the stored position.
        A save whose `record.token` the store already recorded (a re-send of a write that was
        applied) returns normally without writing again."""

    @abc.abstractmethod
    async def delete(self, session_id: str, owner: str | None = None) -> bool:
        """Remove the session and free its quota slots at once. False when there is none, or
        (with `owner`) when another owner's: callers cannot tell those apart."""

    async def load_many(self, session_ids: list[str]) -> list[SessionRecord | ServiceError]:
        """Bulk steps: every record, or the error that loading it raised, in order."""
        results = await asyncio.gather(*(self.load(sid) for sid in session_ids), return_exceptions=True)
        return [_domain(r) for r in results]

    async def save_many(self, items: list[tuple[SessionRecord, int]]) -> list[ServiceError | None]:
        """Bulk steps: save(record, expected_position) for each; None or the error, in order."""
        results = await asyncio.gather(*(self.save(r, p) for r, p in items), return_exceptions=True)
        return [None if r is None else _domain(r) for r in results]

    async def load_columns(self, session_ids: list[str], owner: str) -> Columns | None:
        """Distinct sessions as one Columns batch, their idle expiry refreshed as a load does,
        or None (nothing changed) unless every one is live, `owner`'s, of one model version,
        graph and state layout and (for a shared store) held current enough to plan from: the
        engine then takes its general path. A store without a columnar path always says None."""
        return None

    async def save_columns(
        self, columns: Columns, length: int, state: tuple[np.ndarray, ...], tokens: list[str]
    ) -> list[ServiceError | None]:
        """save() of every session of `columns` moved `length` steps on to `state` (per tensor
        [rows, sessions, width]) with write tokens `tokens`, each a check-and-set on the
        position it was loaded at: None or the error per session, in order, as save_many."""
        raise NotImplementedError(f"{type(self).__name__} has no columnar path")

    @abc.abstractmethod
    async def count(self) -> int: ...

    async def list_ids(self, limit: int = 1000) -> list[str]:
        return []

    async def usage(self) -> dict[tuple[str, int], int]:
        """Sessions per (model, version), counted now: decides when a version may be unloaded."""
        return {}

    def model_sessions(self, model: str) -> int:
        """Sessions of one model, for display (may be a recent count)."""
        return 0

    def stats(self) -> dict[str, float]:
        """Counters for /metrics, read synchronously at scrape time."""
        return {"active": 0, "evicted": 0, "expired": 0, "available": 1}

    def detail(self) -> dict[str, Any]:
        """What /v1/health/sessions reports besides availability (e.g. shards short of replicas)."""
        return {}

    async def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise StoreUnavailable when the store cannot be reached."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Background work (expiry sweeps, connections)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and background tasks."""


T = TypeVar("T")


def _domain(result: T | BaseException) -> T | ServiceError:
    """Domain errors are per-item answers; anything else is a bug and propagates."""
    if isinstance(result, ServiceError):
        return result
    if isinstance(result, BaseException):
        raise result
    return result

"""The one step engine: apply a batch of step requests to locked sessions, exactly once, in
arrival order, and retry-safe. A single step is a batch of one; a WebSocket client's pipelined
messages are a batch on one session; a bulk request is a batch over many sessions. All three go
through `Engine.apply`, so validation, replay, conflicts and the write are the same code.

How a batch is applied:
  1. positions are type-checked; the sessions are locked (sorted order: two overlapping
     batches cannot deadlock) and loaded (one round trip for many), or taken from the store's
     replica-local cache (service.sessions.cache: no round trip) when it has a copy;
  2. each session's requests are checked in order against its record as it would be after the
     earlier ones: an invalid request gets its error, a retry gets its recorded reply, a
     request whose position is not the session's gets a conflict; none of these changes
     the state, so the requests that apply form one run of steps per session;
  3. runs of equal length on one model version are stacked into one ONNX Runtime call (through
     the model's batcher, which may join them with other callers' work);
  4. each record moves past its run (position, state, reply history, a fresh write token) and
     all records are written with a check-and-set on the position they were loaded at.

The columnar path: a batch of distinct sessions each stepped once, with no stated position and
inputs of one shape (the bulk route's common case), whose sessions the store hands out as one
batch of one model version (SessionStore.load_columns), goes through steps 1-4 as arrays:
positions and states from the store, one model call, new write tokens, one check-and-set write
of all (save_columns), and the results as columns (StepColumns), with the model, graph, shape
and reply-size checks made once for the batch. Anything else (several requests on a session,
positions, mixed models, any check or the model call failing, a session the store will not
hand out) is applied by the general path above, from the start and under the same locks, so
every answer and error is the one it gives; nothing is written before the write. Sessions whose
write lost its check-and-set are planned again by the general path.

Retry-safety: a client that did not see a reply resends the same inputs with the same
`position`. If one of the session's recent positioned steps (the last `replay_window`) was
applied at that position with inputs that hash the same, its reply is answered again and
nothing is applied twice. Requests without a position are never answered from a record: identical
readings from two requests are two steps. A write that loses the check-and-set to another
replica was not applied; position-less requests are "apply next": they are recomputed on the
new state and written again, after a short random pause that grows with each lost round (so
replicas contending for one session take turns), up to `apply_attempts` rounds; positioned ones
get the conflict (their client stated where they belong).

A cached copy is provisional: only the save's check-and-set confirms it. When it was stale
(another replica advanced the session), the refused save answers the current record and every
request of the run is planned again from it, positioned ones included, exactly as if that
record had been loaded (this round does not count against `apply_attempts`); a run planned
from a copy that writes nothing (only replays, conflicts or errors) is planned again from a
loaded record, since nothing confirmed the copy.

The reply a retry gets must be the reply the first attempt got, byte for byte. A reply is a
pure function of the session (its start time included: the forecast times), its model version,
the position and the outputs, encoded by the
`ReplyCodec` the engine is built with (the transports' wire format; the engine itself encodes
nothing), so the record keeps only what regenerates it, bounded per session by
`replay_max_bytes`: a step's raw float32 outputs when they fit, else the state the step
started from, from which a retry recomputes the outputs (ONNX Runtime gives the same bits for
a row alone as stacked with others, and for a sequence run whole as in time chunks). A
session's replay record therefore costs at most `replay_max_bytes` or one state, whichever is
larger, however long its replies were (docs/scaling.md counts it).

State is bound to the exact graph it came from: a session records its model's fingerprint,
and a step on a session whose model version was replaced by a different graph is refused
(ModelChanged) before anything is computed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import operator
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import numpy as np

from service.core.batching import Batcher
from service.core.errors import (
    InvalidInput,
    LimitExceeded,
    ModelChanged,
    PayloadTooLarge,
    PositionConflict,
    ServiceError,
    SessionExpired,
    SessionNotFound,
    echo,
    refused,
)
from service.core.locks import KeyedLocks
from service.core.predict import step_times
from service.core.registry import LoadedModel, ModelRegistry
from service.core.settings import Settings
from service.core.validate import MAX_POSITION, check_features, check_positive, check_reply_size, parse_steps
from service.sessions.base import TOKEN_CHARS, LastStep, SessionRecord, SessionStore, shown, stack_states

log = logging.getLogger("seqserve.errors")
BACKOFF_SECONDS = 0.001  # the first pause after a lost check-and-set; doubled per round ...
BACKOFF_MAX_SECONDS = 0.05  # ... up to this (each pause is uniform in [0, bound])


@dataclass(slots=True)
class StepRequest:
    """One step request as a transport decoded it."""

    session_id: str
    inputs: Any  # float32 ndarray [T, F] already decoded, or the JSON value [time][features]
    position: Any = None  # the session's position the client expects (int >= 0), or None


@dataclass(slots=True)
class StepResult:
    """What one step request produced (or replayed)."""

    session_id: str
    model: LoadedModel  # the version the session runs on
    position: int  # the session's position after this step
    outputs: np.ndarray  # float32 [T, outputs]
    # The session's state after this step, per state tensor [rows, width]: set when this step is
    # the last the call applied to its session (None for earlier steps of a merged run, and for a
    # replay of a step that is no longer the session's latest).
    state: tuple[np.ndarray, ...] | None
    replayed: bool = False
    start: float | None = None  # the session's start time (SessionRecord.start): labels the forecasts
    codec: ReplyCodec | None = None  # the engine's wire format: what `payload` encodes with

    @property
    def payload(self) -> bytes:
        """The encoded reply (the same bytes for a retry of the step), encoded when asked for and
        kept nowhere: a large reply is not held whole by the result, and a transport may write
        it a slice at a time from `outputs` instead (service/api/streamed.py)."""
        assert self.codec is not None, "a StepResult is encoded by the engine's codec"
        return self.codec.encode(self)

    @property
    def times(self) -> list[list[str]] | None:
        """[time][lead] ISO times this step's forecasts are for (reading i of the session at
        start + i periods, as predict labels a whole sequence); None without a start time."""
        if self.start is None:
            return None
        return step_times(self.model, self.start, self.position - self.outputs.shape[0], self.outputs.shape[0])


class ReplyCodec(Protocol):
    """Encodes a step's reply (the same bytes for a retry of it). Lives with the wire formats
    (service/api)."""

    def encode(self, result: StepResult) -> bytes: ...


_PERSONS: dict[tuple[int, ...], bytes] = {}


def digest(inputs: np.ndarray) -> bytes:
    """What identifies a request's readings for replay: a 16-byte hash of their bytes, keyed
    by their shape."""
    shape = inputs.shape
    person = _PERSONS.get(shape)
    if person is None:
        person = str(shape).encode()[:16]
        if len(_PERSONS) < 4096:
            _PERSONS[shape] = person
    return hashlib.blake2b(inputs.tobytes(), digest_size=16, person=person).digest()


def new_tokens(count: int) -> list[str]:
    """`count` write tokens (sessions/base.py's new_token, 128 random bits each) from one
    call to the system's random source."""
    text = os.urandom(count * TOKEN_CHARS // 2).hex()
    return [text[k : k + TOKEN_CHARS] for k in range(0, len(text), TOKEN_CHARS)]


def check_position(position: Any) -> None:
    """A client's expected position: an integer in [0, MAX_POSITION]. A number out of that range
    (10**30 arrives as the float 1e+30, JSON integers past 64 bits are read as floats) is said to
    be out of range, not to be "not an integer"."""
    if position is None:
        return
    if (
        isinstance(position, bool)
        or not isinstance(position, int | float)
        or (isinstance(position, float) and not (position.is_integer() or abs(position) == float("inf")))
    ):
        raise InvalidInput(f"position must be an integer from 0 to {MAX_POSITION}", field="position")
    if not (isinstance(position, int) and 0 <= position <= MAX_POSITION):
        raise InvalidInput(
            f"position {echo(position)} is out of range: it must be an integer from 0 to {MAX_POSITION}",
            field="position",
            min=0,
            max=MAX_POSITION,
        )


def not_found(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"session '{shown(session_id)}' does not exist", session_id=shown(session_id))


def owned(record: SessionRecord | ServiceError, session_id: str, owner: str) -> SessionRecord:
    """The loaded record if `owner` owns it, else the error to answer. Another key's session
    is reported exactly like a session that does not exist (no oracle), and so is another
    key's expired session."""
    if isinstance(record, SessionExpired) and getattr(record, "owner", owner) != owner:
        raise not_found(session_id)
    if isinstance(record, ServiceError):
        raise record
    if record.owner != owner:
        raise not_found(session_id)
    return record


class _Run:
    """One session's requests within a batch: which apply, which were answered otherwise."""

    __slots__ = (
        "applied", "echoes", "fresh", "items", "length", "loaded", "outputs", "positioned", "provisional", "record",
        "regens", "session_id", "start", "steps", "use_cache",
    )  # fmt: skip

    def __init__(self, session_id: str, items: list[int]) -> None:
        self.session_id = session_id
        self.items = items  # request indices, in arrival order
        self.record: SessionRecord = None  # type: ignore[assignment]  # set once loaded
        self.loaded: LoadedModel = None  # type: ignore[assignment]
        self.start = 0  # the position the record was loaded at
        self.use_cache = True  # the first round may plan from the store's cached copy
        self.provisional = False  # this round's record is that copy (only a save confirms it)
        self.fresh: SessionRecord | None = None  # the record a refused save answered with
        # the per-round fields are set by reset(), which every round calls before planning

    def reset(self) -> None:
        self.steps: list[np.ndarray] = []  # inputs of the applied requests
        self.outputs: np.ndarray | None = None  # what the applied steps produced [length, width]
        # (index, position before, digest): b"" for a position-less request until a retry
        # within the batch needs it (digest_of), as only positioned steps are recorded
        self.applied: list[tuple[int, int, bytes]] = []
        self.echoes: list[tuple[int, int]] = []  # (index, index of the applied step it retries)
        self.positioned: list[bool] = []  # per applied request: did it state a position (recorded)
        # retries of recorded steps whose outputs are recomputed from their pre-step state:
        # (index, position before, inputs, recorded step)
        self.regens: list[tuple[int, int, np.ndarray, LastStep]] = []
        self.length = 0  # time steps applied


Outcome = StepResult | Exception
_SHAPE = operator.attrgetter("shape")
_SESSION = operator.attrgetter("session_id")
_POSITION = operator.attrgetter("position")
_INPUTS = operator.attrgetter("inputs")


class StepColumns(Sequence[Outcome]):
    """The outcomes of a batch applied by the columnar path, in request order: the sessions'
    new positions, outputs [sessions, T, O] and states [rows, sessions, width] as arrays, and
    `overrides` for entries answered otherwise (a refused write: its error, or its general-path
    result). A StepResult is built only for an entry read one by one; a transport that
    encodes columns (service.api.codecs.bulk_body) never asks for one."""

    __slots__ = ("codec", "model", "outputs", "overrides", "positions", "session_ids", "starts", "state")

    def __init__(
        self,
        session_ids: list[str],
        model: LoadedModel,
        positions: list[int],
        outputs: np.ndarray,
        state: tuple[np.ndarray, ...],
        starts: list[float | None] | None,
        codec: ReplyCodec,
    ) -> None:
        self.session_ids = session_ids
        self.model = model
        self.positions = positions  # after the step
        self.outputs = outputs
        self.state = state
        self.starts = starts  # None: no session has a start time
        self.codec = codec
        self.overrides: dict[int, Outcome] = {}

    def __len__(self) -> int:
        return len(self.session_ids)

    @overload
    def __getitem__(self, index: int) -> Outcome: ...

    @overload
    def __getitem__(self, index: slice) -> list[Outcome]: ...

    def __getitem__(self, index: int | slice) -> Outcome | list[Outcome]:
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        outcome = self.overrides.get(index)
        if outcome is not None:
            return outcome
        return StepResult(
            self.session_ids[index],
            self.model,
            self.positions[index],
            self.outputs[index],
            tuple(s[:, index, :] for s in self.state),
            start=None if self.starts is None else self.starts[index],
            codec=self.codec,
        )

    def __iter__(self) -> Iterator[Outcome]:
        return (self[k] for k in range(len(self)))


def _uniform(requests: Sequence[StepRequest]) -> tuple[list[str], list[np.ndarray]] | None:
    """(session ids, inputs) when the batch fits the columnar path: distinct sessions, no
    stated position, inputs already arrays of one 2-D shape (a bulk body's rows converted
    together); else None. Checked with C loops (attrgetter, set), no Python step per request."""
    ids = list(map(_SESSION, requests))
    if len(set(ids)) != len(ids) or list(map(_POSITION, requests)).count(None) != len(ids):
        return None
    inputs = list(map(_INPUTS, requests))
    if set(map(type, inputs)) != {np.ndarray} or len(set(map(_SHAPE, inputs))) != 1 or inputs[0].ndim != 2:
        return None
    return ids, inputs


class Engine:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        store: SessionStore,
        batcher_for: Callable[[LoadedModel], Batcher],
        replies: ReplyCodec,
        locks: KeyedLocks | None = None,
        on_steps: Callable[[str, int], None] | None = None,
        on_outputs: Callable[[LoadedModel, np.ndarray], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.batcher_for = batcher_for
        self.replies = replies
        self.locks = locks if locks is not None else KeyedLocks()
        self.on_steps = on_steps
        # Called with the outputs of every run written (applied exactly once; never for a
        # replay), for models that flag readings: the metrics count the flags from them.
        self.on_outputs = on_outputs

    # ------------------------------------------------------------------------ entry points

    async def step(self, request: StepRequest, *, model: str | None = None, owner: str = "") -> StepResult:
        """A batch of one; its error is raised. `model`, when given, must be the session's."""
        check_position(request.position)
        results: list[Outcome | None] = [None]
        async with self.locks.hold(request.session_id):
            await self._apply_locked([request], [_Run(request.session_id, [0])], results, model, owner)
        outcome = results[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[return-value]  # the slot is filled

    async def apply(
        self, requests: Sequence[StepRequest], *, model: str | None = None, owner: str = ""
    ) -> Sequence[Outcome]:
        """Apply `requests` (any sessions; one session's requests apply in their order) and
        return, in request order, each one's result or its error: a ServiceError, or for a
        bug hit by one item of a larger batch, the exception itself (already logged)."""
        if len(requests) > 1:
            uniform = _uniform(requests)
            if uniform is not None:
                ids, inputs = uniform
                async with self.locks.hold_all(ids):
                    columns = await self._apply_columns(requests, ids, inputs, model, owner)
                    if columns is not None:
                        return columns
                    everything: list[Outcome | None] = [None] * len(requests)
                    runs_ = [_Run(sid, [k]) for k, sid in enumerate(ids)]
                    await self._apply_locked(requests, runs_, everything, model, owner)
                return everything  # type: ignore[return-value]  # every slot is filled
        results: list[Outcome | None] = [None] * len(requests)
        runs: dict[str, _Run] = {}
        for i, request in enumerate(requests):
            try:
                check_position(request.position)
            except ServiceError as exc:
                results[i] = exc
                continue
            run = runs.get(request.session_id)
            if run is None:
                runs[request.session_id] = _Run(request.session_id, [i])
            else:
                run.items.append(i)
        if runs:
            async with self.locks.hold_all(runs) if len(runs) > 1 else self.locks.hold(next(iter(runs))):
                await self._apply_locked(requests, list(runs.values()), results, model, owner)
        return results  # type: ignore[return-value]  # every slot is filled

    # ------------------------------------------------------------------------ the columnar path

    async def _apply_columns(
        self, requests: Sequence[StepRequest], ids: list[str], inputs: list[np.ndarray], model: str | None, owner: str
    ) -> StepColumns | None:
        """The locked batch applied as columns (see the module's docstring), or None with
        nothing written when any part of it is unusual: the general path then applies it."""
        columns = await self.store.load_columns(ids, owner)
        if columns is None or (model is not None and columns.model != model):
            return None
        try:
            loaded = self.registry.get(columns.model, columns.version)
        except ServiceError:
            return None
        if columns.fingerprint and columns.fingerprint != loaded.fingerprint:
            return None
        if tuple((s.shape[0], s.shape[2]) for s in columns.state) != loaded.state_shapes:
            return None
        length, features = inputs[0].shape
        if not 0 < length <= self.settings.max_steps_per_request:
            return None
        try:
            check_features(features, loaded.config, "inputs")
            for array in inputs if loaded.config.positive_target is not None else ():
                check_positive(array, loaded.config, "inputs")  # refused entry by entry by the general path
        except ServiceError:
            return None
        if len(ids) * length * loaded.output_width > self.settings.max_response_values:
            return None
        stacked = np.concatenate(inputs).reshape(len(inputs), length, features)  # a third of np.stack's time
        if stacked.dtype != np.float32:
            stacked = stacked.astype(np.float32)
        try:
            outputs, state = await self.batcher_for(loaded).run(stacked, columns.state)
        except Exception:  # retried by the general path, run by run: only its cause fails
            return None
        errors = await self.store.save_columns(columns, length, state, new_tokens(len(ids)))
        result = StepColumns(
            ids, loaded, [p + length for p in columns.positions], outputs, state, columns.starts, self.replies
        )
        written = outputs
        if errors.count(None) != len(errors):
            again = [k for k, error in enumerate(errors) if isinstance(error, PositionConflict)]
            for k, error in enumerate(errors):
                if error is not None and not isinstance(error, PositionConflict):
                    result.overrides[k] = error  # the store is down, the session gone: as _write
            keep = [k for k, error in enumerate(errors) if error is None]
            written = outputs[keep]
            if again:  # another writer was first: planned again from the record it left
                redo = [requests[k] for k in again]
                answers: list[Outcome | None] = [None] * len(redo)
                runs = [_Run(r.session_id, [j]) for j, r in enumerate(redo)]
                await self._apply_locked(redo, runs, answers, model, owner)
                for k, answer in zip(again, answers, strict=True):
                    result.overrides[k] = answer  # type: ignore[assignment]  # every slot is filled
        if len(written):
            if self.on_steps is not None:
                self.on_steps(loaded.key, len(written) * length)
            if self.on_outputs is not None and loaded.anomaly:
                self.on_outputs(loaded, written.reshape(-1, written.shape[-1]))
        return result

    # ------------------------------------------------------------------------ one locked batch

    async def _apply_locked(
        self,
        requests: Sequence[StepRequest],
        runs: list[_Run],
        results: list[Outcome | None],
        model: str | None,
        owner: str,
    ) -> None:
        attempts = self.settings.apply_attempts
        attempt = 0  # rounds lost to another replica's write (a stale cached copy does not count)
        while runs:
            last = attempt == attempts - 1
            loaded = await self._records(runs)
            working: list[_Run] = []
            recheck: list[_Run] = []  # planned from a cached copy, answered without a write
            models: dict[tuple[str, int], LoadedModel] = {}  # looked up once per batch
            for run, record in zip(runs, loaded, strict=True):
                run.reset()
                try:
                    run.record = owned(record, run.session_id, owner)
                    run.start = run.record.position
                    run.loaded = self._model_for(run.record, model, models)
                except ServiceError as exc:
                    if run.provisional:
                        recheck.append(run)
                        continue
                    for i in run.items:
                        results[i] = exc
                    continue
                self._plan(run, requests, results)
                if run.applied:
                    working.append(run)
                elif run.provisional:
                    recheck.append(run)
            if working and not self._reply_fits(working, results):
                working = []  # refused whole (413): nothing runs, nothing is written
            # (a copy that nothing confirms answers nothing: those runs are planned again)
            regenerating = [run for run in runs if run.regens and (run.applied or not run.provisional)]
            if regenerating:
                await asyncio.gather(*(self._regenerate(run, results) for run in regenerating))
            again: list[_Run] = []
            if working:
                await self._compute(working, results, single=len(requests) == 1)
                again = await self._write([r for r in working if r.applied], requests, results, last)
            if any(not r.provisional for r in again):
                attempt += 1  # lost the check-and-set: let the winner's replica go on first
                await asyncio.sleep(random.uniform(0, min(BACKOFF_SECONDS * 2 ** (attempt - 1), BACKOFF_MAX_SECONDS)))
            runs = recheck + again

    async def _records(self, runs: list[_Run]) -> list[SessionRecord | ServiceError]:
        """Each run's record for this round: the one its refused save answered with, else (first
        round only) the store's cached copy, else loaded (one round trip for all)."""
        out: list[SessionRecord | ServiceError | None] = [None] * len(runs)
        missing: list[int] = []
        for k, run in enumerate(runs):
            record, run.fresh = run.fresh, None
            run.provisional = False
            if record is None and run.use_cache:
                record = self.store.cached(run.session_id)
                run.provisional = record is not None
            run.use_cache = False
            if record is None:
                missing.append(k)
            else:
                out[k] = record
        if len(missing) == 1:
            k = missing[0]
            try:
                out[k] = await self.store.load(runs[k].session_id)
            except ServiceError as exc:
                out[k] = exc
        elif missing:
            records = await self.store.load_many([runs[k].session_id for k in missing])
            for k, answer in zip(missing, records, strict=True):
                out[k] = answer
        return out  # type: ignore[return-value]  # every slot is filled

    def _reply_fits(self, working: list[_Run], results: list[Outcome | None]) -> bool:
        """Whether the outputs of the steps to apply fit `max_response_values` (one request,
        or a WebSocket batch or a bulk request in all); if not, every request of those runs
        gets the 413 with the figures and nothing runs (replays planned from a cached copy
        included: nothing would confirm them)."""
        values = sum(run.length * run.loaded.output_width for run in working)
        if values <= self.settings.max_response_values:
            return True
        requests = sum(len(run.applied) for run in working)
        steps = sum(run.length for run in working)
        try:
            check_reply_size(values, self.settings.max_response_values, f"{requests} requests, {steps:,} steps in all")
        except PayloadTooLarge as exc:
            for run in working:
                for i in run.items if run.provisional else [i for i, _, _ in run.applied] + [i for i, _ in run.echoes]:
                    results[i] = exc
                run.reset()
        return False

    def _plan(self, run: _Run, requests: Sequence[StepRequest], results: list[Outcome | None]) -> None:
        """Decide each request of one session in order, against the record as the earlier
        ones leave it: error, replay (of a recorded or of an earlier applied step), or apply."""
        record, config = run.record, run.loaded.config
        position = record.position
        for i in run.items:
            request = requests[i]
            try:
                steps = self._steps(request.inputs, config, run.loaded.name)
            except ServiceError as exc:
                results[i] = exc
                continue
            stated = request.position
            key = b"" if stated is None else digest(steps)
            if stated is not None and stated != position:
                results[i] = self._retry_of(run, i, stated, key, steps, position)
                continue
            run.applied.append((i, position, key))
            run.positioned.append(stated is not None)
            run.steps.append(steps)
            position += steps.shape[0]
        run.length = position - record.position

    def _retry_of(
        self, run: _Run, index: int, stated: int, key: bytes, steps: np.ndarray, position: int
    ) -> Outcome | None:
        """A request at another position than the session's: the replay of one of its recent
        steps (same position, same inputs), or a conflict carrying the current position."""
        for n in range(len(run.applied) - 1, -1, -1):  # earlier requests of this batch, newest first
            j, before, applied_key = run.applied[n]
            if before == stated and (applied_key or digest(run.steps[n])) == key:
                run.echoes.append((index, j))
                return None  # filled in once step j has its reply
        length = steps.shape[0]
        for past in reversed(run.record.history):
            if past.position_before != stated or past.digest != key:
                continue
            if past.state:
                run.regens.append((index, stated, steps, past))
                return None  # filled in by _regenerate
            if past.outputs and len(past.outputs) % (4 * length) == 0:
                outputs = np.frombuffer(past.outputs, np.float32).reshape(length, -1)
                return self._replayed(run, stated, length, outputs)
            break
        return PositionConflict(
            f"position {stated} does not match the session's position {position}", position=position
        )

    def _replayed(self, run: _Run, stated: int, length: int, outputs: np.ndarray) -> StepResult:
        """The reply to a retry, encoded again from the recorded step's outputs: the same
        bytes as the first time. It carries the state when the step is still the latest."""
        record = run.record
        at_head = not run.applied and stated + length == record.position
        result = StepResult(
            run.session_id,
            run.loaded,
            stated + length,
            outputs,
            record.state if at_head else None,
            replayed=True,
            start=record.start,
            codec=self.replies,
        )
        return result

    async def _regenerate(self, run: _Run, results: list[Outcome | None]) -> None:
        """Retries of steps recorded by their pre-step state: the outputs are computed again
        from it on the retry's own inputs (which hash the same as the first attempt's)."""
        for index, stated, steps, past in run.regens:
            try:
                flat = np.frombuffer(past.state, np.float32)
                state, start = [], 0
                for rows, width in run.loaded.state_shapes:
                    state.append(flat[start : start + rows * width].reshape(rows, 1, width))
                    start += rows * width
                if start != flat.size:
                    raise PositionConflict(
                        f"position {stated} does not match the session's position {run.record.position}",
                        position=run.record.position,
                    )
                outputs, _ = await self.batcher_for(run.loaded).run(steps[None], tuple(state))
                results[index] = self._replayed(run, stated, steps.shape[0], outputs[0])
            except Exception as exc:
                if not isinstance(exc, ServiceError):
                    log.error("unhandled error recomputing a replayed reply", exc_info=exc)
                results[index] = exc
        run.regens = []

    def _entry(
        self, before: int, key: bytes, outputs: np.ndarray, pre: tuple[np.ndarray, ...] | None
    ) -> LastStep | None:
        """The replay record of one applied positioned step: its outputs when they fit in
        `replay_max_bytes`, else the state it started from (`pre`; None when it is not known:
        a later request of a merged run, which then keeps no record and a retry of it gets the
        conflict, as one past the window does)."""
        if outputs.nbytes <= self.settings.replay_max_bytes:
            return LastStep(before, key, np.ascontiguousarray(outputs, np.float32).tobytes())
        if pre is None:
            return None
        return LastStep(before, key, state=b"".join(np.ascontiguousarray(s, np.float32).tobytes() for s in pre))

    def _trimmed(self, history: tuple[LastStep, ...]) -> tuple[LastStep, ...]:
        """The newest records that fit the window and the byte budget (the newest always)."""
        window, budget = self.settings.replay_window, self.settings.replay_max_bytes
        kept: list[LastStep] = []
        used = 0
        for entry in reversed(history):
            if len(kept) == window or (kept and used + entry.size > budget):
                break
            kept.append(entry)
            used += entry.size
        kept.reverse()
        return tuple(kept)

    def _steps(self, inputs: Any, config: Any, model: str = "") -> np.ndarray:
        """The request's readings as float32 [T, F], checked against the session's model (its
        feature count and input domain: a refused step changes nothing in the session)."""
        limit = self.settings.max_steps_per_request
        if not isinstance(inputs, np.ndarray):
            return parse_steps(inputs, config, limit, model=model)
        if inputs.ndim != 2 or inputs.shape[0] == 0:
            raise InvalidInput(
                f"inputs must be a non-empty [time][features] array; got shape {list(inputs.shape)}", field="inputs"
            )
        if inputs.shape[0] > limit:
            raise LimitExceeded(
                f"inputs has {inputs.shape[0]} steps; at most {limit} per request (max_steps_per_request)",
                field="inputs",
                limit="max_steps_per_request",
                max=limit,
            )
        check_features(inputs.shape[1], config, "inputs")
        check_positive(inputs, config, "inputs", model)
        return inputs if inputs.dtype == np.float32 else inputs.astype(np.float32)

    async def _compute(self, runs: list[_Run], results: list[Outcome | None], single: bool) -> None:
        """One ONNX Runtime call per (model version, run length), the calls in flight together;
        each run's record moves past its steps (not yet written)."""
        if len(runs) == 1:
            await self._run_guarded(runs, results, single)
            return
        groups: dict[tuple[int, int], list[_Run]] = {}
        for run in runs:
            groups.setdefault((id(run.loaded), run.length), []).append(run)
        await asyncio.gather(*(self._run_guarded(group, results, single) for group in groups.values()))

    async def _run_guarded(self, group: list[_Run], results: list[Outcome | None], single: bool) -> None:
        """A failing stacked call is retried run by run, so only the run that causes the
        failure gets the error. A bug (not a domain error) in a batch of one is raised."""
        try:
            await self._run_group(group, results)
        except Exception as exc:
            if single and not isinstance(exc, ServiceError):
                raise
            if len(group) == 1:
                self._fail(group[0], exc, results)
                return
            for run in group:
                try:
                    await self._run_group([run], results)
                except Exception as alone:
                    self._fail(run, alone, results)

    def _fail(self, run: _Run, exc: Exception, results: list[Outcome | None]) -> None:
        if not isinstance(exc, ServiceError):
            log.error("unhandled error applying steps", exc_info=exc)
        for i, _, _ in run.applied:
            results[i] = exc
        for i, _ in run.echoes:
            results[i] = exc
        run.reset()

    async def _run_group(self, group: list[_Run], results: list[Outcome | None]) -> None:
        loaded = group[0].loaded
        if len(group) == 1:
            steps = group[0].steps
            inputs = (steps[0] if len(steps) == 1 else np.concatenate(steps))[None]
            state = tuple(s[:, None, :] for s in group[0].record.state)
        else:
            inputs = np.stack([r.steps[0] if len(r.steps) == 1 else np.concatenate(r.steps) for r in group])
            state = stack_states([r.record.state for r in group], loaded.state_shapes)
        outputs, new_state = await self.batcher_for(loaded).run(inputs, state)
        tokens = new_tokens(len(group)) if len(group) > 1 else [os.urandom(TOKEN_CHARS // 2).hex()]
        # Per row, as views (made in C): its outputs [L, O] and its final state tensors.
        if len(group) == 1:
            row_outputs = [outputs[0]]
            row_states = [tuple(s[:, 0, :] for s in new_state)]
        else:
            row_outputs = list(outputs)
            row_states = list(zip(*(list(s.transpose(1, 0, 2)) for s in new_state), strict=True))
        codec = self.replies
        for b, run in enumerate(group):
            record, final, out = run.record, row_states[b], row_outputs[b]
            run.outputs = out
            history = record.history
            if len(run.applied) == 1 and not run.echoes:  # the common case: one request per session
                i, before, key = run.applied[0]
                result = StepResult(
                    run.session_id, loaded, before + run.length, out, final, start=record.start, codec=codec
                )
                results[i] = result
                if run.positioned[0]:
                    entry = self._entry(before, key, out, record.state)
                    if entry is not None:
                        history = self._trimmed((*history, entry))
            else:
                history = self._finish_run(run, loaded, out, final, results, history)
            record.position = run.start + run.length
            record.state = final
            record.history = history
            record.token = tokens[b]

    def _finish_run(
        self,
        run: _Run,
        loaded: LoadedModel,
        out: np.ndarray,
        final: tuple[np.ndarray, ...],
        results: list[Outcome | None],
        history: tuple[LastStep, ...],
    ) -> tuple[LastStep, ...]:
        """Several requests of one session ran as one: each gets its rows of the outputs and
        its own reply (and replay record); retries of them within the batch get the same reply."""
        codec = self.replies
        offset, last = 0, len(run.applied) - 1
        recorded = list(history)
        pre: tuple[np.ndarray, ...] | None = run.record.state  # the first request's starting state
        by_index: dict[int, StepResult] = {}
        for n, (i, before, key) in enumerate(run.applied):
            length = run.steps[n].shape[0]
            result = StepResult(
                run.session_id,
                loaded,
                before + length,
                out[offset : offset + length],
                final if n == last else None,
                start=run.record.start,
                codec=codec,
            )
            if run.positioned[n]:
                entry = self._entry(before, key, result.outputs, pre)
                if entry is not None:
                    recorded.append(entry)
            pre = None  # the states between merged requests are not computed
            offset += length
            results[i] = by_index[i] = result
        for i, j in run.echoes:
            first = by_index[j]
            results[i] = StepResult(
                run.session_id, loaded, first.position, first.outputs, None, True, first.start, codec
            )
        return self._trimmed(tuple(recorded))

    async def _write(
        self, runs: list[_Run], requests: Sequence[StepRequest], results: list[Outcome | None], last: bool
    ) -> list[_Run]:
        """Write the records (check-and-set); returns the runs to recompute: those that lost
        the check-and-set to another replica and still have position-less requests."""
        if not runs:
            return []
        if len(runs) == 1:
            run = runs[0]
            try:
                await self.store.save(run.record, expected_position=run.start)
            except ServiceError as exc:
                errors: list[ServiceError | None] = [exc]
            else:
                if self.on_steps is not None:
                    self.on_steps(run.loaded.key, run.length)
                self._count_outputs(run)
                return []
        else:
            errors = await self.store.save_many([(r.record, r.start) for r in runs])
        again: list[_Run] = []
        applied: dict[int, tuple[LoadedModel, int]] = {}
        for run, error in zip(runs, errors, strict=True):
            if error is None:
                self._count_outputs(run)
                counted = applied.get(id(run.loaded))
                applied[id(run.loaded)] = (run.loaded, run.length + (counted[1] if counted else 0))
                continue
            if isinstance(error, PositionConflict) and (run.provisional or not last):
                run.fresh = getattr(error, "current", None)  # the record the store holds now, if it said
                if run.provisional:
                    # Planned from a cached copy that another replica had moved past: every
                    # request is planned again from the current record, as if it had been loaded.
                    again.append(run)
                    continue
                # Another replica wrote first: nothing of this run was saved. Its positioned
                # steps get the conflict (as a single step would); if position-less ones
                # remain, the run is planned again on the new state (answers to its other
                # requests are recomputed with it).
                positioned = {i for i, _, _ in run.applied if requests[i].position is not None}
                for i in positioned:
                    results[i] = error
                if len(positioned) < len(run.applied):
                    run.items = [i for i in run.items if i not in positioned]
                    again.append(run)
                else:
                    for i, _ in run.echoes:
                        results[i] = error
                continue
            # The store is down, or a conflict on the last attempt: the write may or may not
            # have landed, so every applied request reports it and none is re-applied.
            if isinstance(error, PositionConflict):
                refused("apply_attempts")
            for i, _, _ in run.applied:
                results[i] = error
            for i, _ in run.echoes:
                results[i] = error
        if self.on_steps is not None:
            for loaded, count in applied.values():
                self.on_steps(loaded.key, count)
        return again

    def _count_outputs(self, run: _Run) -> None:
        if self.on_outputs is not None and run.outputs is not None and run.loaded.anomaly:
            self.on_outputs(run.loaded, run.outputs)

    # ------------------------------------------------------------------------ models

    def _model_for(
        self, record: SessionRecord, model: str | None, models: dict[tuple[str, int], LoadedModel]
    ) -> LoadedModel:
        if model is not None and record.model != model:
            raise InvalidInput(f"session '{shown(record.session_id)}' belongs to model '{record.model}', not '{model}'")
        key = (record.model, record.version)
        loaded = models.get(key)
        if loaded is None:
            loaded = models[key] = self.registry.get(record.model, record.version)
        return self.model_of(record, loaded)

    def model_of(self, record: SessionRecord, loaded: LoadedModel | None = None) -> LoadedModel:
        """The loaded model a session's state belongs to; ModelChanged when its version is now
        another graph (a rebuilt repository): the state would be garbage to it, or the wrong
        shape for it."""
        if loaded is None:
            loaded = self.registry.get(record.model, record.version)
        layout_ok = tuple(map(_SHAPE, record.state)) == loaded.state_shapes
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

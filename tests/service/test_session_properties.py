"""Property: any interleaving of session operations on the real engine and lifecycle matches a simple
sequential model of the same operations.

A generated program is a list of *rounds*; each round is a list of operations (create, step with
random chunk sizes with or without `position`, deliberate retries of a session's last request,
stale/ahead positions, fork, get, delete) over several sessions. The operations of one round run
concurrently (asyncio.gather, started in list order); rounds run one after another. The model is
a dict session -> rows applied so far (+ the last request, for replays); the expected outputs and
state of a step are those of ONE run of the model's own ONNX Runtime session over the session's
whole history from zero state, so chunking, batching (the batcher stacks concurrent steps of
equal length) and the store round-trip must not change anything but float rounding.

Why list order is the sequential order within a round: step, fork and delete take the session's
FIFO lock before their first suspension point, so same-session operations apply in the order
they were started. `get` takes no lock, so gets run in their own (sequential) round. A fork's
child id is only known once it completes, so a child is used from the next round on.

The same program runs against the memory store (default) and RedisSessionStore on a real
redis-server (fewer examples).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api import codecs
from service.core.engine import StepRequest
from service.core.errors import PositionConflict, ServiceError, SessionNotFound
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.core.services import Services
from service.core.settings import Settings
from service.sessions.memory import MemorySessionStore
from tests.support.models import raw_inputs
from tests.support.tier import starts

# The replay record: the memory store's runs keep the default window with a byte budget no
# step here exceeds (every record holds its outputs); the Redis store's runs give it no bytes,
# so every record holds the step's starting state (only the newest is kept) and every replay is
# recomputed from it.
REPLAY_WINDOW = Settings().replay_window
AMPLE_BYTES = 1 << 20

MODELS = [("lstm", 1), ("lstm", 2), ("gru", 1)]
MAX_SESSIONS = 6
ATOL = 2e-4
RTOL = 1e-4


# -- the program


@dataclass(frozen=True)
class Op:
    kind: str  # create | step | retry | retry_other | stale | ahead | fork | get | delete
    target: int = 0  # index into the sessions known when the round starts
    steps: int = 1
    with_position: bool = True
    model: int = 0
    seed: int = 0


OP_KINDS = ["create"] + ["step"] * 6 + ["retry"] * 3 + ["retry_other", "stale", "ahead", "fork", "fork", "delete"]


@st.composite
def programs(draw: st.DrawFn) -> list[list[Op]]:
    first = [Op("create", model=draw(st.integers(0, len(MODELS) - 1))) for _ in range(draw(st.integers(1, 3)))]
    rounds = [first]
    for _ in range(draw(st.integers(1, 6))):
        ops = []
        for _ in range(draw(st.integers(1, 8))):
            kind = draw(st.sampled_from(OP_KINDS))
            ops.append(
                Op(
                    kind=kind,
                    target=draw(st.integers(0, MAX_SESSIONS - 1)),
                    steps=draw(st.integers(1, 4)),
                    with_position=draw(st.booleans()),
                    model=draw(st.integers(0, len(MODELS) - 1)),
                    seed=draw(st.integers(0, 2**31 - 1)),
                )
            )
        rounds.append(ops)
        if draw(st.booleans()):
            rounds.append([Op("get", target=t) for t in range(MAX_SESSIONS)])  # sequential check point
    return rounds


# -- the sequential model


@dataclass
class LastRequest:
    """The session's last applied request: what a retry must send, and what it must get back."""

    before: int
    inputs: np.ndarray
    response: bytes = b""  # filled in when the step's response is checked


@dataclass
class ModelSession:
    model: str
    version: int
    rows: np.ndarray  # every input row applied, from zero state
    alive: bool = True
    recent: list[LastRequest] = field(default_factory=list)  # the engine's replay window, oldest first

    @property
    def last(self) -> LastRequest | None:
        return self.recent[-1] if self.recent else None

    @property
    def position(self) -> int:
        return self.rows.shape[0]


@dataclass
class World:
    registry: ModelRegistry
    window: int  # positioned steps a retry is answered for (the engine's record)
    sessions: list[str] = field(default_factory=list)  # real ids, in creation order
    model: dict[str, ModelSession] = field(default_factory=dict)

    def expected(self, sid: str) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Outputs [T, O] and final state of one ORT run over the whole history."""
        m = self.model[sid]
        loaded = self.registry.get(m.model, m.version)
        if m.position == 0:
            return np.zeros((0, loaded.config.output_size)), tuple(s[:, 0, :] for s in loaded.zero_state(1))
        outputs, state = loaded.run(m.rows[None].astype(np.float32), loaded.zero_state(1))
        return outputs[0], tuple(s[:, 0, :] for s in state)


def _inputs(seed: int, steps: int) -> np.ndarray:
    # float32-exact values, so the JSON round trip and the model history agree bit for bit
    return raw_inputs(np.random.default_rng(seed), steps).astype(np.float32).astype(np.float64)


# -- running one program


async def _outcome(coro) -> tuple[str, object]:
    try:
        return "ok", await coro
    except ServiceError as exc:
        return "error", exc


def _check_state(world: World, sid: str, record) -> None:
    m = world.model[sid]
    assert record.position == m.position, (sid, record.position, m.position)
    assert (record.model, record.version) == (m.model, m.version)
    _, state = world.expected(sid)
    assert len(record.state) == len(state)
    for got, want in zip(record.state, state, strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


async def run_program(svc: Services, rounds: list[list[Op]]) -> None:
    manager = svc.sessions
    window = svc.settings.replay_window if svc.settings.replay_max_bytes else 1
    world = World(svc.registry, window)

    for ops in rounds:
        known = list(world.sessions)
        planned: list[tuple[Op, str | None, object, object]] = []  # op, sid, call, expectation
        for op in ops:
            if op.kind == "create":
                name, version = MODELS[op.model]
                planned.append((op, None, manager.create(name, version), ("created", name, version)))
                continue
            if not known:
                continue
            sid = known[op.target % len(known)]
            m = world.model[sid]
            if op.kind == "get":
                call = manager.get(sid)
                planned.append((op, sid, call, ("get",) if m.alive else ("missing",)))
            elif op.kind == "delete":
                planned.append((op, sid, manager.delete(sid), ("deleted", m.alive)))
                m.alive = False
            elif op.kind == "fork":
                planned.append(
                    (op, sid, manager.fork(sid), ("forked", sid, m.rows.copy()) if m.alive else ("missing",))
                )
            else:
                expectation, inputs, position = _plan_step(world, sid, op)
                call = _step(svc, sid, inputs.tolist(), position)
                planned.append((op, sid, call, expectation))

        outcomes = await asyncio.gather(*(_outcome(call) for _, _, call, _ in planned))

        for (op, sid, _, expectation), (status, value) in zip(planned, outcomes, strict=True):
            _check(world, op, sid, expectation, status, value)

        # After every round: every known session's record (position and state) matches the model.
        for sid in world.sessions:
            m = world.model[sid]
            status, value = await _outcome(manager.get(sid))
            if m.alive:
                assert status == "ok", (sid, value)
                _check_state(world, sid, value)
            else:
                assert status == "error" and isinstance(value, SessionNotFound), value


async def _step(svc: Services, sid: str, inputs: list, position: int | None) -> bytes:
    """A single step through the engine, answered as the v1 routes answer it."""
    return (await svc.engine.step(StepRequest(sid, inputs, position))).payload


def _plan_step(world: World, sid: str, op: Op):
    """Decide what the request is and what it must do, and advance the model as the engine
    must (in list order)."""
    m = world.model[sid]
    fresh = _inputs(op.seed, op.steps)
    if not m.alive:
        return ("missing",), fresh, (m.position if op.with_position else None)
    pos = m.position
    if op.kind == "retry" and m.last is not None:
        return ("replay", m.last), m.last.inputs, m.last.before
    if op.kind == "retry_other" and m.last is not None:
        other = m.last.inputs + 1.0  # same position, different inputs: not a replay
        return ("conflict", pos), other, m.last.before
    if op.kind == "stale" and pos > 0:
        stale = op.seed % pos
        for past in m.recent:  # a retry of any step still in the replay window
            if stale == past.before and np.array_equal(past.inputs, fresh):
                return ("replay", past), fresh, stale
        return ("conflict", pos), fresh, stale
    if op.kind == "ahead":
        return ("conflict", pos), fresh, pos + 1 + op.seed % 5
    # a normal step (also retry/stale when there is nothing to retry yet)
    request = LastRequest(pos, fresh)
    if op.with_position:  # position-less steps are never replayed, so they keep no record
        m.recent = [*m.recent, request][-world.window :]
    m.rows = np.concatenate([m.rows, fresh])
    return ("applied", pos, fresh.shape[0], request), fresh, pos if op.with_position else None


def _check(world: World, op: Op, sid: str | None, expectation, status: str, value) -> None:
    kind = expectation[0]
    if kind == "created":
        assert status == "ok", value
        _, name, version = expectation
        assert (value.model, value.version, value.position) == (name, version, 0)
        world.sessions.append(value.session_id)
        world.model[value.session_id] = ModelSession(name, version, np.zeros((0, 3)))
    elif kind == "missing":
        assert status == "error" and isinstance(value, SessionNotFound), (op, status, value)
    elif kind == "get":
        assert status == "ok", value
    elif kind == "deleted":
        assert status == "ok" and value is expectation[1], (op, value)
    elif kind == "forked":
        assert status == "ok", value
        _, parent, rows = expectation
        src = world.model[parent]
        assert value.position == rows.shape[0] and value.session_id != parent
        world.sessions.append(value.session_id)
        world.model[value.session_id] = ModelSession(src.model, src.version, rows)  # no `last`: fresh
    elif kind == "conflict":
        assert status == "error" and isinstance(value, PositionConflict), (op, status, value)
        assert value.status == 409 and value.details["position"] == expectation[1], value.details
    elif kind == "replay":
        assert status == "ok", (op, value)
        stored = expectation[1].response
        assert stored, "a replay must follow an applied step whose response was recorded"
        assert value == stored, "a retry of the last request must return the stored response verbatim"
    elif kind == "applied":
        assert status == "ok", (op, value)
        _, before, n, last = expectation
        body = orjson.loads(value)
        m = world.model[sid]
        assert body["session_id"] == sid and body["position"] == before + n, (body["position"], before, n)
        assert (body["model"], body["version"]) == (m.model, m.version)
        # the model may have moved on within the round; compare with the full-history run
        outputs, _ = world.expected(sid)
        np.testing.assert_allclose(np.asarray(body["outputs"]), outputs[before : before + n], atol=ATOL, rtol=RTOL)
        last.response = value
    else:
        raise AssertionError(expectation)


# -- fixtures and the two stores


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ort") as pool:
        yield pool


def _services(
    repository: Path, registry: ModelRegistry, store, executor, replay_max_bytes: int = AMPLE_BYTES
) -> Services:
    # As service.core.services.build_services, with the module's registry and a fresh store and batchers.
    settings = Settings(model_repository=repository, max_steps_per_request=100, replay_max_bytes=replay_max_bytes)
    return Services(settings, Metrics(), registry, store, executor, codecs.STEP_REPLY)


FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=False,
)


@FAST
@given(program=programs())
def test_memory_store_matches_sequential_model(repository, registry, executor, program) -> None:
    async def main() -> None:
        store = MemorySessionStore(max_sessions=1000)
        await store.start()
        try:
            await run_program(_services(repository, registry, store, executor), program)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture(scope="module")
@starts("redis-server")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.redis import RedisProcess

    with RedisProcess(tmp_path_factory.mktemp("redis-props"), appendonly=False) as proc:
        yield proc


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(program=programs())
@pytest.mark.e2e
def test_redis_store_matches_sequential_model(repository, registry, executor, redis_server, program) -> None:
    from service.sessions.redis import RedisSessionStore

    async def main() -> None:
        # Semantics, not latency: a generous socket timeout so a CPU-starved test machine does
        # not turn a slow reply into StoreUnavailable (the fault suites test outages on purpose).
        prefix = f"props-{uuid.uuid4().hex[:8]}:"
        store = RedisSessionStore(redis_server.url, prefix=prefix, socket_timeout=10.0, connect_timeout=5.0)
        await store.start()
        try:
            await run_program(_services(repository, registry, store, executor, replay_max_bytes=0), program)
        finally:
            await store.close()

    asyncio.run(main())


def test_concurrent_same_session_steps_apply_in_order_exactly_once(repository, registry, executor) -> None:
    """A fixed, dense case next to the generated ones: 40 steps on one session, started
    together (half with positions), apply in start order, each exactly once."""

    async def main() -> None:
        store = MemorySessionStore(max_sessions=100)
        svc = _services(repository, registry, store, executor)
        record = await svc.sessions.create("lstm", 2)
        chunks = [_inputs(k, 1 + k % 3) for k in range(40)]
        positions, pos = [], 0
        for k, chunk in enumerate(chunks):
            positions.append(pos if k % 2 == 0 else None)
            pos += chunk.shape[0]
        bodies = await asyncio.gather(
            *(_step(svc, record.session_id, c.tolist(), p) for c, p in zip(chunks, positions, strict=True))
        )
        history = np.concatenate(chunks)
        loaded = registry.get("lstm", 2)
        outputs, state = loaded.run(history[None].astype(np.float32), loaded.zero_state(1))
        pos = 0
        for chunk, body in zip(chunks, bodies, strict=True):
            data = orjson.loads(body)
            assert data["position"] == pos + chunk.shape[0]
            np.testing.assert_allclose(data["outputs"], outputs[0][pos : data["position"]], atol=ATOL, rtol=RTOL)
            pos = data["position"]
        final = await svc.sessions.get(record.session_id)
        assert final.position == history.shape[0]
        for got, want in zip(final.state, state, strict=True):
            np.testing.assert_allclose(got, want[:, 0, :], atol=ATOL, rtol=RTOL)

    asyncio.run(main())

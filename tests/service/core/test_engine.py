"""The step engine on its own, with no web framework: a real registry (the counting model, whose
state says exactly which readings were applied), the memory store, real batchers. A single step,
a WebSocket-style batch on one session and a bulk batch over many sessions all go through
`Engine.apply`; these tests check its typed results, its exactly-once rules and its batching."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.api.codecs import STEP_REPLY
from service.core.engine import StepRequest, StepResult
from service.core.errors import InvalidInput, PositionConflict, SessionNotFound, StoreUnavailable
from service.core.metrics import Metrics
from service.core.services import Services, build_services
from service.core.settings import Settings
from tests.support.counting import export_counting


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Services]:
    export_counting(tmp_path / "repo", "count", 1)
    export_counting(tmp_path / "repo", "other", 1)
    # a model that accepts only positive readings (as one forecasting in logs; the form a
    # manifest written before `positive_target` has: derived from the forecaster spec)
    export_counting(tmp_path / "repo", "logs", 1, extra=LOGS)
    services = build_services(
        Settings(model_repository=tmp_path / "repo", inline_max_cost=0, replay_window=4), Metrics(), STEP_REPLY
    )
    await services.store.start()
    yield services
    await services.store.close()
    services.executor.shutdown(wait=True)


class Calls:
    """Counts model calls (rows, time steps) through the pool's batchers."""

    def __init__(self, svc: Services) -> None:
        self.shapes: list[tuple[int, ...]] = []

        def counting(run):  # type: ignore[no-untyped-def]
            async def counted(inputs, state):  # type: ignore[no-untyped-def]
                self.shapes.append(inputs.shape)
                return await run(inputs, state)

            return counted

        wrap_batchers(svc, counting)


def wrap_batchers(svc: Services, wrap) -> None:  # type: ignore[no-untyped-def]
    """Route every model call of the engine through `wrap(batcher.run)`, each batcher once."""
    original = svc.pool.for_model
    wrapped: set[int] = set()

    def for_model(model):  # type: ignore[no-untyped-def]
        batcher = original(model)
        if id(batcher) not in wrapped:
            wrapped.add(id(batcher))
            batcher.run = wrap(batcher.run)  # type: ignore[method-assign]
        return batcher

    svc.engine.batcher_for = for_model


LOGS = {"forecaster": {"log": True, "transform": "holt_winters", "target_index": 0}}


async def new_session(svc: Services, model: str = "count", owner: str = "") -> str:
    return (await svc.sessions.create(model, owner=owner)).session_id


async def truth(svc: Services, sid: str) -> tuple[int, float]:
    """(readings applied, their sum) from the session's own state."""
    record = await svc.sessions.get(sid)
    count, total = record.state[0][0]
    return int(count), float(total)


async def test_a_single_step_returns_a_typed_result(svc: Services) -> None:
    sid = await new_session(svc)
    result = await svc.engine.step(StepRequest(sid, np.array([[2.0], [3.0]], np.float32)))
    assert isinstance(result, StepResult) and not result.replayed
    assert result.position == 2 and result.model.name == "count" and result.model.version == 1
    np.testing.assert_array_equal(result.outputs, [[1.0, 2.0], [2.0, 5.0]])
    assert result.state is not None
    np.testing.assert_array_equal(result.state[0], [[2.0, 5.0]])  # the new state, no second read
    assert orjson.loads(result.payload) == {
        "session_id": sid,
        "model": "count",
        "version": 1,
        "position": 2,
        "outputs": [[1.0, 2.0], [2.0, 5.0]],
    }
    assert await truth(svc, sid) == (2, 5.0)
    assert len(svc.locks) == 0


async def test_json_inputs_and_array_inputs_are_one_step_kind(svc: Services) -> None:
    a, b = await new_session(svc), await new_session(svc)
    ra = await svc.engine.step(StepRequest(a, [[4.0]]))
    rb = await svc.engine.step(StepRequest(b, np.array([[4.0]], np.float32)))
    np.testing.assert_array_equal(ra.outputs, rb.outputs)
    with pytest.raises(InvalidInput):
        await svc.engine.step(StepRequest(a, np.zeros((1, 3), np.float32)))  # wrong feature count
    with pytest.raises(InvalidInput):
        await svc.engine.step(StepRequest(a, [[1.0]], position=-1))
    assert await truth(svc, a) == (1, 4.0)


async def test_a_batch_on_one_session_is_one_model_call_and_one_write(svc: Services) -> None:
    """What a WebSocket client's pipelined messages become: each answered as if alone, the
    valid in-sequence ones applied as one model call over their concatenated steps."""
    sid = await new_session(svc)
    calls = Calls(svc)
    saves = []
    save = svc.store.save

    async def counted_save(record, expected_position):  # type: ignore[no-untyped-def]
        saves.append(expected_position)
        await save(record, expected_position)

    svc.store.save = counted_save  # type: ignore[method-assign]
    requests = [
        StepRequest(sid, [[1.0]]),  # applied: position 0 -> 1
        StepRequest(sid, [[1.0, 2.0]]),  # invalid: error in place
        StepRequest(sid, [[2.0], [3.0]], position=1),  # applied: 1 -> 3
        StepRequest(sid, [[1.0]], position=0),  # a retry of the first: its reply, nothing applied
        StepRequest(sid, [[9.0]], position=7),  # a conflict: the position is 3 by then
        StepRequest(sid, [[4.0]]),  # applied: 3 -> 4
    ]
    out = await svc.engine.apply(requests)
    assert [type(o).__name__ for o in out] == [
        "StepResult",
        "InvalidInput",
        "StepResult",
        "StepResult",
        "PositionConflict",
        "StepResult",
    ]
    first, _, second, retry, conflict, last = out
    assert isinstance(first, StepResult) and isinstance(second, StepResult) and isinstance(last, StepResult)
    assert isinstance(retry, StepResult) and isinstance(conflict, PositionConflict)
    assert (first.position, second.position, last.position) == (1, 3, 4)
    assert retry.replayed and retry.payload == first.payload and retry.position == 1
    np.testing.assert_array_equal(retry.outputs, first.outputs)
    assert conflict.details["position"] == 3
    np.testing.assert_array_equal(second.outputs, [[2.0, 3.0], [3.0, 6.0]])
    assert first.state is None and last.state is not None  # only the run's last step has it
    assert calls.shapes == [(1, 4, 1)] and saves == [0]
    assert await truth(svc, sid) == (4, 10.0)


async def test_a_bulk_batch_stacks_sessions_per_length_and_answers_each(svc: Services) -> None:
    ids = [await new_session(svc) for _ in range(5)]
    other = await new_session(svc, "other")
    calls = Calls(svc)
    requests = [
        StepRequest(ids[0], [[1.0]]),
        StepRequest(ids[1], [[2.0]]),
        StepRequest(ids[2], [[1.0], [1.0]]),
        StepRequest(ids[3], [[5.0], [5.0]]),
        StepRequest(ids[0], [[3.0]]),  # the same session again: applied after its first entry
        StepRequest("missing", [[1.0]]),
        StepRequest(other, [[1.0]]),  # another model's session: refused
        StepRequest(ids[4], [[1.0]], position=3),  # conflict
    ]
    out = await svc.engine.apply(requests, model="count")
    assert [o.position for o in out[:5] if isinstance(o, StepResult)] == [1, 1, 2, 2, 2]
    assert isinstance(out[5], SessionNotFound) and isinstance(out[6], InvalidInput)
    assert isinstance(out[7], PositionConflict)
    # ids[0] ran two steps, ids[2] and ids[3] two each: one call of length 2 with three rows,
    # one of length 1 with one row (ids[1]).
    assert sorted(calls.shapes) == [(1, 1, 1), (3, 2, 1)]
    assert [await truth(svc, s) for s in ids] == [(2, 4.0), (1, 2.0), (2, 2.0), (2, 10.0), (0, 0.0)]
    assert await truth(svc, other) == (0, 0.0)
    # Bulk equals single steps, to the byte of the reply.
    single = [await new_session(svc) for _ in range(2)]
    a = await svc.engine.step(StepRequest(single[0], [[1.0]]))
    b = await svc.engine.step(StepRequest(single[0], [[3.0]]))
    assert orjson.loads(a.payload)["outputs"] == orjson.loads(out[0].payload)["outputs"]  # type: ignore[union-attr]
    assert orjson.loads(b.payload)["outputs"] == orjson.loads(out[4].payload)["outputs"]  # type: ignore[union-attr]


async def test_retries_replay_the_recorded_reply_byte_for_byte(svc: Services) -> None:
    sid = await new_session(svc)
    first = await svc.engine.step(StepRequest(sid, [[2.0]], position=0))
    await svc.engine.step(StepRequest(sid, [[3.0]], position=1))
    again = await svc.engine.step(StepRequest(sid, [[2.0]], position=0))  # an older step: still replayed
    assert again.replayed and again.payload == first.payload and again.position == 1
    assert again.state is None  # it is no longer the session's latest step
    latest = await svc.engine.step(StepRequest(sid, [[3.0]], position=1))
    assert latest.replayed and latest.state is not None
    np.testing.assert_array_equal(latest.state[0], [[2.0, 5.0]])
    with pytest.raises(PositionConflict) as info:  # same position, other readings: not a retry
        await svc.engine.step(StepRequest(sid, [[7.0]], position=0))
    assert info.value.details["position"] == 2
    for k in range(6):  # past the replay window (4): the first step is forgotten
        await svc.engine.step(StepRequest(sid, [[1.0]], position=2 + k))
    with pytest.raises(PositionConflict):
        await svc.engine.step(StepRequest(sid, [[2.0]], position=0))
    assert await truth(svc, sid) == (8, 11.0)


async def test_positionless_steps_keep_no_replay_record(svc: Services) -> None:
    """They are never answered from a record, so they neither store one nor push out the
    records of positioned steps a retry may still need."""
    sid = await new_session(svc)
    first = await svc.engine.step(StepRequest(sid, [[2.0]], position=0))
    for _ in range(10):
        await svc.engine.step(StepRequest(sid, [[1.0]]))
    record = await svc.store.load(sid)
    assert [entry.position_before for entry in record.history] == [0]
    again = await svc.engine.step(StepRequest(sid, [[2.0]], position=0))
    assert again.replayed and again.payload == first.payload and again.state is None
    assert await truth(svc, sid) == (11, 12.0)


async def bounded_services(tmp_path: Path, **settings: int) -> Services:
    export_counting(tmp_path / "repo", "count", 1)
    services = build_services(
        Settings(model_repository=tmp_path / "repo", inline_max_cost=0, **settings),  # type: ignore[arg-type]
        Metrics(),
        STEP_REPLY,
    )
    await services.store.start()
    return services


async def test_the_replay_record_is_bounded_and_long_replies_are_recomputed(tmp_path: Path) -> None:
    """A reply whose outputs exceed replay_max_bytes is recorded by the state its step started
    from (8 bytes for the counting model), not by its outputs; a retry recomputes the outputs
    on its own inputs and gets the first reply byte for byte, and nothing is applied twice."""
    svc = await bounded_services(tmp_path, replay_max_bytes=64, replay_window=4)
    try:
        sid = await new_session(svc)
        calls = Calls(svc)
        long = [[float(k % 7)] for k in range(1000)]  # 1000 x 2 outputs: 8,000 bytes of float32
        first = await svc.engine.step(StepRequest(sid, long, position=0))
        short = await svc.engine.step(StepRequest(sid, [[1.0], [2.0]], position=1000))  # 16 bytes: kept as is
        record = await svc.store.load(sid)
        assert [(e.position_before, len(e.outputs), len(e.state)) for e in record.history] == [(0, 0, 8), (1000, 16, 0)]
        assert sum(e.size for e in record.history) <= 64
        calls.shapes.clear()
        again = await svc.engine.step(StepRequest(sid, long, position=0))
        assert again.replayed and again.payload == first.payload and again.position == 1000
        assert calls.shapes == [(1, 1000, 1)]  # recomputed, not written
        replay = await svc.engine.step(StepRequest(sid, [[1.0], [2.0]], position=1000))
        assert replay.replayed and replay.payload == short.payload and replay.state is not None
        assert calls.shapes == [(1, 1000, 1)]  # small outputs: answered from the record
        assert await truth(svc, sid) == (1002, sum(k % 7 for k in range(1000)) + 3.0)
        for k in range(8):  # records of 16 bytes each: the byte budget keeps four, the window four
            await svc.engine.step(StepRequest(sid, [[1.0], [1.0]], position=1002 + 2 * k))
        record = await svc.store.load(sid)
        assert [e.position_before for e in record.history] == [1010, 1012, 1014, 1016]
    finally:
        await svc.store.close()
        svc.executor.shutdown(wait=True)


async def test_merged_requests_record_what_regenerates_their_replies(tmp_path: Path) -> None:
    """Pipelined requests merged into one run: the first records its starting state when its
    outputs are long, later ones their outputs when they fit, else nothing (a retry of such a
    step gets the conflict with the session's position, as one past the window)."""
    svc = await bounded_services(tmp_path, replay_max_bytes=64, replay_window=4)
    try:
        sid = await new_session(svc)
        long = [[1.0]] * 100
        out = await svc.engine.apply(
            [
                StepRequest(sid, long, position=0),
                StepRequest(sid, [[2.0]], position=100),
                StepRequest(sid, [[3.0]] * 50, position=101),
            ]
        )
        assert all(isinstance(o, StepResult) for o in out)
        record = await svc.store.load(sid)
        assert [(e.position_before, bool(e.outputs), bool(e.state)) for e in record.history] == [
            (0, False, True),
            (100, True, False),
        ]
        a, b, c = await svc.engine.apply(
            [
                StepRequest(sid, long, position=0),
                StepRequest(sid, [[2.0]], position=100),
                StepRequest(sid, [[3.0]] * 50, position=101),
            ]
        )
        assert isinstance(a, StepResult) and a.replayed and a.payload == out[0].payload  # type: ignore[union-attr]
        assert isinstance(b, StepResult) and b.replayed and b.payload == out[1].payload  # type: ignore[union-attr]
        assert isinstance(c, PositionConflict) and c.details["position"] == 151
        assert await truth(svc, sid) == (151, 252.0)
    finally:
        await svc.store.close()
        svc.executor.shutdown(wait=True)


async def test_a_lost_check_and_set_recomputes_positionless_steps_only(svc: Services) -> None:
    """Another replica writes the session between this batch's read and its write: nothing of
    the batch was written; position-less steps are recomputed on the new state, positioned ones
    get the conflict, as they would one by one."""
    sid = await new_session(svc)
    save = svc.store.save
    raced = []

    async def racing_save(record, expected_position):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append(True)
            other = await svc.store.load(sid)
            other.position += 1
            other.state = (np.array([[1.0, 100.0]], np.float32),)
            other.token = "another-replica-write-000000000000"[:32]
            await save(other, expected_position)
        await save(record, expected_position)

    svc.store.save = racing_save  # type: ignore[method-assign]
    out = await svc.engine.apply([StepRequest(sid, [[1.0]]), StepRequest(sid, [[2.0]], position=1)])
    assert isinstance(out[0], StepResult) and isinstance(out[1], PositionConflict)
    assert out[0].position == 2  # after the other replica's step
    np.testing.assert_array_equal(out[0].outputs, [[2.0, 101.0]])
    assert await truth(svc, sid) == (2, 101.0)


async def test_a_store_failure_fails_the_applied_steps_and_keeps_other_answers(svc: Services) -> None:
    sid = await new_session(svc)
    await svc.engine.step(StepRequest(sid, [[2.0]], position=0))

    async def down(record, expected_position):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("the session store is unavailable")

    svc.store.save = down  # type: ignore[method-assign]
    out = await svc.engine.apply([StepRequest(sid, [[2.0]], position=0), StepRequest(sid, [[5.0]])])
    assert isinstance(out[0], StepResult) and out[0].replayed  # answered from the record
    assert isinstance(out[1], StoreUnavailable)
    with pytest.raises(StoreUnavailable):
        await svc.engine.step(StepRequest(sid, [[5.0]]))
    assert len(svc.locks) == 0


async def test_sessions_of_another_owner_are_not_found(svc: Services) -> None:
    sid = await new_session(svc, owner="alice")
    with pytest.raises(SessionNotFound):
        await svc.engine.step(StepRequest(sid, [[1.0]]), owner="bob")
    out = await svc.engine.apply([StepRequest(sid, [[1.0]])], owner="bob")
    assert isinstance(out[0], SessionNotFound)
    assert (await svc.engine.step(StepRequest(sid, [[1.0]]), owner="alice")).position == 1


async def test_a_bug_in_one_row_of_a_batch_fails_that_row_alone(svc: Services) -> None:
    ids = [await new_session(svc) for _ in range(3)]

    def poisoning(run):  # type: ignore[no-untyped-def]
        async def poisoned(inputs, state):  # type: ignore[no-untyped-def]
            if (inputs == 13.0).any():
                raise RuntimeError("a bug")
            return await run(inputs, state)

        return poisoned

    wrap_batchers(svc, poisoning)
    out = await svc.engine.apply([StepRequest(s, [[13.0 if k == 1 else 1.0]]) for k, s in enumerate(ids)])
    assert isinstance(out[1], RuntimeError)
    assert [o.position for o in (out[0], out[2]) if isinstance(o, StepResult)] == [1, 1]
    with pytest.raises(RuntimeError):  # a single step raises it (the transport answers 500)
        await svc.engine.step(StepRequest(ids[1], [[13.0]]))
    assert [await truth(svc, s) for s in ids] == [(1, 1.0), (0, 0.0), (1, 1.0)]


async def test_a_resend_within_the_same_batch_gets_the_first_ones_reply(svc: Services) -> None:
    sid = await new_session(svc)
    first, again = await svc.engine.apply(
        [StepRequest(sid, [[3.0]], position=0), StepRequest(sid, [[3.0]], position=0)]
    )
    assert isinstance(first, StepResult) and isinstance(again, StepResult)
    assert not first.replayed and again.replayed and again.payload == first.payload
    assert await truth(svc, sid) == (1, 3.0)


async def test_a_domain_error_of_the_model_call_is_the_answer_not_a_crash(svc: Services) -> None:
    """A batch of one whose model call refuses with a domain error (e.g. a limit) gets that
    error as its result, as a WebSocket message or a bulk entry would; step() raises it."""
    sid = await new_session(svc)
    original = svc.pool.for_model

    def refusing(model):  # type: ignore[no-untyped-def]
        batcher = original(model)

        class Refusing:
            async def run(self, inputs, state):  # type: ignore[no-untyped-def]
                raise StoreUnavailable("busy")

        return Refusing() if batcher else batcher

    svc.engine.batcher_for = refusing
    out = await svc.engine.apply([StepRequest(sid, [[1.0]])])
    assert isinstance(out[0], StoreUnavailable)
    with pytest.raises(StoreUnavailable):
        await svc.engine.step(StepRequest(sid, [[1.0]]))
    assert await truth(svc, sid) == (0, 0.0) and len(svc.locks) == 0


async def test_a_tampered_finite_state_is_refused_not_answered_with_nulls(svc: Services) -> None:
    """An imported state with huge finite values makes the model overflow: the step is 422
    non_finite_result and applies nothing, while a neighbour in the same batch is answered;
    the same for a stateless prediction from that state."""
    from service.core import predict
    from service.core.errors import NonFiniteResult

    tampered = (await svc.sessions.create("count", state={"h": [[1.0, 3.0e38]]})).session_id
    fine = await new_session(svc)
    with pytest.raises(NonFiniteResult) as info:
        await svc.engine.step(StepRequest(tampered, [[3.0e38]], position=0))
    assert info.value.status == 422 and info.value.details["field"] == "state"
    bad, good = await svc.engine.apply([StepRequest(tampered, [[3.0e38]]), StepRequest(fine, [[3.0]])])
    assert isinstance(bad, NonFiniteResult) and isinstance(good, StepResult) and good.position == 1
    record = await svc.store.load(tampered)
    assert record.position == 0 and record.state[0][0][1] == np.float32(3.0e38)  # untouched
    body = {"inputs": [[[3.0e38]]], "state": {"h": [[[1.0, 3.0e38]]]}}
    with pytest.raises(NonFiniteResult):
        await predict.predict(svc, predict.prepare(svc, "count", body))


async def test_a_batch_whose_replies_exceed_the_reply_limit_is_refused_whole(tmp_path: Path) -> None:
    """A WebSocket batch or a bulk request counts in all: 413 for every step, nothing applied."""
    from service.core.errors import PayloadTooLarge

    svc = await bounded_services(tmp_path, max_response_values=20)  # 10 steps of the counting model
    try:
        a, b = await new_session(svc), await new_session(svc)
        out = await svc.engine.apply([StepRequest(a, [[1.0]] * 6), StepRequest(b, [[1.0]] * 5)])
        assert all(isinstance(o, PayloadTooLarge) and o.details["values"] == 22 for o in out)
        assert await truth(svc, a) == (0, 0.0) and await truth(svc, b) == (0, 0.0)
        out = await svc.engine.apply([StepRequest(a, [[1.0]] * 5), StepRequest(a, [[1.0]] * 5)])
        assert all(isinstance(o, StepResult) for o in out)
    finally:
        await svc.store.close()
        svc.executor.shutdown(wait=True)


async def test_a_reading_outside_the_models_positive_domain_is_refused_and_changes_nothing(svc: Services) -> None:
    """A model forecasting in logs: 0 or a negative reading of its target is a 422 naming the
    domain, on the single step (JSON or array inputs), in a batch on one session and in a bulk
    batch over sessions (per item); the refused step neither advances nor changes the session,
    and a retry of the applied step before it is still answered from the record."""
    a, b = await new_session(svc, "logs"), await new_session(svc, "logs")
    await svc.engine.step(StepRequest(a, [[2.0], [3.0]]))
    for inputs in ([[0.0]], [[4.0], [-5.0]], np.array([[0.0]], np.float32)):
        with pytest.raises(InvalidInput) as info:
            await svc.engine.step(StepRequest(a, inputs, position=2))
        assert "model logs forecasts in logs and accepts only positive values of reading; got " in info.value.message
        assert info.value.details["target"] == "reading" and info.value.details["domain"] == "positive"
        assert await truth(svc, a) == (2, 5.0)
        assert (await svc.sessions.get(a)).position == 2
    out = await svc.engine.apply([StepRequest(a, [[-1.0]]), StepRequest(a, [[1.0]], position=2)])
    assert isinstance(out[0], InvalidInput) and isinstance(out[1], StepResult) and out[1].position == 3
    bulk = await svc.engine.apply(
        [StepRequest(a, np.array([[0.0]], np.float32)), StepRequest(b, np.array([[6.0]], np.float32))]
    )
    assert isinstance(bulk[0], InvalidInput) and isinstance(bulk[1], StepResult)
    assert await truth(svc, a) == (3, 6.0) and await truth(svc, b) == (1, 6.0)
    again = await svc.engine.step(StepRequest(a, [[1.0]], position=2))  # the retry of the applied step
    assert again.position == 3 and await truth(svc, a) == (3, 6.0)
    other = await new_session(svc)  # a model without the domain takes 0 and negatives
    await svc.engine.step(StepRequest(other, [[0.0], [-5.0]]))
    assert await truth(svc, other) == (2, -5.0)

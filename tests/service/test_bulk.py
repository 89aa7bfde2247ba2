"""Bulk steps (one engine batch over many sessions) equal the same steps sent one by one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest

from service.api import codecs
from service.api.sessions import _decode_bulk
from service.api.streamed import Streamed
from service.core.engine import StepRequest
from service.core.errors import InvalidInput, LimitExceeded, MalformedJSON, ServiceError
from service.core.metrics import Metrics
from service.core.services import Services
from service.core.settings import Settings
from service.core.validate import parse_steps
from service.sessions.memory import MemorySessionStore
from tests.support.models import raw_inputs


def services(repository, registry) -> Services:
    settings = Settings(model_repository=repository)
    return Services(settings, Metrics(), registry, MemorySessionStore(1000), ThreadPoolExecutor(1), codecs.STEP_REPLY)


async def step_many(svc: Services, model: str, entries: list) -> list[bytes]:
    """As the bulk route does it: decode, one engine batch, encode; each entry's reply bytes."""
    items = codecs.bulk_requests(entries, svc.settings.max_steps_per_request)
    outcomes = await svc.engine.apply([i for i in items if isinstance(i, StepRequest)], model=model)
    body = codecs.bulk_body(items, outcomes)
    return [orjson.dumps(r) for r in orjson.loads(body)["results"]]


async def one_step(svc: Services, sid: str, inputs, position=None) -> bytes:
    return (await svc.engine.step(StepRequest(sid, inputs, position))).payload


async def test_bulk_equals_single_steps(repository, registry):
    bulk, single = services(repository, registry), services(repository, registry)
    rng = np.random.default_rng(0)
    # Two versions and two lengths, so several stacked calls; one session appears twice.
    versions = [1, 2, 2, 1, 2]
    a = [(await bulk.sessions.create("lstm", v)).session_id for v in versions]
    b = [(await single.sessions.create("lstm", v)).session_id for v in versions]
    xs = [raw_inputs(rng, n).astype(np.float32).tolist() for n in (1, 1, 3, 3, 1)]
    extra = raw_inputs(rng, 2).astype(np.float32).tolist()
    entries = [{"session_id": sid, "inputs": x} for sid, x in zip(a, xs, strict=True)]
    entries.append({"session_id": a[0], "inputs": extra, "position": 1})  # after its first entry
    got = [orjson.loads(r) for r in await step_many(bulk, "lstm", entries)]
    want = [orjson.loads(await one_step(single, sid, x)) for sid, x in zip(b, xs, strict=True)]
    want.append(orjson.loads(await one_step(single, b[0], extra, 1)))
    for g, w in zip(got, want, strict=True):
        assert g["position"] == w["position"] and g["version"] == w["version"]
        np.testing.assert_allclose(g["outputs"], w["outputs"], atol=1e-4)
    for sa, sb in zip(a, b, strict=True):
        ra, rb = await bulk.store.load(sa), await single.store.load(sb)
        assert ra.position == rb.position
        for x, y in zip(ra.state, rb.state, strict=True):
            np.testing.assert_allclose(x, y, atol=1e-6)


async def test_bulk_errors_are_per_entry_and_change_nothing(repository, registry):
    svc = services(repository, registry)
    good = (await svc.sessions.create("gru")).session_id
    other = (await svc.sessions.create("lstm")).session_id
    before = await svc.store.load(good)
    step = [[20.0, 500.0, 12.0]]
    entries = [
        {"session_id": good, "inputs": [[1.0, 2.0]]},  # wrong feature count
        {"session_id": good, "inputs": step, "position": 5},  # conflict
        {"session_id": other, "inputs": step},  # another model's session
        {"session_id": "nope", "inputs": step},
        {"session_id": 7, "inputs": step},
        {"inputs": step},
        "not an object",
        {"session_id": good, "inputs": step, "extra": 1},
    ]
    results = [orjson.loads(r) for r in await step_many(svc, "gru", entries)]
    assert [r["status"] for r in results] == [422, 409, 422, 404, 422, 422, 422, 422]
    assert results[1]["position"] == 0 and results[4]["session_id"] is None
    after = await svc.store.load(good)
    assert after.position == before.position == 0
    np.testing.assert_array_equal(after.state[0], before.state[0])


async def test_bulk_retry_replays(repository, registry):
    svc = services(repository, registry)
    sid = (await svc.sessions.create("gru")).session_id
    entries = [{"session_id": sid, "inputs": [[20.0, 500.0, 12.0]], "position": 0}]
    first = await step_many(svc, "gru", entries)
    again = await step_many(svc, "gru", entries)
    assert first == again and (await svc.store.load(sid)).position == 1


async def test_cancelled_bulk_request_releases_the_locks_it_took(repository, registry):
    import asyncio

    svc = services(repository, registry)
    a, b = sorted([(await svc.sessions.create("gru")).session_id for _ in range(2)])
    step = [[20.0, 500.0, 12.0]]
    await svc.locks.acquire(b)  # another request holds b
    bulk = asyncio.create_task(
        step_many(svc, "gru", [{"session_id": a, "inputs": step}, {"session_id": b, "inputs": step}])
    )
    await asyncio.sleep(0.05)  # bulk holds a and waits for b
    bulk.cancel()
    await asyncio.gather(bulk, return_exceptions=True)
    svc.locks.release(b)
    # a was released on cancellation: a step on it goes straight through.
    reply = await asyncio.wait_for(one_step(svc, a, step), timeout=2)
    assert orjson.loads(reply)["position"] == 1


async def test_an_entry_that_breaks_the_model_call_fails_alone(repository, registry):
    """One entry whose model call fails (a bug, injected) gets its own JSON 500; the entries
    stacked with it are applied and answered."""
    from service.core.batching import Batcher
    from tests.service.core.test_batching import Poisonable

    svc = services(repository, registry)
    svc.engine.batcher_for = lambda model: Batcher(Poisonable(model), svc.executor)
    sids = [(await svc.sessions.create("lstm")).session_id for _ in range(4)]
    good = [[20.0, 500.0, 12.0]]
    entries = [{"session_id": sid, "inputs": good} for sid in sids]
    entries[2]["inputs"] = [[Poisonable.POISON, 500.0, 12.0]]
    got = [orjson.loads(r) for r in await step_many(svc, "lstm", entries)]
    assert got[2]["status"] == 500 and got[2]["code"] == "internal_error", got[2]
    assert [g.get("position") for k, g in enumerate(got) if k != 2] == [1, 1, 1]
    assert [(await svc.store.load(sid)).position for sid in sids] == [1, 1, 0, 1]


def test_a_large_body_decoded_entry_by_entry_equals_the_whole_decoding():
    """service/api/sessions.py decodes a large bulk body entry by entry in the codec thread:
    the same step requests, and the same errors, as decoding it whole (invalid JSON: the same
    error class, worded by the scan that found it)."""
    rng = np.random.default_rng(1)
    entries = [{"session_id": f"s{k}", "inputs": rng.normal(size=(50, 3)).round(3).tolist()} for k in range(40)]
    entries[3]["inputs"] = [[1.0, 2.0], [3.0]]  # ragged: left to the engine, which names it
    entries[7] = {"session_id": "s7", "inputs": [[1, 2, 3]], "position": 4}
    entries[9] = {"inputs": [[1, 2, 3]]}  # no session id
    raw = orjson.dumps({"steps": entries})
    whole, split = _decode_bulk(raw, 1024, 10000), _decode_bulk(raw, 1024, 10000, by_entry=True)
    assert len(whole) == len(split) == 40
    for a, b in zip(whole, split, strict=True):
        assert type(a) is type(b)
        if isinstance(a, StepRequest):
            assert (a.session_id, a.position) == (b.session_id, b.position)
            if a.session_id == "s3":  # ragged: the raw list either way
                assert a.inputs == b.inputs
            else:  # float32 [T, F] as the engine reads it (the whole decoding leaves mixed lengths as lists)
                np.testing.assert_array_equal(np.asarray(a.inputs, np.float32), b.inputs)
                assert isinstance(b.inputs, np.ndarray) and b.inputs.dtype == np.float32
        else:
            assert a.error.body() == b.error.body()
    for bad, error in [
        (raw[:-5] + b"]}]}", MalformedJSON),  # the last entry's inputs left unclosed
        (raw[:-1] + b',"colour":1}', InvalidInput),  # an unknown top-level field
        (orjson.dumps({"steps": entries * 26}), LimitExceeded),  # 1,040 entries
    ]:
        with pytest.raises(error) as by_entry:
            _decode_bulk(bad, 1024, 10000, by_entry=True)
        with pytest.raises(error) as at_once:
            _decode_bulk(bad, 1024, 10000)
        if error is MalformedJSON:  # found by the scan, not by decoding the body whole: its own words
            assert "not valid JSON" in by_entry.value.message
        else:
            assert by_entry.value.body() == at_once.value.body()


async def test_huge_integers_among_floats_convert_as_they_do_alone(repository, registry):
    """Inputs converted together go through float64 when floats and integers mix; an integer
    past 2**53 would then round differently from its own conversion (int64 straight to
    float32), so such a batch is converted entry by entry: every entry gets what it gets
    alone, its readings to the bit or its error (an integer past int64 is no number alone)."""
    # 2**60 + 2**36 + 1 rounds to float32 upwards from the integer, to even through float64
    mixed = [[[2**60 + 2**36 + 1, 1, 2]], [[0.5, 1.5, 2.5]], [[3, 4, 5]]]
    items = codecs.bulk_requests([{"session_id": "s", "inputs": x} for x in mixed], 10)
    for item, x in zip(items, mixed, strict=True):
        assert isinstance(item, StepRequest)
        alone = parse_steps(x, registry.get("lstm").config, 10)
        converted = (
            item.inputs
            if isinstance(item.inputs, np.ndarray)
            else parse_steps(item.inputs, registry.get("lstm").config, 10)
        )
        assert converted.tobytes() == alone.tobytes()
    svc = services(repository, registry)
    ids = [(await svc.sessions.create("lstm")).session_id for _ in range(2)]
    entries = [{"session_id": ids[0], "inputs": [[0.5, 1.5, 2.5]]}, {"session_id": ids[1], "inputs": [[10**20, 0, 0]]}]
    got = [orjson.loads(r) for r in await step_many(svc, "lstm", entries)]
    assert got[0]["position"] == 1 and got[1]["status"] == 422 and "only numbers" in orjson.dumps(got[1]).decode()


@pytest.fixture(scope="module")
def forecaster_repository(tmp_path_factory: pytest.TempPathFactory):
    """A forecaster: state tensors of several shapes (h, a ring, a count, a phase) and a clock,
    so replies carry forecast_times for sessions created with a start time."""
    from tests.support.models import export_forecaster

    root = tmp_path_factory.mktemp("bulk-columns")
    export_forecaster(root, "fc", 1, "gru", seed=2)
    return root


async def bulk_body(svc: Services, model: str, entries: list) -> tuple[bytes, object]:
    items = codecs.bulk_requests(entries, svc.settings.max_steps_per_request)
    outcomes = await svc.engine.apply([i for i in items if isinstance(i, StepRequest)], model=model)
    return codecs.bulk_body(items, outcomes), outcomes


async def single_bytes(svc: Services, model: str, entry: dict) -> bytes:
    """What the same entry sent alone answers, as a bulk entry's bytes (its error with the id)."""
    sid = entry.get("session_id")
    if not isinstance(sid, str) or not entry.keys() <= codecs.BULK_FIELDS:
        (item,) = codecs.bulk_requests([entry], svc.settings.max_steps_per_request)
        return codecs._bulk_item(item, None)
    try:
        return (await svc.engine.step(StepRequest(sid, entry["inputs"], entry.get("position")), model=model)).payload
    except ServiceError as exc:
        return orjson.dumps({"session_id": sid, "status": exc.status, **exc.body()})


@pytest.mark.parametrize("which", ["lstm", "fc"])
async def test_columnar_and_general_batches_answer_single_steps_byte_for_byte(
    which, repository, registry, forecaster_repository
):
    """The columnar path (distinct sessions, one reading each, no position) and the general
    path (positions, a replay, a session twice, a missing one, another model's) answer, body
    for body, exactly what the same entries sent one by one to a twin service answer, and
    leave the same positions and bit-identical states; entries refused before the engine
    stay in their place either way."""
    from service.core.engine import StepColumns
    from service.core.registry import ModelRegistry
    from service.sessions.memory import MemorySessionStore

    if which == "fc":
        settings = Settings(model_repository=forecaster_repository)
        registry = ModelRegistry(settings)
        registry.load_all()
        features, starts = 2, ["2024-01-01T00:00:00Z", None, "2024-03-01T12:00:00Z", None, None]
    else:
        settings, features, starts = Settings(model_repository=repository), 3, [None] * 5
    twins = [
        Services(settings, Metrics(), registry, MemorySessionStore(1000), ThreadPoolExecutor(1), codecs.STEP_REPLY)
        for _ in range(2)
    ]
    bulk, single = twins
    sids = [f"s{k}" for k in range(5)]
    for svc in twins:
        for sid, start in zip(sids, starts, strict=True):
            await svc.sessions.create(which, request_id=sid, start_time=start)
    other = "other"
    for svc in twins:  # another model's session (the lstm one's twin is a gru)
        await svc.sessions.create("gru" if which == "lstm" else which, request_id=other)
    rng = np.random.default_rng(7)

    def reading(steps: int = 1) -> list:
        return rng.normal(size=(steps, features)).astype(np.float32).tolist()

    columnar = [{"session_id": sid, "inputs": reading()} for sid in sids]
    columnar.insert(2, {"inputs": reading()})  # refused before the engine: keeps its place
    columnar.append({"session_id": sids[0] + "x", "inputs": reading(), "colour": 1})
    general = [
        {"session_id": sids[0], "inputs": reading(), "position": 1},
        {"session_id": sids[1], "inputs": reading(2)},
        {"session_id": sids[1], "inputs": reading()},  # the same session again
        {"session_id": "nope", "inputs": reading()},
        {"session_id": sids[3], "inputs": reading(), "position": 7},  # a conflict
        {"session_id": sids[4], "inputs": reading()},
    ]
    if which == "lstm":
        general.append({"session_id": other, "inputs": reading()})  # 422: another model's
    retried = [dict(general[0]), {"session_id": sids[2], "inputs": reading()}]  # a replay among steps
    rounds = [(columnar, StepColumns), (general, list), (retried, list), (columnar, StepColumns)]
    for entries, path in rounds:
        body, outcomes = await bulk_body(bulk, which, entries)
        assert type(outcomes) is path
        expected = [await single_bytes(single, which, entry) for entry in entries]
        assert body == b'{"results":[' + b",".join(expected) + b"]}"
        assert (b'"forecast_times"' in body) is (which == "fc")
        streamed = codecs.bulk_reply(codecs.bulk_requests(entries, 100), outcomes, min_values=1)  # type: ignore[arg-type]
        assert isinstance(streamed, Streamed) and streamed.join() == body  # written entry by entry: the same bytes
    for sid in sids:
        a, b = await bulk.store.load(sid), await single.store.load(sid)
        assert a.position == b.position
        assert all(x.tobytes() == y.tobytes() for x, y in zip(a.state, b.state, strict=True))
    assert (await bulk.store.load(sids[0])).position == 3


def test_inputs_converted_together_equal_each_entry_converted_alone():
    """convert_together's flattening (C loops, one numpy call) gives every entry the bits its
    own conversion gives, or declines (None: each entry is then converted, and refused, alone)."""
    from service.core.validate import as_array

    converted = [
        [[[0.1, 2, -3.5]], [[1, 2, 3]]],  # floats and integers
        [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [0, 0, 0]]],  # integers only (int64 alone)
        [[[2**53 - 1, 0.5, 1]], [[16777217, 2, 3]]],  # the largest exact integer; one float32 rounds
        [[[1e-46, 1e15 + 0.5, -0.0]], [[1, 2, 3]]],  # underflow, rounding, a signed zero
        [[[], []], [[], []]],  # no features (the engine names it)
    ]
    declined = [
        [[[True, 1, 2]], [[1, 2, 3]]],  # a boolean is no reading
        [[[1, 2]], [[1, 2, 3]]],  # ragged
        [[[1e39, 1, 2]], [[1, 2, 3]]],  # past float32
        [[[3.4e38, 1, 2]], [[1, 2, 3]]],  # large values: converted alone, as integers would be
        [[[2**53, 1, 2]], [[1, 2, 3]]],  # an integer that converts differently among floats
        [[[10**400, 1, 2]], [[1, 2, 3]]],  # past float64
        [[1, 2, 3], [[1, 2, 3]]],  # not [time][features]
        [[[[1], [2], [3]]], [[[1], [2], [3]]]],  # one level too deep
    ]
    for inputs in converted:
        together = codecs._together(inputs, 100)
        assert together is not None and together.dtype == np.float32
        for row, entry in zip(together, inputs, strict=True):
            assert row.tobytes() == as_array(entry, "inputs").tobytes()
    assert all(codecs._together(inputs, 100) is None for inputs in declined)

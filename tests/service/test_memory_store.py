from __future__ import annotations

import time

import numpy as np
import pytest

from service.core.errors import PositionConflict, SessionEvicted, SessionExpired
from service.sessions.base import LastStep, SessionRecord, new_session_id, new_token
from service.sessions.memory import BLOCK, MemorySessionStore, StatePool


def record(ttl: float = 60.0, value: float = 0.0) -> SessionRecord:
    now = time.time()
    state = (np.full((2, 4), value, np.float32), np.full((2, 4), -value, np.float32))
    return SessionRecord(new_session_id(), "m", 1, 0, state, ttl, now + ttl, now)


async def test_round_trip_and_check_and_set():
    store = MemorySessionStore(max_sessions=10)
    rec = record(value=1.5)
    await store.create(rec)
    loaded = await store.load(rec.session_id)
    np.testing.assert_array_equal(loaded.state[0], rec.state[0])
    np.testing.assert_array_equal(loaded.state[1], rec.state[1])
    loaded.state = (loaded.state[0] + 1, loaded.state[1])
    loaded.position = 3
    loaded.history = (LastStep(0, b"d" * 16, b"{}"),)
    await store.save(loaded, expected_position=0)
    again = await store.load(rec.session_id)
    assert again.position == 3 and again.history == (LastStep(0, b"d" * 16, b"{}"),)
    assert float(again.state[0][0, 0]) == 2.5
    with pytest.raises(PositionConflict) as err:
        await store.save(again, expected_position=0)
    assert err.value.details["position"] == 3


async def test_only_the_same_write_is_recognised_as_already_applied():
    """Idempotency by the write's token: a re-sent save is a no-op; another write with the very
    same content (identical readings from another request) is a conflict; so is a save computed
    on a session that was replaced under the same id."""
    store = MemorySessionStore(max_sessions=10)
    rec = record()
    await store.create(rec)
    first, second = await store.load(rec.session_id), await store.load(rec.session_id)
    first.position, first.token = 1, new_token()
    first.state = (first.state[0] + 1, first.state[1])
    await store.save(first, expected_position=0)
    await store.save(first, expected_position=0)  # its reply was lost: sent again
    second.position, second.token, second.state = 1, new_token(), first.state
    with pytest.raises(PositionConflict):
        await store.save(second, expected_position=0)
    assert (await store.load(rec.session_id)).position == 1
    stale = await store.load(rec.session_id)
    replacement = record()
    replacement.session_id, replacement.created_at = rec.session_id, rec.created_at + 1
    await store.create(replacement, replace=True)
    stale.position, stale.token = 2, new_token()
    with pytest.raises(PositionConflict):
        await store.save(stale, expected_position=0)


async def test_loaded_state_is_a_copy():
    store = MemorySessionStore(max_sessions=10)
    rec = record(value=1.0)
    await store.create(rec)
    loaded = await store.load(rec.session_id)
    loaded.state[0][:] = 99
    assert float((await store.load(rec.session_id)).state[0][0, 0]) == 1.0


async def test_lru_eviction_keeps_recently_used():
    store = MemorySessionStore(max_sessions=3)
    recs = [record() for _ in range(3)]
    for r in recs:
        await store.create(r)
    await store.load(recs[0].session_id)  # recs[1] is now least recently used
    await store.create(record())
    assert await store.count() == 3 and store.evictions == 1
    with pytest.raises(SessionEvicted) as gone:  # the victim learns why: 410, reason evicted
        await store.load(recs[1].session_id)
    assert gone.value.status == 410 and gone.value.body()["reason"] == "evicted"
    await store.load(recs[0].session_id)


async def test_idle_ttl_expiry_by_sweep_and_on_access():
    store = MemorySessionStore(max_sessions=10)
    short, long = record(ttl=0.05), record(ttl=60)
    await store.create(short)
    await store.create(long)
    assert store.sweep(now=time.time() + 1) == 1
    assert await store.count() == 1 and store.expirations == 1
    with pytest.raises(SessionExpired):
        await store.load(short.session_id)
    touched = record(ttl=0.2)
    await store.create(touched)
    time.sleep(0.1)
    await store.load(touched.session_id)  # touching re-arms the deadline
    assert store.sweep(now=time.time() + 0.15) == 0
    assert store.sweep(now=time.time() + 0.5) == 1


async def test_slots_are_reused_and_blocks_grow():
    pool = StatePool(((2, 4), (2, 4)))
    slots = [pool.allocate() for _ in range(BLOCK + 1)]
    assert len(set(slots)) == BLOCK + 1 and len(pool._blocks) == 2
    pool.release(slots[5])
    assert pool.allocate() == slots[5]


async def test_state_tensors_of_different_shapes_share_one_slot():
    """h and c [2, 6], a history ring [1, 7], a clock [1, 1] in one packed row per session;
    a second layout gets its own pool and neither disturbs the other."""
    store = MemorySessionStore(max_sessions=10)
    rng = np.random.default_rng(3)
    shapes = [(2, 6), (2, 6), (1, 7), (1, 1)]
    now = time.time()
    recs = []
    for _ in range(3):
        state = tuple(rng.standard_normal(s).astype(np.float32) for s in shapes)
        recs.append(SessionRecord(new_session_id(), "ring", 1, 0, state, 60, now + 60, now))
    plain = record(value=2.0)
    for rec in (*recs, plain):
        await store.create(rec)
    assert len(store._pools) == 2
    for rec in recs:
        loaded = await store.load(rec.session_id)
        assert [s.shape for s in loaded.state] == shapes
        for got, want in zip(loaded.state, rec.state, strict=True):
            np.testing.assert_array_equal(got, want)
    loaded = await store.load(recs[1].session_id)
    loaded.state = tuple(s * 2 for s in loaded.state)
    loaded.position = 5
    await store.save(loaded, expected_position=0)
    again = await store.load(recs[1].session_id)
    for got, want in zip(again.state, recs[1].state, strict=True):
        np.testing.assert_array_equal(got, want * 2)
    again.state[2][0, 0] = 1e6  # a copy: writing to it changes nothing stored
    assert (await store.load(recs[1].session_id)).state[2][0, 0] != 1e6
    for other in (recs[0], recs[2]):
        np.testing.assert_array_equal((await store.load(other.session_id)).state[2], other.state[2])
    np.testing.assert_array_equal((await store.load(plain.session_id)).state[1], plain.state[1])


def test_a_quota_of_one_reads_as_one_session() -> None:
    from service.sessions.base import too_many

    assert too_many("max_sessions_per_key", 1, "this API key").message == (
        "this API key already holds 1 session; delete some or wait for them to expire"
    )
    assert "holds 2 sessions;" in too_many("max_sessions_per_key", 2, "this API key").message


async def test_load_many_and_save_many_equal_one_by_one_across_blocks_and_layouts():
    """The batched calls gather and scatter states per pool (StatePool.gather/scatter): over
    more than one block, with a packed layout beside a uniform one, and with errors in
    between, they load and write exactly what load and save one by one do."""
    rng = np.random.default_rng(7)
    store = MemorySessionStore(max_sessions=4 * BLOCK)
    now = time.time()
    uniform = [record(value=float(k)) for k in range(BLOCK + 40)]  # two blocks of one pool
    packed = []
    for _ in range(5):
        state = tuple(rng.standard_normal(s).astype(np.float32) for s in [(2, 6), (2, 6), (1, 7)])
        packed.append(SessionRecord(new_session_id(), "ring", 1, 0, state, 60, now + 60, now))
    for rec in (*uniform, *packed):
        await store.create(rec)
    chosen = [*uniform[::97], *packed, uniform[-1]]
    ids = [r.session_id for r in chosen]
    many = await store.load_many([ids[0], "missing", *ids[1:]])
    assert isinstance(many[1], Exception)
    loaded = [many[0], *many[2:]]
    for got, want in zip(loaded, chosen, strict=True):
        assert isinstance(got, SessionRecord) and got.session_id == want.session_id
        for a, b in zip(got.state, want.state, strict=True):
            np.testing.assert_array_equal(a, b)
    loaded[0].state[0][0, 0] = 1e6  # each record's arrays are its own
    assert (await store.load(ids[0])).state[0][0, 0] != 1e6
    for rec in loaded:
        rec.state = tuple(rng.standard_normal(s.shape).astype(np.float32) for s in rec.state)
        rec.position = 1
    stale = loaded[2]
    errors = await store.save_many([(r, 5 if r is stale else 0) for r in loaded])
    assert [type(e) for e in errors] == [PositionConflict if r is stale else type(None) for r in loaded]
    for rec in loaded:
        again = await store.load(rec.session_id)
        assert again.position == (0 if rec is stale else 1)
        want = chosen[loaded.index(rec)].state if rec is stale else rec.state
        for a, b in zip(again.state, want, strict=True):
            np.testing.assert_array_equal(a, b)
    for rec in uniform[1:96]:  # untouched neighbours in the blocks
        again = await store.load(rec.session_id)
        np.testing.assert_array_equal(again.state[0], rec.state[0])

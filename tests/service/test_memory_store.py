from __future__ import annotations

import time

import numpy as np
import pytest

from service.errors import PositionConflict, SessionExpired, SessionNotFound
from service.sessions.base import LastStep, SessionRecord, new_session_id
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
    with pytest.raises(SessionNotFound):
        await store.load(recs[1].session_id)
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
    pool = StatePool(2, 2, 4)
    slots = [pool.allocate() for _ in range(BLOCK + 1)]
    assert len(set(slots)) == BLOCK + 1 and len(pool._blocks) == 2
    pool.release(slots[5])
    assert pool.allocate() == slots[5]

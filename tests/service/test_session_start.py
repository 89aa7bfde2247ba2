"""A session's start time (SessionRecord.start) is kept by every store: written at create, read
back with the record, untouched by saves (the save script never names it), and carried by the
record a lost check-and-set returns. Sessions created without one read back None."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from service.core.errors import PositionConflict
from service.sessions.base import SessionRecord, SessionStore, Superseded, new_session_id
from service.sessions.memory import MemorySessionStore
from service.sessions.redis import RedisSessionStore
from tests.support.redis import RedisProcess
from tests.support.tier import starts

START = 631_152_000.0  # 1990-01-01T00:00:00Z


def record(start: float | None) -> SessionRecord:
    now = time.time()
    state = (np.arange(8, dtype=np.float32).reshape(2, 4),)
    return SessionRecord(new_session_id(), "m", 1, 0, state, 60.0, now + 60, now, start=start)


async def keeps_the_start(store: SessionStore) -> tuple[SessionRecord, SessionRecord]:
    """Create with and without a start, step the first one, then lose a check-and-set on it."""
    timed, plain = record(START + 0.25), record(None)
    await store.create(timed)
    await store.create(plain)
    loaded = await store.load(timed.session_id)
    assert loaded.start == START + 0.25
    assert (await store.load(plain.session_id)).start is None
    loaded.position, loaded.token = 3, "a" * 32
    loaded.start = None  # a step never writes it: a record that lost it changes nothing stored
    await store.save(loaded, expected_position=0)
    again = await store.load(timed.session_id)
    assert again.position == 3 and again.start == START + 0.25
    again.token = "b" * 32
    with pytest.raises(PositionConflict) as lost:
        await store.save(again, expected_position=0)
    current = lost.value.current if isinstance(lost.value, Superseded) else None
    assert current is None or (current.position == 3 and current.start == START + 0.25)
    return timed, plain


def test_the_memory_store_keeps_the_start() -> None:
    asyncio.run(keeps_the_start(MemorySessionStore(max_sessions=10)))


@pytest.fixture(scope="module")
@starts("redis-server")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path_factory.mktemp("redis")) as proc:
        yield proc


@pytest.mark.e2e
def test_the_redis_store_keeps_the_start_in_the_hash(server: RedisProcess) -> None:
    prefix = f"t{new_session_id()[:8]}:"

    async def go() -> tuple[SessionRecord, SessionRecord]:
        store = RedisSessionStore(server.url, prefix=prefix, stats_interval=0)
        try:
            return await keeps_the_start(store)
        finally:
            await store.close()

    timed, plain = asyncio.run(go())
    raw = redis.Redis.from_url(server.url)
    assert float(raw.hget(f"{prefix}s:{{{timed.session_id}}}", "start") or b"nan") == START + 0.25
    assert raw.hget(f"{prefix}s:{{{plain.session_id}}}", "start") is None

"""The replica-local record cache (service.sessions.cache) on its own, and with the engine over
a real redis-server: two replicas (two service stacks on one Redis) stepping one session stay
exact whatever their caches hold, a stale copy is recomputed from the record the refused save
answers, a cached copy is never the only witness of an answer that writes nothing, and a step
on a current copy costs one round trip (counted from Redis's own command statistics)."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from service.api import codecs
from service.core.engine import StepRequest, StepResult
from service.core.errors import ServiceError, SessionExpired, SessionNotFound
from service.core.metrics import Metrics
from service.core.services import Services, build_services
from service.core.settings import Settings
from service.sessions.base import LastStep, SessionRecord, Superseded
from service.sessions.cache import RecordCache, record_bytes
from tests.support.counting import export_counting
from tests.support.redis import RedisProcess
from tests.support.tier import starts


def record(sid: str, ttl: float = 60.0, hidden: int = 64, replies: int = 4) -> SessionRecord:
    state = tuple(np.full((2, hidden), k, np.float32) for k in range(2))
    history = tuple(LastStep(k, bytes(16), outputs=b"x" * 120) for k in range(replies))
    now = time.time()
    return SessionRecord(sid, "m", 1, 0, state, ttl, now + ttl, now, history, "f" * 16)


# ---------------------------------------------------------------------------- the cache alone


def test_get_hands_out_a_copy_and_refreshes_recency() -> None:
    cache = RecordCache(max_bytes=10 * record_bytes(record("a")))
    cache.put(record("a"))
    got = cache.get("a")
    assert got is not None
    got.position = 99
    got.state = ()
    again = cache.get("a")
    assert again is not None and again.position == 0 and len(again.state) == 2
    assert cache.get("nope") is None and (cache.hits, cache.misses) == (2, 1)


def test_least_recently_used_goes_first_within_the_byte_bound() -> None:
    size = record_bytes(record("a"))
    cache = RecordCache(max_bytes=3 * size)
    for sid in "abc":
        cache.put(record(sid))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put(record("d"))
    assert cache.get("b") is None and all(cache.get(s) is not None for s in "acd")
    assert cache.bytes <= 3 * size and cache.evicted == 1
    cache.put(record("a"))  # replacing an entry does not count it twice
    assert len(cache) == 3 and cache.bytes == 3 * size


def test_an_entry_past_its_idle_expiry_is_not_served() -> None:
    cache = RecordCache(max_bytes=1 << 20)
    old = record("a", ttl=60.0)
    old.expires_at = time.time() - 0.001
    cache.put(old)
    assert cache.get("a") is None and len(cache) == 0 and cache.bytes == 0


def test_entry_limit_and_off() -> None:
    cache = RecordCache(max_bytes=1 << 30, max_entries=2)
    for sid in "abc":
        cache.put(record(sid))
    assert len(cache) == 2 and cache.get("a") is None
    off = RecordCache(max_bytes=0)
    off.put(record("a"))
    assert off.get("a") is None and len(off) == 0


@pytest.mark.slow
def test_bounded_in_memory_under_100k_sessions() -> None:
    """100k sessions through a 16 MiB cache: the accounted bytes stay under the bound, and what
    Python actually holds for the cache (tracemalloc, arrays and records included) stays close
    to the accounting, so the bound is a bound on memory."""
    limit = 16 * 1024 * 1024
    cache = RecordCache(max_bytes=limit)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for k in range(100_000):
            cache.put(record(f"s{k:06d}"))
            assert cache.bytes <= limit
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert 0 < len(cache) < 100_000 and cache.evicted == 100_000 - len(cache)
    assert held <= 1.25 * limit, f"the cache holds {held} bytes for an accounted {cache.bytes}"
    assert cache.get("s099999") is not None and cache.get("s000000") is None


# ---------------------------------------------------------------------------- over Redis


@pytest.fixture(scope="module")
@starts("redis-server")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path_factory.mktemp("redis"), appendonly=False) as proc:
        yield proc


def stack(repo: Path, url: str, **settings: object) -> Services:
    return build_services(
        Settings(model_repository=repo, session_store=url, inline_max_cost=0, **settings),  # type: ignore[arg-type]
        Metrics(),
        codecs.STEP_REPLY,
    )


@pytest.fixture
async def replicas(tmp_path: Path, server: RedisProcess) -> AsyncIterator[tuple[Services, Services]]:
    """Two service stacks on one Redis and one key prefix: two replicas of one deployment."""
    export_counting(tmp_path / "repo", "count", 1)
    url = f"{server.url}?prefix=c{uuid.uuid4().hex[:8]}:"
    a, b = stack(tmp_path / "repo", url), stack(tmp_path / "repo", url)
    yield a, b
    for svc in (a, b):
        await svc.store.close()
        svc.executor.shutdown(wait=True)


class Counted:
    """Counts a store's loads and its saves refused as superseded."""

    def __init__(self, svc: Services) -> None:
        self.loads = 0
        self.superseded = 0
        store = svc.store
        load, load_many, save = store.load, store.load_many, store.save

        async def counted_load(sid: str) -> SessionRecord:
            self.loads += 1
            return await load(sid)

        async def counted_load_many(ids: list[str]):  # type: ignore[no-untyped-def]
            self.loads += len(ids)
            return await load_many(ids)

        async def counted_save(rec: SessionRecord, expected_position: int) -> None:
            try:
                await save(rec, expected_position)
            except Superseded:
                self.superseded += 1
                raise

        store.load, store.load_many, store.save = counted_load, counted_load_many, counted_save  # type: ignore[method-assign]


async def truth(svc: Services, sid: str) -> tuple[int, float]:
    rec = await svc.store.load(sid)
    count, total = rec.state[0][0]
    return int(count), float(total)


@pytest.mark.e2e
async def test_two_replicas_stepping_one_session_alternately_stay_exact(replicas) -> None:  # type: ignore[no-untyped-def]
    """Every step finds the other replica moved the session on since its own cached copy: the
    save is refused with the current record, the step is recomputed from it (no load), and
    every reply is the one a single replica gives."""
    a, b = replicas
    sid = (await a.sessions.create("count")).session_id
    ca, cb = Counted(a), Counted(b)
    total = 0.0
    for k in range(1, 13):
        svc = a if k % 2 else b
        result = await svc.engine.step(StepRequest(sid, np.array([[float(k)]], np.float32)))
        total += k
        assert result.position == k and not result.replayed
        np.testing.assert_array_equal(result.outputs, [[float(k), total]])
    assert ca.loads == 0  # a's first step ran on the copy its create left, the rest on refusals' records
    assert cb.loads == 1  # b's first step: nothing cached yet
    assert ca.superseded == 5 and cb.superseded == 5
    assert await truth(a, sid) == (12, total)


@pytest.mark.e2e
async def test_a_stale_copy_is_recomputed_and_a_positioned_step_not_refused(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas
    sid = (await a.sessions.create("count")).session_id
    await a.engine.step(StepRequest(sid, [[1.0]], 0))  # a's copy: position 1
    await b.engine.step(StepRequest(sid, [[2.0]], 1))  # the session is at 2 now
    # a's copy says 1: a request at 2 is planned as a conflict there, so a loads and applies it
    r = await a.engine.step(StepRequest(sid, [[4.0]], 2))
    assert r.position == 3 and not r.replayed
    np.testing.assert_array_equal(r.outputs, [[3.0, 7.0]])
    await b.engine.step(StepRequest(sid, [[8.0]], 3))
    # a's copy says 3 and a request at 3 applies on it: the refused save answers the current
    # record (at 4), where the same request at 3 is the step b applied: a replay, not applied twice
    ca = Counted(a)
    r2 = await a.engine.step(StepRequest(sid, [[8.0]], 3))
    assert r2.replayed and r2.position == 4 and ca.superseded == 1 and ca.loads == 0
    np.testing.assert_array_equal(r2.outputs, [[4.0, 15.0]])
    # and a different request at 3 is a conflict naming the current position
    with pytest.raises(Exception) as info:
        await a.engine.step(StepRequest(sid, [[9.0]], 3))
    assert getattr(info.value, "details", {}).get("position") == 4
    assert await truth(a, sid) == (4, 15.0)


@pytest.mark.e2e
async def test_answers_without_a_write_are_never_given_from_a_stale_copy(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas
    sid = (await a.sessions.create("count")).session_id
    first = await a.engine.step(StepRequest(sid, [[5.0]], 0))
    await b.sessions.delete(sid)
    # a's copy still holds the step at 0: its replay would be an answer for a deleted session
    with pytest.raises(SessionNotFound):
        await a.engine.step(StepRequest(sid, [[5.0]], 0))
    with pytest.raises(SessionNotFound):
        await a.engine.step(StepRequest(sid, [[5.0]]))
    assert first.position == 1


@pytest.mark.e2e
async def test_an_expired_session_is_gone_whatever_the_cache_held(tmp_path: Path, server: RedisProcess) -> None:
    export_counting(tmp_path / "repo", "count", 1)
    svc = stack(tmp_path / "repo", f"{server.url}?prefix=e{uuid.uuid4().hex[:8]}:")
    try:
        sid = (await svc.sessions.create("count", ttl=0.3)).session_id
        await svc.engine.step(StepRequest(sid, [[1.0]]))
        await asyncio.sleep(0.5)
        with pytest.raises(SessionExpired):
            await svc.engine.step(StepRequest(sid, [[1.0]]))
    finally:
        await svc.store.close()
        svc.executor.shutdown(wait=True)


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.mark.e2e
async def test_a_step_on_a_current_copy_is_one_round_trip(replicas, server: RedisProcess) -> None:  # type: ignore[no-untyped-def]
    """Redis's own statistics: per step one EVALSHA (the save) and three commands inside it,
    and every eighth one HGET more (scripts/save.lua folds the newest write tokens into the
    ring)."""
    a, _ = replicas
    sid = (await a.sessions.create("count")).session_id
    await a.engine.step(StepRequest(sid, [[1.0]]))  # scripts cached on the server
    client = redis.Redis(port=server.port)
    try:
        before = commandstats(client)
        steps = 20
        for k in range(steps):
            await a.engine.step(StepRequest(sid, [[1.0]], k + 1))
        after = commandstats(client)
    finally:
        client.close()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    delta = {name: n for name, n in delta.items() if n and name != "info"}
    # the expiry marker was set by the first save (before `before`); it is set again only when it
    # would outlive the hash by less than half the tombstone time (hours here)
    assert delta.pop("hget", 0) in (steps // 8, steps // 8 + 1)
    assert delta == {"evalsha": steps, "hmget": steps, "hset": steps, "pexpire": steps}


@pytest.mark.e2e
async def test_counters_say_how_the_cache_did(replicas) -> None:  # type: ignore[no-untyped-def]
    """What /metrics shows: lookups that hit and missed, saves superseded, entries and bytes."""
    from prometheus_client import generate_latest

    a, b = replicas
    sid = (await a.sessions.create("count")).session_id
    await a.engine.step(StepRequest(sid, [[1.0]]))  # hit (the create's copy)
    await b.engine.step(StepRequest(sid, [[1.0]]))  # miss on b: load
    await a.engine.step(StepRequest(sid, [[1.0]]))  # hit on a, but stale: superseded
    stats = a.store.stats()
    assert (stats["cache_hits"], stats["cache_misses"], stats["superseded"]) == (2, 0, 1)
    assert stats["cache_entries"] == 1 and stats["cache_bytes"] > 0
    assert (b.store.stats()["cache_hits"], b.store.stats()["cache_misses"]) == (0, 1)
    text = generate_latest(a.metrics.registry).decode()
    assert 'seqserve_session_cache_lookups_total{result="hit"} 2.0' in text
    assert "seqserve_session_saves_superseded_total 1.0" in text


@pytest.mark.e2e
async def test_bulk_over_redis_equals_single_steps_byte_for_byte(replicas, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A bulk batch (pipelined loads and saves) answers what single steps on another stack
    answer, byte for byte, cached or not; per-item errors stay per item."""
    a, b = replicas
    ids_a = [(await a.sessions.create("count")).session_id for _ in range(6)]
    ids_b = [(await b.sessions.create("count")).session_id for _ in range(6)]
    a.store._cache.clear()  # type: ignore[attr-defined]  # the first batch loads (a pipeline)
    for round_ in range(3):
        entries = [{"session_id": sid, "inputs": [[float(k + round_)]] * (1 + k % 2)} for k, sid in enumerate(ids_a)]
        entries.append({"session_id": "missing", "inputs": [[1.0]]})
        entries.append({"session_id": ids_a[0], "inputs": [[1.0]], "position": 99})
        items = codecs.bulk_requests(entries, a.settings.max_steps_per_request)
        outcomes = await a.engine.apply([i for i in items if isinstance(i, StepRequest)], model="count")
        got = orjson.loads(codecs.bulk_body(items, outcomes))["results"]
        for k, sid in enumerate(ids_b):
            one = await b.engine.step(StepRequest(sid, [[float(k + round_)]] * (1 + k % 2)))
            payload = outcomes[k].payload  # type: ignore[union-attr]
            assert payload.replace(ids_a[k].encode(), sid.encode()) == one.payload
        assert got[6]["status"] == 404 and got[7]["status"] == 409


@pytest.mark.e2e
async def test_columnar_bulk_over_redis_equals_single_steps_byte_for_byte(replicas) -> None:  # type: ignore[no-untyped-def]
    """Bulk batches of one reading per session without positions go through the columnar path
    once the sessions are cached (general path before, and for a batch with a position or a
    missing session); a session another replica advanced meanwhile is refused by the save and
    planned again from the record it answers. Every body equals, byte for byte, what single
    steps of twin sessions answer, and the records in Redis match the twins'."""
    from service.core.engine import StepColumns

    a, b = replicas
    ids_a = [(await a.sessions.create("count")).session_id for _ in range(5)]
    ids_b = [(await b.sessions.create("count")).session_id for _ in range(5)]
    a.store._cache.clear()  # type: ignore[attr-defined]  # the first batch loads them

    async def twin(entry: dict) -> bytes:
        sid = entry["session_id"]
        other = ids_b[ids_a.index(sid)] if sid in ids_a else sid
        try:
            reply = await b.engine.step(StepRequest(other, entry["inputs"], entry.get("position")), model="count")
        except ServiceError as exc:
            return orjson.dumps({"session_id": sid, "status": exc.status, **exc.body()})
        return reply.payload.replace(other.encode(), sid.encode())

    def batch(round_: int) -> list[dict]:
        return [{"session_id": sid, "inputs": [[float(k + round_)]]} for k, sid in enumerate(ids_a)]

    stale = batch(9)[1:2]  # another replica steps ids_a[1] (and its twin) behind a's cache
    mixed = [
        *batch(4),
        {"session_id": ids_a[0], "inputs": [[1.0]], "position": 99},
        {"session_id": "gone", "inputs": [[1.0]]},
    ]
    rounds = [(batch(0), list), (batch(1), StepColumns), ("stale", None), (batch(2), StepColumns), (mixed, list)]
    for entries, path in rounds:
        if entries == "stale":
            await b.engine.step(StepRequest(ids_a[1], stale[0]["inputs"]))
            await b.engine.step(StepRequest(ids_b[1], stale[0]["inputs"]))
            continue
        items = codecs.bulk_requests(entries, a.settings.max_steps_per_request)
        outcomes = await a.engine.apply([i for i in items if isinstance(i, StepRequest)], model="count")
        assert type(outcomes) is path
        if entries == rounds[3][0]:  # the stale copy's save was refused, and planned again
            assert list(outcomes.overrides) == [1]  # type: ignore[attr-defined]
        body = codecs.bulk_body(items, outcomes)
        assert body == b'{"results":[' + b",".join([await twin(e) for e in entries]) + b"]}"
    assert isinstance(outcomes[1], StepResult) and outcomes[1].position == 5  # type: ignore[union-attr]
    for sa, sb in zip(ids_a, ids_b, strict=True):
        ra, rb = await a.store.load(sa), await b.store.load(sb)
        assert ra.position == rb.position and all(
            x.tobytes() == y.tobytes() for x, y in zip(ra.state, rb.state, strict=True)
        )


@pytest.mark.e2e
async def test_a_websocket_batch_over_redis_equals_single_steps_byte_for_byte(replicas) -> None:  # type: ignore[no-untyped-def]
    """A WebSocket client's pipelined messages on one session (one engine batch: one model call,
    one save) answer what the same messages sent one by one answer, with positions, a retry
    and an invalid message among them; also when the cached copy is stale."""
    a, b = replicas
    sid_a = (await a.sessions.create("count")).session_id
    sid_b = (await b.sessions.create("count")).session_id

    def messages(sid: str, start: int) -> list[StepRequest]:
        return [
            StepRequest(sid, [[1.0]], start),
            StepRequest(sid, [[2.0], [3.0]]),
            StepRequest(sid, [[1.0]], start),  # a retry of the first
            StepRequest(sid, [[1.0, 2.0]]),  # wrong feature count
            StepRequest(sid, [[4.0]], start + 3),
        ]

    for round_ in range(2):
        if round_:
            await b.engine.step(StepRequest(sid_a, [[5.0]]))  # a's copy of sid_a is stale now
            await a.engine.step(StepRequest(sid_b, [[5.0]]))
        start = 4 * round_ + round_
        got = await a.engine.apply(messages(sid_a, start))
        want = []
        for request in messages(sid_b, start):
            try:
                want.append(await b.engine.step(request))
            except Exception as exc:
                want.append(exc)
        for g, w in zip(got, want, strict=True):
            if isinstance(w, Exception):
                assert type(g) is type(w) and g.body() == w.body()  # type: ignore[union-attr]
            else:
                assert g.payload.replace(sid_a.encode(), sid_b.encode()) == w.payload  # type: ignore[union-attr]
                assert g.replayed == w.replayed  # type: ignore[union-attr]

"""RedisSessionStore against a real redis-server (tests/support/redis.py): exact state bytes,
check-and-set, idle expiry, retry records, and what happens when Redis goes away and returns."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from service.core.errors import PositionConflict, SessionExpired, SessionNotFound, StoreUnavailable
from service.sessions.base import (
    TOKEN_WINDOW,
    LastStep,
    SessionRecord,
    decode_history,
    encode_history,
    new_session_id,
    new_token,
)
from service.sessions.redis import RedisSessionStore, SessionExists, split_url
from tests.support.redis import RedisProcess
from tests.support.servers import free_port
from tests.support.tier import starts

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
@starts("redis-server")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path_factory.mktemp("redis")) as proc:
        yield proc


@pytest.fixture
@starts("redis-server")
def own_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server this test may stop, kill and restart."""
    proc = RedisProcess(tmp_path / "redis").start()
    yield proc
    proc.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def run(coro):
    return asyncio.run(coro)


def store_for(url: str, prefix: str, **kwargs) -> RedisSessionStore:
    return RedisSessionStore(url, prefix=prefix, stats_interval=0, **kwargs)


def make_record(
    ttl: float = 60.0, states: int = 2, layers: int = 2, hidden: int = 16, seed: int = 0, **kwargs
) -> SessionRecord:
    rng = np.random.default_rng(seed)
    state = tuple(rng.standard_normal((layers, hidden)).astype(np.float32) for _ in range(states))
    now = time.time()
    fields = dict(
        model="lstm", version=2, position=0, state=state, ttl_seconds=ttl, expires_at=now + ttl, created_at=now
    )
    fields.update(kwargs)
    return SessionRecord(new_session_id(), **fields)


def same_bytes(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True)
    )


def test_create_load_round_trip_exact_bytes(server: RedisProcess, prefix: str) -> None:
    record = make_record()
    # Values that a text encoding would mangle: -0.0, denormals, inf, NaN with a payload.
    special = np.array([-0.0, 1e-45, np.inf, -np.inf], np.float32)
    record.state[0][0, :4] = special
    record.state[0].view(np.uint32)[1, 0] = 0x7FC0_1234
    gru = make_record(states=1, layers=3, hidden=5, seed=1)

    async def go():
        store = store_for(server.url, prefix)
        try:
            await store.create(record)
            await store.create(gru)
            return await store.load(record.session_id), await store.load(gru.session_id)
        finally:
            await store.close()

    loaded, loaded_gru = run(go())
    assert same_bytes(loaded.state, record.state)
    assert all(s.shape == (2, 16) and s.dtype == np.float32 and s.flags.writeable for s in loaded.state)
    assert (loaded.model, loaded.version, loaded.position, loaded.ttl_seconds) == ("lstm", 2, 0, 60.0)
    assert loaded.created_at == record.created_at
    assert loaded.expires_at == pytest.approx(time.time() + 60, abs=2)
    assert loaded.last is None
    assert same_bytes(loaded_gru.state, gru.state) and loaded_gru.state[0].shape == (3, 5)

    # Compact: raw float32 bytes, nothing else of size.
    raw = redis.Redis.from_url(server.url).hgetall(f"{prefix}s:{{{record.session_id}}}")
    assert len(raw[b"state"]) == 2 * 2 * 16 * 4
    assert raw[b"shape"] == b"2,16;2,16"


def test_save_round_trip_with_recent_steps(server: RedisProcess, prefix: str) -> None:
    record = make_record()

    async def go():
        store = store_for(server.url, prefix)
        try:
            await store.create(record)
            loaded = await store.load(record.session_id)
            loaded.state = tuple(s + 1 for s in loaded.state)
            loaded.position = 7
            loaded.history = (
                LastStep(0, b"\x00\xffdigest\r\n;=1234", b'{"outputs":[[1.0]]}'),
                LastStep(3, b"d" * 16, b"{}"),
            )
            await store.save(loaded, expected_position=0)
            return loaded, await store.load(record.session_id)
        finally:
            await store.close()

    saved, again = run(go())
    assert again.position == 7
    assert same_bytes(again.state, saved.state)
    assert again.history == saved.history


def test_check_and_set_conflict_and_idempotent_resend(server: RedisProcess, prefix: str) -> None:
    """Idempotency by the write's token, never by its content."""
    record = make_record()

    async def go():
        store = store_for(server.url, prefix)
        try:
            await store.create(record)
            first = await store.load(record.session_id)
            second = await store.load(record.session_id)
            first.position, first.history, first.token = 3, (LastStep(0, b"a" * 16, b"r1"),), new_token()
            first.state = tuple(s * 2 for s in first.state)
            await store.save(first, expected_position=0)
            # The same save sent again (its reply was lost): done, not a conflict, not re-applied.
            await store.save(first, expected_position=0)
            # Another request that computed the very same step from the same old state (same
            # inputs, same resulting position) is another write: refused.
            second.position, second.history, second.token = 3, first.history, new_token()
            second.state = first.state
            with pytest.raises(PositionConflict) as conflict:
                await store.save(second, expected_position=0)
            # Another replica writes next; the first save, re-sent again, is still recognised.
            third = await store.load(record.session_id)
            third.position, third.token = 4, new_token()
            third.state = tuple(s + 1 for s in third.state)
            await store.save(third, expected_position=3)
            await store.save(first, expected_position=0)
            return third, conflict.value, await store.load(record.session_id)
        finally:
            await store.close()

    third, conflict, final = run(go())
    assert conflict.details["position"] == 3 and conflict.status == 409
    assert final.position == 4 and final.last.outputs == b"r1"
    assert same_bytes(final.state, third.state)


def test_a_restarted_session_refuses_saves_of_the_one_it_replaced(server: RedisProcess, prefix: str) -> None:
    """A save computed on a session that was replaced under the same id (a V2 sequence restart)
    is a conflict even when the positions line up."""
    record = make_record()

    async def go():
        store = store_for(server.url, prefix)
        try:
            await store.create(record)
            stale = await store.load(record.session_id)
            restarted = make_record(seed=5)
            restarted.session_id, restarted.created_at = record.session_id, record.created_at + 1
            await store.create(restarted, replace=True)
            stale.position = 1
            with pytest.raises(PositionConflict):
                await store.save(stale, expected_position=0)
            return await store.load(record.session_id)
        finally:
            await store.close()

    final = run(go())
    assert final.position == 0 and final.created_at == record.created_at + 1


def test_create_never_overwrites(server: RedisProcess, prefix: str) -> None:
    record = make_record(seed=1)
    other = make_record(seed=2)
    other.session_id = record.session_id

    async def go():
        store = store_for(server.url, prefix)
        try:
            await store.create(record)
            await store.create(record)  # the same create re-sent: recognised, no error
            with pytest.raises(SessionExists):
                await store.create(other)
            return await store.load(record.session_id)
        finally:
            await store.close()

    assert same_bytes(run(go()).state, record.state)


def test_not_found_delete_count_list(server: RedisProcess, prefix: str) -> None:
    records = [make_record(seed=i) for i in range(5)]

    async def go():
        store = store_for(server.url, prefix)
        try:
            with pytest.raises(SessionNotFound):
                await store.load("nope")
            with pytest.raises(SessionNotFound):
                await store.save(records[0], expected_position=0)
            for r in records:
                await store.create(r)
            assert await store.count() == 5
            stats = store.stats()
            assert {k: stats[k] for k in ("active", "evicted", "expired", "available")} == {
                "active": 5, "evicted": 0, "expired": 0, "available": 1,
            }  # fmt: skip
            assert stats["cache_entries"] == 5  # the records created here (service.sessions.cache)
            assert sorted(await store.list_ids()) == sorted(r.session_id for r in records)
            assert len(await store.list_ids(limit=2)) == 2
            assert await store.delete(records[0].session_id) is True
            assert await store.delete(records[0].session_id) is False
            with pytest.raises(SessionNotFound):  # deleted, not expired
                await store.load(records[0].session_id)
            assert await store.count() == 4
            await store.ping()
        finally:
            await store.close()

    run(go())


def test_idle_ttl_is_redis_expiry_refreshed_on_access(server: RedisProcess, prefix: str) -> None:
    short = make_record(ttl=0.3)
    kept = make_record(ttl=0.6)
    raw = redis.Redis.from_url(server.url)

    async def go():
        store = store_for(server.url, prefix)
        try:
            await store.create(short)
            await store.create(kept)
            assert 0 < raw.pttl(f"{prefix}s:{{{short.session_id}}}") <= 300
            for _ in range(4):  # 4 x 0.25 s > 0.6 s: alive only because every load refreshes it
                await asyncio.sleep(0.25)
                record = await store.load(kept.session_id)
            record.position, record.history = 1, (LastStep(0, b"d" * 16, b"r"),)
            await store.save(record, 0)
            assert raw.pttl(f"{prefix}s:{{{kept.session_id}}}") > 400
            with pytest.raises(SessionExpired):
                await store.load(short.session_id)
            short.position = 1
            with pytest.raises(SessionExpired):
                await store.save(short, 0)
            assert await store.delete(short.session_id) is True  # the expiry marker
            with pytest.raises(SessionNotFound):
                await store.load(short.session_id)
        finally:
            await store.close()

    run(go())


def test_prefix_from_url(server: RedisProcess, prefix: str) -> None:
    assert split_url("redis://h:1/0?prefix=a:b:&socket_keepalive=true") == (
        "redis://h:1/0?socket_keepalive=true",
        "a:b:",
    )
    assert split_url("redis://h:1/2") == ("redis://h:1/2", None)
    record = make_record()

    async def go():
        store = RedisSessionStore(f"{server.url}?prefix={prefix}", stats_interval=0)
        try:
            await store.create(record)
        finally:
            await store.close()

    run(go())
    assert redis.Redis.from_url(server.url).exists(f"{prefix}s:{{{record.session_id}}}")


def test_unreachable_is_store_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    record = make_record()

    async def go():
        store = store_for(url, "x:")
        try:
            for call in (
                store.ping(),
                store.create(record),
                store.load(record.session_id),
                store.save(record, 0),
                store.delete(record.session_id),
                store.count(),
                store.list_ids(),
            ):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as err:
                    await call
                assert time.monotonic() - started < 2
                assert err.value.status == 503 and err.value.code == "session_store_unavailable"
                # the body names no host or port (they are in the log only)
                assert err.value.body() == {"error": "session store unavailable", "code": "session_store_unavailable"}
            assert store.stats()["available"] == 0
        finally:
            await store.close()

    run(go())


def test_recovers_after_restart_and_aof_keeps_data(own_server: RedisProcess, prefix: str) -> None:
    record = make_record()

    async def go():
        store = store_for(own_server.url, prefix)
        try:
            await store.create(record)
            loaded = await store.load(record.session_id)
            loaded.position, loaded.history = 2, (LastStep(0, b"d" * 16, b"resp"),)
            loaded.state = tuple(s - 3 for s in loaded.state)
            await store.save(loaded, 0)

            own_server.kill()  # a crash: only the append-only file survives
            with pytest.raises(StoreUnavailable):
                await store.load(record.session_id)
            with pytest.raises(StoreUnavailable):
                await store.ping()
            own_server.start()

            # The same store object (pooled connections were to the dead server) just works.
            await store.ping()
            after = await store.load(record.session_id)
            assert after.position == 2 and after.history == (LastStep(0, b"d" * 16, b"resp"),)
            assert same_bytes(after.state, loaded.state)
            after.position = 3
            await store.save(after, 2)

            own_server.restart()  # a clean restart, without a request in between
            assert (await store.load(record.session_id)).position == 3
        finally:
            await store.close()

    run(go())


def test_timeout_is_unavailable_and_resend_is_not_applied_twice(own_server: RedisProcess, prefix: str) -> None:
    """A frozen Redis: the save times out (503, after one re-send that times out too); it may
    still be applied when Redis resumes. Re-sending it then must not apply it twice."""
    record = make_record()

    async def go():
        store = store_for(own_server.url, prefix, socket_timeout=0.3)
        try:
            await store.create(record)
            step = await store.load(record.session_id)
            step.position, step.history, step.token = 4, (LastStep(0, b"s" * 16, b"r"),), new_token()
            step.state = tuple(s + 10 for s in step.state)
            os.kill(own_server.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.save(step, 0)
                assert time.monotonic() - started < 1.5
            finally:
                os.kill(own_server.proc.pid, signal.SIGCONT)
            await store.save(step, 0)  # the client's retry, same expected position
            final = await store.load(record.session_id)
            assert final.position == 4 and same_bytes(final.state, step.state)
        finally:
            await store.close()

    run(go())


def test_state_tensors_of_different_shapes_round_trip(server: RedisProcess, prefix: str) -> None:
    """h and c [2, 6], a history ring [1, 7], a clock [1, 1]: exact bytes, shapes, order."""
    rng = np.random.default_rng(7)
    shapes = [(2, 6), (2, 6), (1, 7), (1, 1)]
    state = tuple(rng.standard_normal(s).astype(np.float32) for s in shapes)
    record = make_record(state=state)

    async def go():
        store = store_for(server.url, prefix)
        try:
            await store.create(record)
            loaded = await store.load(record.session_id)
            loaded.state = tuple(s + 1 for s in loaded.state)
            loaded.position = 4
            await store.save(loaded, expected_position=0)
            return loaded, await store.load(record.session_id)
        finally:
            await store.close()

    saved, again = run(go())
    assert [s.shape for s in again.state] == shapes
    assert same_bytes(again.state, saved.state)
    assert all(s.flags.writeable for s in again.state)
    raw = redis.Redis.from_url(server.url).hgetall(f"{prefix}s:{{{record.session_id}}}")
    assert raw[b"shape"] == b"2,6;2,6;1,7;1,1"
    assert len(raw[b"state"]) == (12 + 12 + 7 + 1) * 4


def test_hash_in_the_older_layout_is_still_read(server: RedisProcess, prefix: str) -> None:
    """Sessions written before per-tensor shapes ("tensors,rows,width") survive an upgrade."""
    record = make_record()

    async def go():
        store = store_for(server.url, prefix)
        try:
            await store.create(record)
            key = f"{prefix}s:{{{record.session_id}}}"
            await store._redis.hset(key, "shape", "2,2,16")
            return await store.load(record.session_id)
        finally:
            await store.close()

    loaded = run(go())
    assert [s.shape for s in loaded.state] == [(2, 16), (2, 16)]
    assert same_bytes(loaded.state, record.state)


def test_a_resent_save_is_recognised_while_fewer_than_the_window_of_writes_followed(
    server: RedisProcess, prefix: str
) -> None:
    """The save script records write tokens in two fields (the newest few, folded into the ring
    every few writes): after every write, each of the last TOKEN_WINDOW saves sent again is
    answered "applied, at the position it wrote", and nothing changes; a save that expects the
    current position is written."""
    record = make_record()

    async def go() -> tuple[tuple[np.ndarray, ...], SessionRecord]:
        store = store_for(server.url, prefix, cache_bytes=0)
        try:
            await store.create(record)
            keys = [f"{prefix}s:{{{record.session_id}}}", f"{prefix}x:{{{record.session_id}}}"]
            sent: list[list] = []
            for n in range(1, 3 * TOKEN_WINDOW + 2):
                step = await store.load(record.session_id)
                step.position, step.token = n, new_token()
                step.state = tuple(s + n for s in step.state)
                sent.append(store._save_args(step, n - 1))
                assert await store._save(store._redis, keys, sent[-1]) == [1, n]
                for k in range(max(1, n - TOKEN_WINDOW + 1), n + 1):
                    assert await store._save(store._redis, keys, sent[k - 1]) == [1, k], (n, k)
            return step.state, await store.load(record.session_id)
        finally:
            await store.close()

    written, final = run(go())
    assert final.position == 3 * TOKEN_WINDOW + 1 and same_bytes(final.state, written)


def test_tokens_recorded_by_the_previous_save_script_are_still_recognised(server: RedisProcess, prefix: str) -> None:
    """A hash whose tokens an older release wrote (the whole ring in `tokens`, no `tokens_new`):
    a save it applied, sent again, is answered "applied"; the next save is written."""
    record = make_record()
    token = new_token()

    async def go() -> list:
        store = store_for(server.url, prefix, cache_bytes=0)
        try:
            await store.create(record)
            key = f"{prefix}s:{{{record.session_id}}}"
            keys = [key, f"{prefix}x:{{{record.session_id}}}"]
            older = "".join(f"{new_token()}={p:020d};" for p in range(1, 5)) + f"{token}={5:020d};"
            await store._redis.hset(key, mapping={"position": 5, "tokens": older})
            step = await store.load(record.session_id)
            step.position, step.token = 5, token
            again = await store._save(store._redis, keys, store._save_args(step, 4))
            step.position, step.token = 6, new_token()
            written = await store._save(store._redis, keys, store._save_args(step, 5))
            step.position, step.token = 6, token
            still = await store._save(store._redis, keys, store._save_args(step, 4))
            return [again, written, still]
        finally:
            await store.close()

    assert run(go()) == [[1, 5], [1, 6], [1, 5]]


def test_a_burst_wider_than_the_pool_waits_for_connections(server: RedisProcess, prefix: str) -> None:
    """A bulk step over hundreds of sessions loads and saves them concurrently: with a pool of 8
    connections, 300 concurrent loads and saves all succeed (a non-blocking pool answered
    "Too many connections" past its size, which a bulk request over 256 sessions hit)."""
    records = [make_record(seed=k) for k in range(300)]

    async def go():
        store = store_for(server.url + "?max_connections=8", prefix)
        try:
            for record in records:
                await store.create(record)
            loaded = await store.load_many([r.session_id for r in records])
            assert all(isinstance(r, SessionRecord) for r in loaded), [
                r for r in loaded if not isinstance(r, SessionRecord)
            ][:3]
            for record in loaded:
                record.position = 1
            saved = await store.save_many([(r, 0) for r in loaded])
            assert saved == [None] * len(records)
            return await store.load_many([r.session_id for r in records])
        finally:
            await store.close()

    again = run(go())
    assert [r.position for r in again] == [1] * len(records)


def test_history_blobs_round_trip_and_the_previous_format_is_read() -> None:
    """Records hold outputs or a pre-step state; a blob written by the previous release (whole
    JSON replies) is still read: its outputs come out of the reply, so a retry across an
    upgrade gets its reply."""
    outputs = np.array([[1.5, -2.0]], np.float32).tobytes()
    history = (LastStep(0, b"a" * 16, outputs), LastStep(1, b"b" * 16, state=b"\x00" * 8))
    assert decode_history(encode_history(history)) == history
    assert encode_history(()) == b""
    reply = b'{"session_id":"s","model":"m","version":1,"position":1,"outputs":[[1.5,-2.0]]}'
    old = struct.pack("<qI16s", 0, len(reply), b"a" * 16) + reply + struct.pack("<qI16s", 255, 2, b"c" * 16) + b"{}"
    assert decode_history(old) == (LastStep(0, b"a" * 16, outputs), LastStep(255, b"c" * 16, b""))


@pytest.mark.e2e
def test_the_expiry_marker_is_set_again_only_when_it_would_fall_short(server: RedisProcess, prefix: str) -> None:
    """A save writes the expiry marker (x:{id}) only when it would otherwise outlive the hash
    by less than half the tombstone time; an expired session is still told apart (410)."""
    record = make_record(ttl=0.5)
    client = redis.Redis(port=server.port)

    async def go() -> None:
        store = store_for(server.url, prefix, tombstone_seconds=4.0)
        try:
            await store.create(record)
            hash_key, marker = f"{prefix}s:{{{record.session_id}}}", f"{prefix}x:{{{record.session_id}}}"
            loaded = await store.load(record.session_id)
            loaded.position = 1
            await store.save(loaded, 0)  # the first save sets it (the create left no marked_until)
            until = int(client.hget(hash_key, "marked_until"))
            assert until >= time.time() * 1000 + 4000
            loaded.position, loaded.token = 2, ""
            await store.save(loaded, 1)
            assert int(client.hget(hash_key, "marked_until")) == until  # not set again
            client.hset(hash_key, "marked_until", 0)  # as if it were about to fall short
            client.pexpire(marker, 100)
            loaded.position, loaded.token = 3, ""
            await store.save(loaded, 2)
            assert client.pttl(marker) > 4000 and int(client.hget(hash_key, "marked_until")) > until - 1000
            await asyncio.sleep(0.8)  # the hash expires (ttl 0.5 s); the marker does not
            with pytest.raises(SessionExpired):
                await store.load(record.session_id)
        finally:
            await store.close()

    try:
        run(go())
    finally:
        client.close()


def test_batched_loads_and_saves_answer_what_one_by_one_answers(server: RedisProcess, prefix: str) -> None:
    """On a single server load_many and save_many send the load and save scripts for a whole
    batch as one script call each: every item gets what its own call would answer (a record,
    not found, expired with its owner; written, a conflict carrying the stored record, not
    found), and a batch sent again with the same tokens (its reply was lost) is recognised,
    item by item, as applied."""
    records = [make_record(seed=k, owner="o1") for k in range(5)]
    short = make_record(ttl=0.2, seed=9, owner="o2")
    raw = redis.Redis(port=server.port)

    def scripts_run(client: redis.Redis) -> int:
        stats = client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))

    async def go():
        store = store_for(server.url, prefix, cache_bytes=0)
        try:
            for record in (*records, short):
                await store.create(record)
            await asyncio.sleep(0.35)  # `short` expires: its marker remains
            ids = [records[0].session_id, "nope", short.session_id, *(r.session_id for r in records[1:])]
            batch = await store.load_many(ids)
            alone = []
            for sid in ids:
                try:
                    alone.append(await store.load(sid))
                except (SessionNotFound, SessionExpired) as exc:
                    alone.append(exc)
            assert [type(x) for x in batch] == [type(x) for x in alone]
            assert batch[2].owner == "o2"  # type: ignore[union-attr]  # told to its owner only
            loaded = [x for x in batch if isinstance(x, SessionRecord)]
            for got, want in zip(loaded, records, strict=True):
                assert got.session_id == want.session_id and same_bytes(got.state, want.state)
            for k, record in enumerate(loaded):
                record.position = 1
                record.state = tuple(s + k for s in record.state)
                record.history = (LastStep(0, bytes([k]) * 16, b"out"),)
                record.token = new_token()
            stale = make_record(seed=1)  # another replica's idea of records[1]: a conflict
            stale.session_id, stale.created_at, stale.position = records[1].session_id, records[1].created_at, 7
            stale.token = new_token()
            items = [(loaded[0], 0), (stale, 6), (make_record(seed=3), 0), *((r, 0) for r in loaded[2:])]
            first = await store.save_many(items[:1] + items[2:])  # records[1] left for the conflict
            assert first[0] is None and isinstance(first[1], SessionNotFound) and first[2:] == [None, None, None]
            calls = scripts_run(raw)
            answers = await store.save_many(items)
            assert scripts_run(raw) == calls + 1  # one script call for the batch
            assert answers[0] is None and answers[3:] == [None, None, None]  # sent again: applied, by token
            conflict = answers[1]
            assert isinstance(conflict, PositionConflict) and conflict.details["position"] == 0
            assert conflict.current is not None and same_bytes(conflict.current.state, records[1].state)  # type: ignore[attr-defined]
            assert isinstance(answers[2], SessionNotFound)
            for record in loaded[:1] + loaded[2:]:
                again = await store.load(record.session_id)
                assert again.position == 1 and same_bytes(again.state, record.state) and again.history == record.history
        finally:
            await store.close()

    run(go())


def test_columnar_save_is_a_check_and_set_per_session_safe_to_send_again(own_server: RedisProcess, prefix: str) -> None:
    """The bulk route's columnar save (load_columns from the record cache, save_columns as one
    script call packed in C): each session written as save() writes it; the same save sent
    again is recognised by its tokens; a session another writer moved is refused with the
    record it holds now while the others are written; a frozen Redis answers 503 for all, and
    the store's connections are sound afterwards (the timed-out one was closed, not reused)."""
    records = [make_record(seed=k, owner="o") for k in range(4)]
    ids = [r.session_id for r in records]

    async def go():
        store = store_for(own_server.url, prefix, socket_timeout=0.3)
        try:
            for record in records:
                await store.create(record)
            hits = store._cache.hits  # type: ignore[attr-defined]
            assert await store.load_columns(ids, "another owner") is None
            columns = await store.load_columns(ids, "o")
            assert columns is not None and columns.positions == [0, 0, 0, 0]
            assert store._cache.hits == hits + 4  # type: ignore[attr-defined]  # the declined batch counted none
            moved = tuple(s + 1 for s in columns.state)  # [rows, sessions, width]
            tokens = [new_token() for _ in ids]
            assert await store.save_columns(columns, 3, moved, tokens) == [None] * 4
            assert await store.save_columns(columns, 3, moved, tokens) == [None] * 4  # sent again
            for k, sid in enumerate(ids):
                stored = await store.load(sid)
                assert stored.position == 3 and same_bytes(stored.state, tuple(s[:, k] for s in moved))
            other = await store.load(ids[2])  # another replica steps one session
            other.position, other.token = 4, new_token()
            await store.save(other, 3)
            columns = await store.load_columns(ids, "o")
            assert columns is not None and columns.positions == [3, 3, 4, 3]
            store._cache._entries[ids[1]][0].position = 2  # type: ignore[attr-defined]  # a stale copy
            columns = await store.load_columns(ids, "o")
            assert columns is not None
            answers = await store.save_columns(columns, 1, columns.state, [new_token() for _ in ids])
            assert answers[0] is None and answers[2:] == [None, None]
            assert isinstance(answers[1], PositionConflict) and answers[1].current.position == 3  # type: ignore[attr-defined]
            assert [(await store.load(sid)).position for sid in ids] == [4, 3, 5, 4]
            columns = await store.load_columns(ids, "o")
            assert columns is not None
            os.kill(own_server.proc.pid, signal.SIGSTOP)
            try:
                answers = await store.save_columns(columns, 1, columns.state, [new_token() for _ in ids])
            finally:
                os.kill(own_server.proc.pid, signal.SIGCONT)
            assert all(isinstance(a, StoreUnavailable) for a in answers)
            positions = [(await store.load(sid)).position for sid in ids]
            assert positions in ([4, 3, 5, 4], [5, 4, 6, 5])  # applied whole or not at all
            columns = await store.load_columns(ids, "o")
            assert columns is not None
            assert await store.save_columns(columns, 1, columns.state, [new_token() for _ in ids]) == [None] * 4
        finally:
            await store.close()

    run(go())


def test_saves_asked_for_together_are_one_script_call_each_answered_as_alone(server: RedisProcess, prefix: str) -> None:
    """Saves that callers ask for in the same event-loop turn (the steps of one model batch)
    go to Redis as one script call; each caller gets what its own save answers (written, a
    conflict carrying the stored record, not found), and a save alone is the plain script."""
    records = [make_record(seed=k) for k in range(4)]
    raw = redis.Redis(port=server.port)

    def calls() -> dict[str, int]:
        stats = raw.info("commandstats")
        return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval", "hset")}

    async def go():
        store = store_for(server.url, prefix, cache_bytes=0)
        try:
            for record in records:
                await store.create(record)
            steps = [await store.load(r.session_id) for r in records]
            for k, step in enumerate(steps):
                step.position, step.token = 1, new_token()
                step.state = tuple(s + k for s in step.state)
            stale = make_record(seed=7)  # another replica's idea of records[1]: a conflict
            stale.session_id, stale.created_at, stale.position = records[1].session_id, records[1].created_at, 1
            await store.save(steps[1], 0)
            raw.script_flush()  # the batch: one EVALSHA, answered NOSCRIPT, then sent whole (EVAL)
            before = calls()
            answers = await asyncio.gather(
                store.save(steps[0], 0),
                store.save(stale, 0),
                store.save(make_record(seed=3), 0),
                store.save(steps[2], 0),
                store.save(steps[3], 0),
                return_exceptions=True,
            )
            together = {name: n - before[name] for name, n in calls().items()}
            assert together == {"evalsha": 1, "eval": 1, "hset": 3}, together
            assert answers[0] is None and answers[3:] == [None, None]
            assert isinstance(answers[1], PositionConflict) and answers[1].details["position"] == 1
            assert answers[1].current is not None and same_bytes(answers[1].current.state, steps[1].state)  # type: ignore[attr-defined]
            assert isinstance(answers[2], SessionNotFound)
            for step in (steps[0], steps[2], steps[3]):
                again = await store.load(step.session_id)
                assert again.position == 1 and same_bytes(again.state, step.state)
            # a save alone: the save script itself, not the batch wrapper (the server forgot
            # both: the one sent comes back as NOSCRIPT and is sent whole, and so cached)
            raw.script_flush()
            before = calls()
            steps[0].position, steps[0].token = 2, new_token()
            await store.save(steps[0], 1)
            assert {name: n - before[name] for name, n in calls().items()} == {"evalsha": 1, "eval": 1, "hset": 1}
            assert raw.script_exists(store._save.sha, store._save_batch.sha) == [True, False]  # type: ignore[attr-defined]
        finally:
            await store.close()

    try:
        run(go())
    finally:
        raw.close()


def test_a_load_answers_every_field_but_the_write_tokens(server: RedisProcess, prefix: str) -> None:
    """The load script answers each field of the hash a step reads, i.e. all of them but the
    write tokens and the marker's expiry (only the save script reads those), and a save's
    conflict answers the same: a field added to the hash and not to the scripts' lists fails
    here."""
    record = make_record(owner="o1", start=1_700_000_000.5)

    async def go() -> tuple[set[bytes], set[bytes], SessionRecord, list, list]:
        store = store_for(server.url, prefix, cache_bytes=0)
        try:
            await store.create(record)
            for n in range(1, 10):  # past a fold of the write tokens
                step = await store.load(record.session_id)
                step.position, step.token = n, new_token()
                step.history = (LastStep(n - 1, bytes([n]) * 16, b"out"),)
                await store.save(step, n - 1)
            keys = [f"{prefix}s:{{{record.session_id}}}", f"{prefix}x:{{{record.session_id}}}"]
            reply = await store._load(store._redis, keys, [store.tombstone_ms])
            stored = set(await store._redis.hkeys(keys[0]))
            stale = await store.load(record.session_id)
            stale.position, stale.token = 10, new_token()
            conflict = await store._save(store._redis, keys, store._save_args(stale, 8))
            return set(reply[::2]), stored, await store.load(record.session_id), conflict, reply
        finally:
            await store.close()

    answered, stored, loaded, conflict, reply = run(go())
    assert {b"tokens", b"tokens_new", b"marked_until"} <= stored
    assert answered == stored - {b"tokens", b"tokens_new", b"marked_until"}
    assert conflict[:2] == [0, 9] and conflict[2] == reply  # a conflict answers the same fields
    assert loaded.position == 9 and loaded.owner == "o1" and loaded.start == 1_700_000_000.5
    assert loaded.history == (LastStep(8, bytes([9]) * 16, b"out"),)

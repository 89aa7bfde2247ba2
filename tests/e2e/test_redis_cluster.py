"""Sessions on a real local Redis Cluster (3 masters + 3 replicas, redis-server in cluster
mode), shared by two service replicas with SEQSERVE_SESSION_STORE=redis+cluster://...?wait_replicas=1.

Sessions land on every master (their ids hash to different slots); bulk steps span many slots;
a stream alternating between the replicas equals one stateless prediction; and a master killed
with SIGKILL mid-stream is failed over to its replica without losing any step a client saw
acknowledged: the client retries 5xx answers with the same `position`, and the final position
counts every step exactly once.
"""

from __future__ import annotations

import asyncio
import copy
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.test_scaleout import assert_close, assert_state_close, session_state, stateless, step_with_retry
from tests.support.models import raw_inputs
from tests.support.redis_cluster import RedisClusterProcesses
from tests.support.servers import ServiceProcess
from tests.support.topology import Topology

pytestmark = pytest.mark.e2e

MODEL = "lstm"
PREFIX = "seqserve:"


@pytest.fixture
def cluster(redis_cluster: RedisClusterProcesses) -> RedisClusterProcesses:
    redis_cluster.ensure_up()  # whatever another test killed is back, every master replicated
    return redis_cluster


@pytest.fixture
def replicas(cluster: RedisClusterProcesses, cluster_topology: Topology) -> list[ServiceProcess]:
    """The two service replicas of the shared cluster topology (wait_replicas=1)."""
    cluster_topology.ensure_up()
    return cluster_topology.replicas


def create(base_url: str) -> str:
    r = httpx.post(f"{base_url}/v1/models/{MODEL}/sessions", timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def test_sessions_across_slots_alternating_replicas_equal_stateless(
    cluster: RedisClusterProcesses, replicas: list[ServiceProcess]
) -> None:
    rng = np.random.default_rng(21)
    # one session per master: ids are random, so create until every master holds one
    by_master: dict[int, str] = {}
    for i in range(60):
        sid = create(replicas[i % 2].url)
        by_master.setdefault(cluster.master_for(f"{PREFIX}s:{{{sid}}}").port, sid)
        if len(by_master) == 3:
            break
    assert len(by_master) == 3, by_master
    sessions = list(by_master.values())
    clients = [httpx.Client(base_url=r.url, timeout=10) for r in replicas]
    try:
        for sid in sessions[:3]:
            sequence = raw_inputs(rng, 40)
            outputs, position = [], 0
            for i, chunk in enumerate(np.array_split(sequence, 8)):
                data = step_with_retry(clients[i % 2], sid, chunk, position)
                outputs.append(np.asarray(data["outputs"]))
                position = data["position"]
            expected, state = stateless(replicas[0].url, sequence)
            assert_close(np.concatenate(outputs), expected)
            stored_position, stored_state = session_state(replicas[1].url, sid)
            assert stored_position == 40
            assert_state_close(stored_state, state)
    finally:
        for c in clients:
            c.close()
    text = httpx.get(f"{replicas[0].admin_url}/metrics", timeout=5).text
    assert "seqserve_sessions_active" in text


def test_the_cluster_store_keeps_a_sessions_start_time(cluster: RedisClusterProcesses) -> None:
    """The start time is a field of the session's hash (written by the create script, read with
    the record, never by a save), on the cluster as on a single Redis."""
    from service.sessions.redis_cluster import RedisClusterSessionStore
    from tests.service.test_session_start import keeps_the_start

    async def go() -> None:
        store = RedisClusterSessionStore(f"{cluster.url}?prefix=start:", stats_interval=0)
        try:
            await keeps_the_start(store)
        finally:
            await store.close()

    asyncio.run(go())


def test_bulk_steps_over_many_slots(replicas: list[ServiceProcess]) -> None:
    rng = np.random.default_rng(22)
    sessions = [create(replicas[0].url) for _ in range(40)]
    x = raw_inputs(rng, 2, batch=len(sessions)).astype(np.float32)
    for step in range(2):
        body = {
            "steps": [
                {"session_id": sid, "inputs": x[i, step : step + 1].tolist(), "position": step}
                for i, sid in enumerate(sessions)
            ]
        }
        r = httpx.post(f"{replicas[step % 2].url}/v1/models/{MODEL}/sessions/steps", json=body, timeout=30)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [res.get("status", 200) for res in results] == [200] * len(sessions), results
        assert [res["position"] for res in results] == [step + 1] * len(sessions)
    r = httpx.post(f"{replicas[1].url}/v1/models/{MODEL}/predict", json={"inputs": x.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    whole = np.asarray(r.json()["outputs"])
    for sid in sessions[:5]:
        position, _ = session_state(replicas[1].url, sid)
        assert position == 2
    # the last bulk answer carried step 2's outputs; compare them with the whole-sequence prediction
    assert_close(np.asarray([res["outputs"][0] for res in results]), whole[:, 1])


def test_master_killed_mid_stream_loses_no_acknowledged_step(
    cluster: RedisClusterProcesses, replicas: list[ServiceProcess]
) -> None:
    rng = np.random.default_rng(23)
    sid = create(replicas[0].url)
    victim = cluster.master_for(f"{PREFIX}s:{{{sid}}}")
    sequence = raw_inputs(rng, 60)
    chunks = np.array_split(sequence, 30)
    clients = [httpx.Client(base_url=r.url, timeout=10) for r in replicas]
    failures: list[str] = []
    acknowledged = 0

    def restart_after_failover() -> None:
        """As an orchestrator would: once the replica took over, the crashed process comes back
        (as a replica of the promoted master), so that WAIT 1 can be satisfied again."""
        cluster.wait_failover(victim)
        victim.start()

    restarter = threading.Thread(target=restart_after_failover)
    try:
        position, outputs = 0, []
        for i, chunk in enumerate(chunks):
            if i == 10:
                victim.kill()
                restarter.start()
            data = step_with_retry(clients[i % 2], sid, chunk, position, failures)
            outputs.append(np.asarray(data["outputs"]))
            position = data["position"]
            acknowledged += len(chunk)
        assert failures, "the kill should have been seen by the client as 5xx answers"
        stored_position, stored_state = session_state(replicas[1].url, sid)
        assert stored_position == acknowledged == len(sequence)
        expected, state = stateless(replicas[0].url, sequence)
        assert_close(np.concatenate(outputs), expected)
        assert_state_close(stored_state, state)
        ready = httpx.get(f"{replicas[0].url}/v1/health/sessions", timeout=5)
        assert ready.status_code == 200, ready.text
        text = httpx.get(f"{replicas[0].admin_url}/metrics", timeout=5).text
        assert "seqserve_session_store_node_up{" in text, text[-2000:]
    finally:
        for c in clients:
            c.close()
        if restarter.is_alive() or restarter.ident is not None:
            restarter.join(60)
        print("failures seen by the client:", failures[:10], len(failures))


async def test_bulk_loads_go_as_one_pipeline_per_master(
    cluster: RedisClusterProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.sessions.base import SessionRecord
    from service.sessions.redis import RedisSessionStore
    from service.sessions.redis_cluster import RedisClusterSessionStore

    singles: list[str] = []
    original = RedisSessionStore.load

    async def counted(self: RedisSessionStore, session_id: str) -> SessionRecord:
        singles.append(session_id)
        return await original(self, session_id)

    monkeypatch.setattr(RedisSessionStore, "load", counted)
    store = RedisClusterSessionStore(cluster.url + "?wait_replicas=1&prefix=pipe:", stats_interval=0)
    try:
        ids = [f"bulk-{i}" for i in range(30)]
        now = time.time()
        for i, sid in enumerate(ids):
            state = (np.full((2, 4), i, np.float32),)
            await store.create(SessionRecord(sid, "m", 1, i, state, 60.0, now + 60, now))
        await store.load_many(ids)  # may fall back per item while a master lacks the script
        singles.clear()
        results = await store.load_many([*ids, "missing"])
        assert singles == [], "every load should have gone through the pipeline"
        assert [r.position for r in results[:-1]] == list(range(30))  # type: ignore[union-attr]
        assert [float(r.state[0][0, 0]) for r in results[:-1]] == [float(i) for i in range(30)]  # type: ignore[union-attr]
        assert type(results[-1]).__name__ == "SessionNotFound"
    finally:
        await store.close()


async def test_bulk_saves_go_as_one_pipeline_per_master_without_wait(
    cluster: RedisClusterProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without wait_replicas, saves are pipelined like loads (one round trip per master); each
    answer is the single save's: written, or superseded with the current record."""
    from service.sessions.base import SessionRecord, Superseded
    from service.sessions.redis import RedisSessionStore
    from service.sessions.redis_cluster import RedisClusterSessionStore

    singles: list[str] = []
    original = RedisSessionStore.save

    async def counted(self: RedisSessionStore, record: SessionRecord, expected_position: int) -> None:
        singles.append(record.session_id)
        await original(self, record, expected_position)

    monkeypatch.setattr(RedisSessionStore, "save", counted)
    store = RedisClusterSessionStore(cluster.url + "?prefix=pipesave:", stats_interval=0, cache_bytes=0)
    try:
        ids = [f"save-{i}" for i in range(30)]
        now = time.time()
        for sid in ids:
            await store.create(SessionRecord(sid, "m", 1, 0, (np.zeros((2, 4), np.float32),), 60.0, now + 60, now))
        first = await store.load_many(ids)
        for r in first:
            r.position = 1  # type: ignore[union-attr]
        assert await store.save_many([(r, 0) for r in first]) == [None] * 30  # type: ignore[misc]
        singles.clear()  # the scripts are cached on every master now
        records = await store.load_many(ids)
        for k, r in enumerate(records):
            r.position, r.state = 2, (np.full((2, 4), k, np.float32),)  # type: ignore[union-attr]
        stale = copy.copy(first[0])  # a write planned on position 0, which is gone
        stale.token = ""  # type: ignore[union-attr]
        errors = await store.save_many([(r, 1) for r in records[1:]] + [(stale, 0)])  # type: ignore[misc]
        assert singles == [], "every save should have gone through the pipeline"
        assert errors[:-1] == [None] * 29
        assert isinstance(errors[-1], Superseded) and errors[-1].current is not None
        assert errors[-1].current.position == 1
        after = await store.load_many(ids[1:])
        assert [float(r.state[0][0, 0]) for r in after] == [float(k) for k in range(1, 30)]  # type: ignore[union-attr]
        assert [r.position for r in after] == [2] * 29  # type: ignore[union-attr]
    finally:
        await store.close()


def test_a_shard_down_is_503_and_heals_without_a_restart(
    cluster: RedisClusterProcesses, repository: Path, tmp_path: Path
) -> None:
    """One master and its replica killed: no node serves their slots. Readiness (with
    SEQSERVE_READY_REQUIRES_STORE) and /v1/health/sessions say 503, the shard's sessions are a
    clean 503 while the other shards' are served, the node's metrics show it; after both nodes
    are restarted (AOF) the same process serves the shard's sessions again."""
    prefix = "shard:"
    env = {"SEQSERVE_SESSION_STORE": f"{cluster.url}?prefix={prefix}", "SEQSERVE_READY_REQUIRES_STORE": "true"}
    with ServiceProcess(repository, tmp_path, env) as svc, httpx.Client(base_url=svc.url, timeout=10) as client:
        by_master: dict[int, str] = {}
        for _ in range(60):
            sid = create(svc.url)
            by_master.setdefault(cluster.master_for(f"{prefix}s:{{{sid}}}").port, sid)
            if len(by_master) == 2:
                break
        (down_port, down_sid), (_, up_sid) = by_master.items()
        master = next(n for n in cluster.nodes if n.port == down_port)
        replica = cluster.replica_of(master)
        one_step = {"inputs": [[20.0, 500.0, 12.0]], "position": 0}
        replica.kill()  # first, so that nothing takes over the master's slots
        master.kill()
        try:
            health = client.get("/v1/health/sessions")
            assert health.status_code == 503, health.text
            assert health.json() == {
                "error": "session store unavailable",
                "code": "session_store_unavailable",
                "store": "redis-cluster",
                "available": False,
            }
            assert client.get("/v2/health/ready").status_code == 503
            down = client.post(f"/v1/sessions/{down_sid}/steps", json=one_step)
            assert down.status_code == 503, down.text
            assert down.json() == {"error": "session store unavailable", "code": "session_store_unavailable"}
            up = client.post(f"/v1/sessions/{up_sid}/steps", json=one_step)
            assert up.status_code == 200, up.text  # the other shards keep serving
            predict = client.post(f"/v1/models/{MODEL}/predict", json={"inputs": [one_step["inputs"]]})
            assert predict.status_code == 200, predict.text
            metrics = httpx.get(f"{svc.admin_url}/metrics", timeout=10).text
            node = f'node="127.0.0.1:{down_port}"'
            assert f"seqserve_session_store_node_up{{{node}}} 0.0" in metrics, metrics[-3000:]
            errors = re.search(rf"^seqserve_session_store_node_errors_total\{{{node}\}} (\S+)$", metrics, re.M)
            assert errors is not None and float(errors.group(1)) >= 1, metrics[-3000:]
            assert re.search(r"^seqserve_session_store_node_latency_seconds_count\{node=", metrics, re.M)
        finally:
            master.start()
            replica.start()
        cluster.wait_healthy()
        deadline = time.monotonic() + 30
        while client.get("/v1/health/sessions").status_code != 200:
            assert time.monotonic() < deadline, "the store did not come back"
            time.sleep(0.2)
        assert client.get("/v2/health/ready").status_code == 200
        again = client.post(f"/v1/sessions/{down_sid}/steps", json=one_step)
        assert again.status_code == 200, again.text
        assert again.json()["position"] == 1


async def test_quota_holds_under_concurrent_creates_deletes_and_expiry_through_two_stores(
    cluster: RedisClusterProcesses,
) -> None:
    """Two stores (as two replicas) create and delete sessions of one model concurrently
    against a per-model limit of 5. Each admitted session certainly existed from its create's
    answer until its delete was sent; those intervals never overlap more than 5 deep. Then
    sessions that expire free their slots without any delete."""
    import asyncio
    import random

    from service.core.errors import TooManySessions
    from service.sessions.base import Quota, SessionRecord, new_session_id
    from service.sessions.redis_cluster import RedisClusterSessionStore

    limit = 5
    quota = Quota(per_model=limit)
    stores = [RedisClusterSessionStore(cluster.url + "?prefix=qstress:", stats_interval=0) for _ in range(2)]
    held: list[tuple[float, float]] = []
    refused = 0

    def record(ttl: float) -> SessionRecord:
        now = time.time()
        return SessionRecord(new_session_id(), "m", 1, 0, (np.zeros((1, 2), np.float32),), ttl, now + ttl, now)

    async def worker(seed: int) -> None:
        nonlocal refused
        rng = random.Random(seed)
        for _ in range(12):
            rec = record(60.0)
            try:
                await stores[rng.randrange(2)].create(rec, quota=quota)
            except TooManySessions:
                refused += 1
                await asyncio.sleep(rng.uniform(0, 0.01))
                continue
            created = time.monotonic()
            # held long enough that ten workers want more than `limit` sessions at once, however
            # fast the creates are: the limit must be reached for the test to test it
            await asyncio.sleep(rng.uniform(0.03, 0.08))
            deleting = time.monotonic()
            assert await stores[rng.randrange(2)].delete(rec.session_id)
            held.append((created, deleting))

    try:
        await asyncio.gather(*(worker(k) for k in range(10)))
        events = sorted([(t, 1) for t, _ in held] + [(t, -1) for _, t in held])
        deepest = depth = 0
        for _, delta in events:
            depth += delta
            deepest = max(deepest, depth)
        assert deepest <= limit, deepest
        assert refused > 0 and len(held) >= 2 * limit, (refused, len(held))
        # every slot is free again, and expiry frees slots the moment sessions expire
        short = [record(0.5) for _ in range(limit)]
        for k, rec in enumerate(short):
            await stores[k % 2].create(rec, quota=quota)
        with pytest.raises(TooManySessions):
            await stores[0].create(record(60.0), quota=quota)
        await asyncio.sleep(0.7)
        for k in range(limit):
            rec = record(60.0)
            await stores[k % 2].create(rec, quota=quota)
            assert await stores[1 - k % 2].delete(rec.session_id)
    finally:
        for store in stores:
            await store.close()


async def test_after_a_failover_wait_replicas_refuses_writes_and_degrade_accepts_them(
    cluster: RedisClusterProcesses,
) -> None:
    """A master killed and failed over leaves its promoted replica without replicas: with
    wait_replicas=1 that shard's writes are 503 (counted, and named by the health detail); with
    degrade=true they are acknowledged by the master alone (counted as degraded) until the old
    master rejoins as a replica, after which writes wait for it again."""
    from service.core.errors import StoreUnavailable
    from service.sessions.base import SessionRecord
    from service.sessions.redis_cluster import RedisClusterSessionStore

    options = "?wait_replicas=1&prefix=degrade:"
    strict = RedisClusterSessionStore(cluster.url + options, stats_interval=0, wait_timeout=0.3, cache_bytes=0)
    lenient = RedisClusterSessionStore(
        cluster.url + options + "&degrade=true", stats_interval=0, wait_timeout=0.3, cache_bytes=0
    )
    now = time.time()
    record = SessionRecord("deg-1", "m", 1, 0, (np.zeros((2, 4), np.float32),), 60.0, now + 60, now)

    async def step(store: RedisClusterSessionStore, value: float) -> None:
        current = await store.load(record.session_id)
        current.state = (np.full((2, 4), value, np.float32),)
        current.position += 1
        current.token = f"t{value}"
        await store.save(current, current.position - 1)

    try:
        await strict.create(record)
        await step(strict, 1.0)
        assert strict.stats()["wait_refused"] == 0
        victim = cluster.master_for(strict._hash_key(record.session_id))
        promoted = cluster.replica_of(victim)
        victim.kill()
        cluster.wait_failover(victim)
        deadline = time.monotonic() + 20
        refused: StoreUnavailable | None = None
        while time.monotonic() < deadline:  # connection errors until the client relearns the layout
            try:
                await step(strict, 2.0)
            except StoreUnavailable as exc:
                if "replicas confirmed" in exc.message:
                    refused = exc
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("a shard without replicas accepted a write with wait_replicas=1")
        assert refused is not None, "the write never reached the promoted master"
        assert "degrade=true" in refused.message
        assert strict.stats()["wait_refused"] >= 1
        await strict.ping()
        node = f"127.0.0.1:{promoted.port}"
        detail = strict.detail()
        assert detail["shards_short_of_replicas"] == [node] and detail["replicas"][node] == 0
        assert "refused (503)" in detail["warning"]
        assert strict.stats()[f"node_replicas:{node}"] == 0

        for _ in range(100):  # the lenient store also has to learn the new layout first
            try:
                await step(lenient, 3.0)
                break
            except StoreUnavailable:
                await asyncio.sleep(0.2)
        assert lenient.stats()["degraded_writes"] == 1 and lenient.stats()["wait_refused"] == 0
        assert (await strict.load(record.session_id)).state[0][0, 0] == 3.0
        await lenient.ping()
        assert "degrade=true" in lenient.detail()["warning"]

        cluster.ensure_up()  # the old master rejoins as the promoted one's replica
        await asyncio.sleep(1.1)  # a short shard's count is read again at most once a second
        await step(lenient, 4.0)
        await step(strict, 5.0)
        assert lenient.stats()["degraded_writes"] == 1, "with its replica back, a write waits for it again"
        await strict.ping()
        assert strict.detail()["shards_short_of_replicas"] == []
    finally:
        await strict.close()
        await lenient.close()

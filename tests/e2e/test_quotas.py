"""Session quotas with two replicas on one Redis and on a Redis Cluster: exact under concurrent
creates, freed by a DELETE at once and by expiry the moment it happens; per key and per model;
and readiness while Redis is down (predictions go on, sessions are 503, the store is reported
apart), or, on the cluster, while one shard (its master and replica) is down."""

from __future__ import annotations

import concurrent.futures
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.redis import RedisProcess
from tests.support.redis_cluster import RedisClusterProcesses
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

KEY_A = "quota-key-a-0123456789"
KEY_B = "quota-key-b-0123456789"
PER_MODEL, PER_KEY = 6, 4


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same checks on one redis-server and on a 3-master Redis Cluster (quota sets in
    slots of their own, sessions spread over every master)."""
    if request.param == "redis":
        with RedisProcess(tmp_path_factory.mktemp("quota-redis")) as redis:
            yield redis.url
    else:
        cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
        cluster.ensure_up()
        yield cluster.url + "?prefix=quotas:"


@pytest.fixture(scope="module")
def replicas(
    store_url: str, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    root = tmp_path_factory.mktemp("quotas")
    env = {
        "SEQSERVE_SESSION_STORE": store_url,
        "SEQSERVE_API_KEYS": f"{KEY_A},{KEY_B}",
        "SEQSERVE_MAX_SESSIONS_PER_MODEL": str(PER_MODEL),
        "SEQSERVE_MAX_SESSIONS_PER_KEY": str(PER_KEY),
        "SEQSERVE_LOG_LEVEL": "warning",
    }
    procs = [ServiceProcess(repository, root, env) for _ in range(2)]
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: p.start(timeout=120), procs))
        yield procs
    finally:
        for p in procs:
            p.stop()


def create(url: str, key: str, model: str = "gru", **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{model}/sessions", json=body, headers={"X-API-Key": key}, timeout=30)


def delete(url: str, key: str, sid: str) -> int:
    return httpx.delete(f"{url}/v1/sessions/{sid}", headers={"X-API-Key": key}, timeout=30).status_code


def test_concurrent_creates_through_two_replicas_never_exceed_the_quota(replicas: list[ServiceProcess]) -> None:
    urls = itertools.cycle([r.url for r in replicas])
    jobs = [next(urls) for _ in range(24)]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda url: create(url, KEY_A), jobs))
    created = [r.json()["session_id"] for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code == 429]
    assert len(created) == PER_KEY and len(refused) == len(jobs) - PER_KEY, [r.text for r in answers]
    assert {r.json()["limit"] for r in refused} == {"max_sessions_per_key"}
    # A DELETE through one replica frees the slot for a create through the other, at once.
    assert delete(replicas[0].url, KEY_A, created[0]) == 204
    again = create(replicas[1].url, KEY_A)
    assert again.status_code == 201, again.text
    assert create(replicas[0].url, KEY_A).status_code == 429
    # The per-model quota (6) counts both keys: B gets the 2 left, then 429 for the model.
    b_created = [create(replicas[k % 2].url, KEY_B) for k in range(3)]
    assert [r.status_code for r in b_created] == [201, 201, 429]
    assert b_created[2].json()["limit"] == "max_sessions_per_model"
    assert create(replicas[0].url, KEY_B, model="lstm").status_code == 201  # another model
    # B cannot free A's slots: another key's session is "not found".
    assert delete(replicas[1].url, KEY_B, again.json()["session_id"]) == 404
    for sid in [*created[1:], again.json()["session_id"]]:
        assert delete(replicas[1].url, KEY_A, sid) == 204
    for r in b_created[:2]:
        assert delete(replicas[0].url, KEY_B, r.json()["session_id"]) == 204


def test_expiry_frees_a_slot_the_moment_it_happens(replicas: list[ServiceProcess]) -> None:
    started = time.monotonic()
    short = [create(replicas[k % 2].url, KEY_A, ttl_seconds=5.0) for k in range(PER_KEY)]
    assert all(r.status_code == 201 for r in short), [r.text for r in short]
    full = create(replicas[0].url, KEY_A)
    if time.monotonic() - started < 4.5:  # (a very loaded machine may take longer than the TTL)
        assert full.status_code == 429, full.text
    time.sleep(max(0.0, started + 5.5 - time.monotonic()))
    r = create(replicas[1].url, KEY_A)
    assert r.status_code == 201, r.text
    assert delete(replicas[0].url, KEY_A, r.json()["session_id"]) == 204


def test_redis_down_keeps_readiness_and_predictions(repository: Path, tmp_path: Path) -> None:
    with RedisProcess(tmp_path / "redis") as redis:
        plain = ServiceProcess(repository, tmp_path, {"SEQSERVE_SESSION_STORE": redis.url}).start(timeout=120)
        strict_env = {"SEQSERVE_SESSION_STORE": redis.url, "SEQSERVE_READY_REQUIRES_STORE": "true"}
        strict = ServiceProcess(repository, tmp_path, strict_env).start(timeout=120)
        try:
            sid = httpx.post(f"{plain.url}/v1/models/gru/sessions", timeout=10).json()["session_id"]
            redis.stop()
            assert httpx.get(f"{plain.url}/v2/health/ready", timeout=10).status_code == 200
            store = httpx.get(f"{plain.url}/v1/health/sessions", timeout=10)
            assert store.status_code == 503
            assert store.json() == {
                "error": "session store unavailable",
                "code": "session_store_unavailable",
                "store": "redis",
                "available": False,
            }
            predict = httpx.post(
                f"{plain.url}/v1/models/gru/predict", json={"inputs": [[[20.0, 500.0, 12.0]]]}, timeout=10
            )
            assert predict.status_code == 200, predict.text
            step = httpx.post(f"{plain.url}/v1/sessions/{sid}/steps", json={"inputs": [[20.0, 500.0, 12.0]]})
            assert step.status_code == 503
            assert step.json() == {"error": "session store unavailable", "code": "session_store_unavailable"}
            assert str(redis.port) not in step.text and "127.0.0.1" not in step.text
            metrics = httpx.get(f"{plain.admin_url}/metrics", timeout=10).text
            assert "seqserve_session_store_up 0.0" in metrics
            ready = httpx.get(f"{strict.url}/v2/health/ready", timeout=10)
            assert ready.status_code == 503 and ready.json()["error"] == "session store unavailable"
            redis.start()
            assert httpx.get(f"{plain.url}/v1/health/sessions", timeout=10).json()["available"] is True
            assert httpx.get(f"{strict.url}/v2/health/ready", timeout=10).status_code == 200
            assert "seqserve_session_store_up 1.0" in httpx.get(f"{plain.admin_url}/metrics", timeout=10).text
        finally:
            plain.stop()
            strict.stop()

"""Scale-out, as docker-compose.yml runs it, with processes: one redis-server (AOF on), two
service replicas sharing it (SEQSERVE_SESSION_STORE=redis://...), and nginx in front with
service/deploy/nginx.conf (only its listen/upstream includes are rendered with loopback ports).
Every check runs again with a local Redis Cluster (3 masters + 3 replicas, redis+cluster://,
wait_replicas=1) in place of the redis-server: "Redis crashed" kills every node.

Streaming sessions must behave as if there were one server: any replica serves any step, a
replica or Redis dying mid-stream loses nothing and applies nothing twice (the client retries
with the same `position`), concurrent writers are serialised by the check-and-set, and a Redis
outage is a clean 503 that heals by itself.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import raw_inputs
from tests.support.servers import ServiceProcess
from tests.support.topology import Topology, compose_topology

pytestmark = pytest.mark.e2e

MODEL = "lstm"  # h and c; the latest version (2)
RETRY_FOR = 30.0  # seconds a client keeps retrying one step across failures


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def topology(
    request: pytest.FixtureRequest, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    """Once on one redis-server, once on the 3-master, 3-replica Redis Cluster driven as one
    (its crash, outage and restart are every node's; wait_replicas=1)."""
    if request.param == "redis-cluster":
        yield request.getfixturevalue("cluster_topology")
        return
    env = {"SEQSERVE_MAX_STEPS_PER_REQUEST": "1000"}
    with compose_topology(repository, tmp_path_factory.mktemp("scaleout"), env) as topo:
        yield topo


@pytest.fixture
def topo(topology: Topology) -> Iterator[Topology]:
    topology.ensure_up()
    yield topology
    # Captured, so shown only when the test failed.
    for replica in topology.replicas:
        print(f"--- replica {replica.port} log\n{replica.log()[-4000:]}")
    print(f"--- nginx log\n{topology.nginx.log()[-3000:]}\n--- redis log\n{topology.redis.log()[-2000:]}")


# -- client helpers


def create_session(base_url: str) -> str:
    r = httpx.post(f"{base_url}/v1/models/{MODEL}/sessions", timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def step_with_retry(
    client: httpx.Client, session_id: str, inputs: np.ndarray, position: int, failures: list[str] | None = None
) -> dict:
    """The retry-safety contract from the client's side: on a 5xx or a connection error, send
    the same inputs with the same position again until it succeeds. `failures` collects what
    was retried."""
    body = {"inputs": inputs.tolist(), "position": position}
    deadline = time.monotonic() + RETRY_FOR
    while True:
        try:
            r = client.post(f"/v1/sessions/{session_id}/steps", json=body)
            if r.status_code < 500:
                assert r.status_code == 200, r.text
                data = r.json()
                assert data["position"] == position + len(inputs), data
                return data
            failure = f"{r.status_code} {r.text[:80]}"
        except httpx.TransportError as exc:
            failure = type(exc).__name__
        if failures is not None:
            failures.append(failure)
        assert time.monotonic() < deadline, f"step at position {position} did not succeed in {RETRY_FOR}s"
        time.sleep(0.05)


def stateless(base_url: str, sequence: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    r = httpx.post(
        f"{base_url}/v1/models/{MODEL}/predict",
        json={"inputs": [sequence.tolist()], "return_state": True},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    data = r.json()
    state = {name: np.asarray(value)[:, 0, :] for name, value in data["state"].items()}
    return np.asarray(data["outputs"][0]), state


def session_state(base_url: str, session_id: str) -> tuple[int, dict[str, np.ndarray]]:
    r = httpx.get(f"{base_url}/v1/sessions/{session_id}", params={"include_state": "true"}, timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()
    return data["position"], {name: np.asarray(value) for name, value in data["state"].items()}


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    tolerance = 1e-5 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance)


def assert_state_close(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert actual.keys() == expected.keys() == {"h", "c"}
    for name in expected:
        assert_close(actual[name], expected[name])


def steps_served(replica: ServiceProcess) -> float:
    text = httpx.get(f"{replica.admin_url}/metrics", timeout=5).text
    return sum(float(m) for m in re.findall(r"^seqserve_steps_total\{[^}]*\} (\S+)$", text, re.M))


def chunked(rng: np.random.Generator, sequence: np.ndarray, largest: int) -> list[np.ndarray]:
    chunks, start = [], 0
    while start < len(sequence):
        size = int(rng.integers(1, largest + 1))
        chunks.append(sequence[start : start + size])
        start += size
    return chunks


# -- tests


def test_chunks_through_the_balancer_equal_one_stateless_prediction(topo: Topology) -> None:
    rng = np.random.default_rng(11)
    sequence = raw_inputs(rng, 150)
    before = [steps_served(r) for r in topo.replicas]
    session_id = create_session(topo.replicas[0].url)  # created on one replica ...

    # ... stepped through nginx (which sends every step of the session to the replica its id
    # hashes to) and through each replica directly, in turn: every replica serves the session
    # after the other moved it on, so its cached record is stale every time
    outputs, position = [], 0
    urls = [topo.nginx.url, *(r.url for r in topo.replicas)]
    clients = [httpx.Client(base_url=url, timeout=10) for url in urls]
    try:
        for k, chunk in enumerate(chunked(rng, sequence, 9)):
            data = step_with_retry(clients[k % len(clients)], session_id, chunk, position)
            position = data["position"]
            outputs.append(np.asarray(data["outputs"]))
    finally:
        for client in clients:
            client.close()

    expected_outputs, expected_state = stateless(topo.nginx.url, sequence)
    assert_close(np.concatenate(outputs), expected_outputs)
    final_position, state = session_state(topo.replicas[1].url, session_id)
    assert final_position == 150
    assert_state_close(state, expected_state)

    served = [steps_served(r) - b for r, b in zip(topo.replicas, before, strict=True)]
    assert sum(served) == 150, served
    assert all(n > 0 for n in served), f"both replicas should have served: {served}"


def test_replica_killed_and_redis_restarted_mid_stream(topo: Topology) -> None:
    """SIGKILL a replica while requests are in flight, restart it, then crash and restart
    Redis: the client retries with the same position, and the result is exactly the stateless
    run (nothing lost, nothing applied twice)."""
    rng = np.random.default_rng(12)
    sequence = raw_inputs(rng, 240)
    chunks = chunked(rng, sequence, 6)
    assert len(chunks) > 40
    session_id = create_session(topo.nginx.url)
    victim = topo.replicas[1]
    background: list[threading.Thread] = []

    def later(delay: float, action) -> None:
        def run() -> None:
            time.sleep(delay)
            action()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        background.append(thread)

    def crash_redis() -> None:
        topo.redis.kill()  # appendfsync always: every acknowledged write is on disk
        time.sleep(0.5)  # steps meanwhile get 503 and are retried
        topo.redis.start()

    outputs, position, failures = [], 0, []
    with httpx.Client(base_url=topo.nginx.url, timeout=10) as client:
        for i, chunk in enumerate(chunks):
            if i == 8:
                later(0.01, victim.kill)  # lands during the next requests
            if i == 16:
                background[-1].join()
                later(0.0, victim.start)  # comes back while the stream goes on
            if i == 30:
                background[-1].join()
                assert victim.proc.poll() is None
                later(0.01, crash_redis)
            data = step_with_retry(client, session_id, chunk, position, failures)
            position = data["position"]
            outputs.append(np.asarray(data["outputs"]))
    for thread in background:
        thread.join()
    print("retried:", failures)
    assert any(f.startswith("503") for f in failures), "the Redis crash should have been seen as 503s"

    expected_outputs, expected_state = stateless(topo.nginx.url, sequence)
    assert_close(np.concatenate(outputs), expected_outputs)
    final_position, state = session_state(topo.nginx.url, session_id)
    assert final_position == len(sequence)
    assert_state_close(state, expected_state)
    for replica in topo.replicas:  # both replicas and Redis are healthy again
        assert httpx.get(f"{replica.url}/v2/health/ready", timeout=5).status_code == 200


def test_concurrent_steps_through_both_replicas_apply_exactly_once(topo: Topology) -> None:
    """Two clients, one per replica, step the same session at once, each sending the position
    it believes in. Every step is applied exactly once or refused with 409; the applied steps
    form one chain, and the final state is the sequential run of exactly those steps."""
    session_id = create_session(topo.nginx.url)
    per_client = 15
    barrier = threading.Barrier(2)

    def client_run(index: int) -> tuple[list[tuple[int, int, np.ndarray, np.ndarray]], int]:
        rng = np.random.default_rng(100 + index)
        applied, refused, believed = [], 0, 0
        with httpx.Client(base_url=topo.replicas[index].url, timeout=10) as client:
            barrier.wait()
            for _ in range(per_client):
                inputs = raw_inputs(rng, int(rng.integers(1, 4)))
                r = client.post(
                    f"/v1/sessions/{session_id}/steps", json={"inputs": inputs.tolist(), "position": believed}
                )
                if r.status_code == 409:
                    assert r.json()["code"] == "position_conflict"
                    refused += 1
                    believed = r.json()["position"]
                    continue
                assert r.status_code == 200, r.text
                data = r.json()
                assert data["position"] == believed + len(inputs)
                applied.append((believed, data["position"], inputs, np.asarray(data["outputs"])))
                believed = data["position"]
        return applied, refused

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(client_run, range(2)))

    applied = sorted((step for steps, _ in results for step in steps), key=lambda s: s[1])
    refused = sum(n for _, n in results)
    print(f"applied {len(applied)}, refused {refused}")
    assert len(applied) + refused == 2 * per_client
    # The two clients really contended: a refusal was seen, or both got steps in. (Which client
    # wins each race is timing; one may win them all, and that is still exactly-once.)
    assert refused > 0 or all(steps for steps, _ in results), "the clients never overlapped"
    position = 0
    for before, after, _, _ in applied:  # one chain: no gaps, no step applied on a stale state
        assert before == position, [(b, a) for b, a, _, _ in applied]
        position = after

    final_position, state = session_state(topo.nginx.url, session_id)
    assert final_position == position
    sequence = np.concatenate([inputs for _, _, inputs, _ in applied])
    expected_outputs, expected_state = stateless(topo.nginx.url, sequence)
    assert_state_close(state, expected_state)
    assert_close(np.concatenate([outputs for _, _, _, outputs in applied]), expected_outputs)


def test_redis_outage_is_503_and_heals_without_restarting_the_service(topo: Topology) -> None:
    rng = np.random.default_rng(13)
    session_id = create_session(topo.nginx.url)
    first, second = raw_inputs(rng, 4), raw_inputs(rng, 3)
    with httpx.Client(base_url=topo.nginx.url, timeout=10) as client:
        step_with_retry(client, session_id, first, 0)

    topo.redis.stop()
    try:
        for replica in topo.replicas:
            # Predictions can still be served: ready stays 200; the store is reported apart.
            assert httpx.get(f"{replica.url}/v2/health/ready", timeout=5).status_code == 200
            store = httpx.get(f"{replica.url}/v1/health/sessions", timeout=5)
            assert store.status_code == 503 and store.json()["available"] is False, store.text
            for r in (
                httpx.post(
                    f"{replica.url}/v1/sessions/{session_id}/steps",
                    json={"inputs": second.tolist(), "position": 4},
                    timeout=5,
                ),
                httpx.get(f"{replica.url}/v1/sessions/{session_id}", timeout=5),
                httpx.post(f"{replica.url}/v1/models/{MODEL}/sessions", timeout=5),
            ):
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "session_store_unavailable"
                assert r.json()["error"] == "session store unavailable"  # no host or port
            # Stateless prediction does not need Redis.
            assert httpx.post(
                f"{replica.url}/v1/models/{MODEL}/predict", json={"inputs": [first.tolist()]}, timeout=5
            ).is_success
        through = httpx.post(
            f"{topo.nginx.url}/v1/sessions/{session_id}/steps",
            json={"inputs": second.tolist(), "position": 4},
            timeout=10,
        )
        assert through.status_code == 503 and through.json()["code"] == "session_store_unavailable"
        assert all(r.proc.poll() is None for r in topo.replicas), "the replicas stay up"
    finally:
        topo.redis.start()

    # Redis is back: the same processes serve again, and the session (AOF) is intact.
    for replica in topo.replicas:
        assert httpx.get(f"{replica.url}/v2/health/ready", timeout=5).status_code == 200
    r = httpx.post(
        f"{topo.replicas[0].url}/v1/sessions/{session_id}/steps",
        json={"inputs": second.tolist(), "position": 4},
        timeout=5,
    )
    assert r.status_code == 200, r.text
    assert r.json()["position"] == 7
    final_position, state = session_state(topo.replicas[1].url, session_id)
    _, expected_state = stateless(topo.nginx.url, np.concatenate([first, second]))
    assert final_position == 7
    assert_state_close(state, expected_state)

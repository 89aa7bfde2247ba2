"""The Python client through a lossy network: a proxy that drops requests and replies at
random sits between the client and nginx, which balances two replicas sharing redis-server.
The client streams the bundled electricity series (4,032 half-hourly readings) through one
session, over REST (chunks of random sizes) and over the pipelined WebSocket; its outputs
must equal one stateless predict of the whole series and the session must end exactly at
the number of readings: nothing applied twice, nothing skipped."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from seqserve import Client, RetryPolicy
from tests.support.chaos_proxy import ChaosProxy
from tests.support.demand import electricity, export_demand_model
from tests.support.topology import Topology, compose_topology

pytestmark = pytest.mark.e2e

PATIENT = RetryPolicy(attempts=60, base=0.01, cap=0.2, deadline=60.0)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    repository = tmp_path_factory.mktemp("chaos-repo")
    export_demand_model(repository)
    with compose_topology(repository, tmp_path_factory.mktemp("chaos"), {"SEQSERVE_LOG_LEVEL": "warning"}) as topo:
        yield topo


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return electricity()


@pytest.fixture(scope="module")
def whole(topology: Topology, series: np.ndarray) -> np.ndarray:
    """The reference: one stateless predict of the whole series, straight to a replica."""
    r = httpx.post(
        f"{topology.replicas[0].url}/v1/models/demand/predict", json={"inputs": [series.tolist()]}, timeout=60
    )
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"][0], dtype=np.float32)


def final_position(topology: Topology, session_id: str) -> int:
    r = httpx.get(f"{topology.replicas[1].url}/v1/sessions/{session_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["position"]


def assert_same(outputs: np.ndarray, whole: np.ndarray) -> None:
    assert outputs.shape == whole.shape
    np.testing.assert_allclose(outputs, whole, rtol=0, atol=1e-5 * max(1.0, float(np.abs(whole).max())))


def test_rest_steps_through_a_lossy_network(topology, series, whole):
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 13, size=len(series))
    proxy = ChaosProxy(topology.nginx.port, seed=11, drop_request=0.02, drop_reply=0.04)
    with proxy, Client(proxy.url, retry=PATIENT) as client:
        session = client.session("demand")
        outputs, t = [], 0
        for n in sizes:
            if t >= len(series):
                break
            outputs.append(session.step(series[t : t + n]))
            t += int(n)
        assert session.position == len(series)
        proxy.enabled = False
        assert final_position(topology, session.session_id) == len(series)
    assert proxy.faults["reply_dropped"] >= 10 and proxy.faults["request_dropped"] >= 5, proxy.faults
    assert session.stats["resent"] >= 10, session.stats
    assert_same(np.concatenate(outputs), whole)


def test_pipelined_websocket_stream_through_a_lossy_network(topology, series, whole):
    # Faults are drawn per socket read, and how many replies one read carries depends on how
    # the server batches pipelined messages (and on the machine's load): the drop rate is set
    # so that even with 16 replies per read a run sees several lost replies.
    proxy = ChaosProxy(topology.nginx.port, seed=5, drop_request=0.005, drop_reply=0.05)
    with proxy, Client(proxy.url, retry=PATIENT) as client:
        session = client.session("demand", checkpoint_every=500)
        outputs = list(session.stream(series, window=16))  # one reading per message
        assert session.position == len(series)
        proxy.enabled = False
        assert final_position(topology, session.session_id) == len(series)
    assert proxy.faults["reply_dropped"] >= 5, proxy.faults
    # replies of applied messages were lost, and their outputs recovered, not re-applied
    assert session.stats["reconnects"] >= 5 and session.stats["recomputed"] > 0, session.stats
    assert_same(np.stack(outputs), whole)

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.models import make_repository
from tests.support.redis_cluster import RedisClusterProcesses, WholeCluster
from tests.support.servers import ServiceProcess
from tests.support.tier import starts
from tests.support.topology import Topology, compose_topology


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
@starts("a Redis Cluster")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """One local Redis Cluster (3 masters + 3 replicas) for every module that runs against one
    (each under its own key prefix; a test that kills nodes leaves the cluster healthy)."""
    with RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
@starts("service processes, nginx and a Redis Cluster")
def cluster_topology(
    redis_cluster: RedisClusterProcesses, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    """Two service replicas and nginx on the shared Redis Cluster (wait_replicas=1), driven as
    one store: shared by the suites that check scale-out and faults on the cluster too."""
    redis_cluster.ensure_up()
    store = WholeCluster(redis_cluster, prefix="seqserve:", wait_replicas=1)
    env = {"SEQSERVE_MAX_STEPS_PER_REQUEST": "1000", "SEQSERVE_LOG_LEVEL": "warning"}
    with compose_topology(repository, tmp_path_factory.mktemp("cluster-topology"), env, store) as topology:
        yield topology


@pytest.fixture(scope="module")
@starts("a service process")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One real uvicorn process per test module, with small limits so limit errors are cheap."""
    env = {
        "SEQSERVE_MAX_STEPS_PER_REQUEST": "500",
        "SEQSERVE_MAX_BATCH_SIZE": "16",
        "SEQSERVE_MAX_BODY_BYTES": "2000000",
        # Messages between the body limit and this get a 422 frame; beyond it the server closes 1009.
        "SEQSERVE_WS_MAX_MESSAGE_BYTES": "4000000",
    }
    with ServiceProcess(repository, tmp_path_factory.mktemp("logs"), env) as proc:
        yield proc


@pytest.fixture
def client(server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c

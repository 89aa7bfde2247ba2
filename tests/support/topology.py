"""The docker-compose topology as local processes: one redis-server (AOF on), two service
replicas sharing it, and nginx in front with service/deploy/nginx.conf. The same topology runs
on a Redis Cluster (tests.support.redis_cluster.WholeCluster) for the suites that check both."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.nginx import NginxProcess
from tests.support.redis import RedisProcess
from tests.support.redis_cluster import WholeCluster
from tests.support.servers import ServiceProcess


@dataclass
class Topology:
    repository: Path
    redis: RedisProcess | WholeCluster
    replicas: list[ServiceProcess]
    nginx: NginxProcess

    def ensure_up(self) -> None:
        """Bring back whatever a test stopped, killed or paused."""
        if self.redis.running:
            self.redis.resume()
        else:
            self.redis.start()
        for replica in self.replicas:
            if replica.proc is None or replica.proc.poll() is not None:
                replica.start()


@contextmanager
def compose_topology(
    repository: Path, root: Path, env: Mapping[str, str] | None = None, store: WholeCluster | None = None
) -> Iterator[Topology]:
    """With `store` (a Redis Cluster driven as one), the replicas share it instead of a
    redis-server of their own (which it does not stop: the cluster outlives the topology)."""
    redis = store or RedisProcess(root / "redis").start()
    replica_env = {"SEQSERVE_SESSION_STORE": redis.url, **(env or {})}
    replicas = [ServiceProcess(repository, root, replica_env) for _ in range(2)]
    nginx = NginxProcess(root / "nginx", [r.port for r in replicas])
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # start both replicas at once
            list(pool.map(lambda r: r.start(), replicas))
        nginx.start()
        yield Topology(repository, redis, replicas, nginx)
    finally:
        nginx.stop()
        for replica in replicas:
            replica.stop()
        if store is None:
            redis.stop()
        else:
            store.resume()

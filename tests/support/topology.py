"""The docker-compose topology as local processes: one redis-server (AOF on), two service
replicas sharing it, and nginx in front with service/deploy/nginx.conf."""

from __future__ import annotations

import concurrent.futures
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.nginx import NginxProcess
from tests.support.redis import RedisProcess
from tests.support.servers import ServiceProcess


@dataclass
class Topology:
    repository: Path
    redis: RedisProcess
    replicas: list[ServiceProcess]
    nginx: NginxProcess

    def ensure_up(self) -> None:
        """Bring back whatever a test stopped, killed or paused."""
        if self.redis.proc is not None and self.redis.running:
            self.redis.proc.send_signal(signal.SIGCONT)
        else:
            self.redis.start()
        for replica in self.replicas:
            if replica.proc is None or replica.proc.poll() is not None:
                replica.start()


@contextmanager
def compose_topology(repository: Path, root: Path, env: Mapping[str, str] | None = None) -> Iterator[Topology]:
    redis = RedisProcess(root / "redis").start()
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
        if redis.proc is not None and redis.running:
            redis.proc.send_signal(signal.SIGCONT)  # a paused server cannot stop
        redis.stop()

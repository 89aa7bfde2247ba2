"""A real local Redis Cluster for tests: 3 masters + 3 replicas of redis-server in cluster
mode on loopback ports (AOF on), created with `redis-cli --cluster create`.

with RedisClusterProcesses(tmp_path) as cluster:
    cluster.url                  # redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...
    cluster.master_for(key)      # the node process serving the key's slot now
    cluster.kill(node)           # SIGKILL
    cluster.wait_healthy()       # every slot served by a live master, each with a synced replica

A small cluster-node-timeout (1000 ms) makes automatic failover of a killed master take a
couple of seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tests.support.faultproxy import FaultProxy
from tests.support.redis import RedisProcess
from tests.support.servers import free_port, require
from tests.support.tier import heavy

NODE_TIMEOUT_MS = 1000


class ClusterNodeProcess(RedisProcess):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.bus_port = free_port()
        self.announce_port: int | None = None  # the port clients are told (a proxy in front)

    @property
    def client_port(self) -> int:
        return self.announce_port or self.port

    def command(self) -> list[str]:
        announce = []
        if self.announce_port:
            announce = ["--cluster-announce-port", str(self.announce_port)]
            announce += ["--cluster-announce-bus-port", str(self.bus_port)]
        return [
            *super().command(),
            *announce,
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-port", str(self.bus_port),
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip

    def cli(self, *args: str, timeout: float = 5.0) -> str:
        out = subprocess.run(
            [require("redis-cli"), "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return out.stdout


class RedisClusterProcesses:
    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [ClusterNodeProcess(directory / f"node{i}") for i in range(2 * masters)]
        self.masters = masters

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.client_port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> RedisClusterProcesses:
        heavy("a Redis Cluster")
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [require("redis-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        self.wait_healthy(timeout)
        return self

    def live(self) -> list[ClusterNodeProcess]:
        return [n for n in self.nodes if n.running]

    def roles(self) -> dict[int, str]:
        """port -> 'master' / 'slave' as each live node reports itself."""
        out = {}
        for node in self.live():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                out[node.port] = node.cli("ROLE").split("\n", 1)[0].strip()
        return out

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok, and there are `masters` live masters, each
        with a replica whose link is up (so WAIT 1 can succeed)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                states = [n.cli("CLUSTER", "INFO") for n in self.live()]
                masters = [n for n in self.live() if n.cli("ROLE").startswith("master")]
                replicated = [n for n in masters if "connected_slaves:1" in n.cli("INFO", "replication")]
                online = all("state=online" in n.cli("INFO", "replication") for n in replicated)
                if (
                    all("cluster_state:ok" in s for s in states)
                    and len(masters) == self.masters
                    and len(replicated) == len(masters)
                    and online
                ):
                    return
                last = f"{len(masters)} masters, {len(replicated)} replicated"
            except (subprocess.SubprocessError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"redis cluster not healthy after {timeout}s: {last}")

    def wait_failover(self, dead: ClusterNodeProcess, timeout: float = 30.0) -> None:
        """Until a live node serves every slot again (the dead master's replica took over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                infos = [n.cli("CLUSTER", "INFO") for n in self.live()]
                if infos and all("cluster_state:ok" in i for i in infos):
                    masters = [n for n in self.live() if n.cli("ROLE").startswith("master")]
                    if len(masters) == self.masters:
                        return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"no failover of node {dead.port} after {timeout}s")

    def master_for(self, key: str) -> ClusterNodeProcess:
        """The live master serving `key`'s slot, from CLUSTER NODES as a live node sees it."""
        probe = self.live()[0]
        slot = int(probe.cli("CLUSTER", "KEYSLOT", key).strip())
        by_port = {n.port: n for n in self.live()}
        for line in probe.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low) and port in by_port:
                    return by_port[port]
        raise LookupError(f"no live master serves slot {slot}")

    def replica_of(self, master: ClusterNodeProcess) -> ClusterNodeProcess:
        """The live node replicating `master` (ROLE: slave, master host, master port, ...)."""
        for node in self.live():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                role = node.cli("ROLE").split("\n")
                if role[0].strip() == "slave" and int(role[2]) == master.port:
                    return node
        raise LookupError(f"no live replica of {master.port}")

    def ensure_up(self, timeout: float = 60.0) -> None:
        """Start whatever a test stopped or killed, resume what it paused; wait until healthy."""
        for node in self.nodes:
            if node.running:
                node.resume()
            else:
                node.start()
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WholeCluster:
    """The cluster driven as if it were one redis-server, for suites written against one:
    kill, stop, start, pause and resume act on every node, and start() returns once the
    cluster is healthy again (AOF with fsync on every write: nothing acknowledged is lost).
    `url` carries a key prefix of its own, so that suites sharing the cluster stay apart."""

    def __init__(self, cluster: RedisClusterProcesses, prefix: str, wait_replicas: int = 0) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.wait_replicas = wait_replicas

    @property
    def url(self) -> str:
        return f"{self.cluster.url}?prefix={self.prefix}&wait_replicas={self.wait_replicas}"

    @property
    def running(self) -> bool:
        return all(n.running for n in self.cluster.nodes)

    def kill(self) -> None:
        for node in self.cluster.nodes:
            node.kill()

    def stop(self) -> None:
        for node in self.cluster.nodes:
            node.stop()

    def start(self) -> WholeCluster:
        self.cluster.ensure_up()
        return self

    def pause(self) -> None:
        for node in self.cluster.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.cluster.nodes:
            node.resume()

    def log(self) -> str:
        return "\n".join(f"[{n.port}] {n.log()[-600:]}" for n in self.cluster.nodes)


class ProxyGroup:
    """One FaultProxy per cluster node, driven as one: the same fault rates on every proxy,
    pause() holds them all, `faults` adds up what they injected."""

    RATES = frozenset({"drop_reply_rate", "reset_rate", "delay_rate", "delay_s"})

    def __init__(self, proxies: list[FaultProxy]) -> None:
        self.__dict__["proxies"] = proxies

    def __setattr__(self, name: str, value: float) -> None:
        if name not in self.RATES:
            raise AttributeError(name)
        for proxy in self.proxies:
            setattr(proxy, name, value)

    @property
    def faults(self) -> Counter[str]:
        """Faults injected by all proxies; a pause of the group counts once."""
        total: Counter[str] = Counter()
        for proxy in self.proxies:
            total += proxy.faults
        total["pause"] = self.proxies[0].faults["pause"]
        return total

    def pause(self, seconds: float) -> None:
        for proxy in self.proxies:
            proxy.pause(seconds)

    def calm(self) -> None:
        for proxy in self.proxies:
            proxy.calm()


@contextlib.contextmanager
def proxied_cluster(directory: Path, seed: int = 0) -> Iterator[tuple[RedisClusterProcesses, ProxyGroup]]:
    """A 3+3 cluster whose nodes announce a fault proxy's port in front of each of them, so
    every client connection (and replication link) goes through a proxy; the cluster bus does
    not (failure detection stays as it is)."""
    cluster = RedisClusterProcesses(directory)
    proxies = [FaultProxy(node.port, seed=seed + i).start() for i, node in enumerate(cluster.nodes)]
    for node, proxy in zip(cluster.nodes, proxies, strict=True):
        node.announce_port = proxy.port
    try:
        cluster.start()
        yield cluster, ProxyGroup(proxies)
    finally:
        for proxy in proxies:
            proxy.calm()
        cluster.stop()
        for proxy in proxies:
            proxy.stop()

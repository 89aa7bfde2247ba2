"""Sessions on Redis Cluster: `redis+cluster://host:port[,host:port...][?wait_replicas=N&prefix=P]`.

The key layout and the Lua scripts are those of the single-server store (service.sessions.redis):
both keys of a session carry the session id as a hash tag, so every script touches one slot
and runs unchanged on whichever master owns that slot. The single-server store's exact
quotas (SEQSERVE_MAX_SESSIONS_PER_MODEL / _PER_KEY) keep sorted sets shared by many sessions,
which no cluster script may touch together with a session's keys: a cluster store refuses to
start with a quota set (not yet designed per slot); its create and delete are the same scripts
without the quota sets. Session counts (`usage`, `count`) SCAN every master.

Bulk steps load every session in one cluster pipeline (redis-py groups the scripts per master:
one round trip per master) and save each session with its own script, sent to its master
concurrently (each save may need its own WAIT).

Durability (`wait_replicas=N`, N >= 1): a session's write (create and every step's save) is
followed by `WAIT N timeout` on the same connection, in one pipeline. The write is
acknowledged to the client only once N replicas hold it, so a failover that promotes one of
those replicas keeps every acknowledged step. When fewer than N replicas confirm within
`wait_timeout`, the answer is 503 (session_store_unavailable) although the write *may have been
applied* on the master: the client resends with the same `position`, and the store's
position check and write tokens resolve the ambiguity (an applied step is replayed, not
applied twice). A re-sent save that finds its token already recorded refreshes the
session's expiry, a propagated write, so the WAIT that follows it also covers the original
write.
The price: a shard with fewer than N live replicas answers its sessions' writes with 503
until a replica is back (e.g. the failed master restarted: it rejoins as a replica of the
promoted one); reads and the other shards are unaffected.

Failover: a dead master is a connection error (503, retried by the client) until the cluster
promotes its replica; the client library then learns the new layout (on the next request
after a connection error, or from a MOVED reply) without a restart. Readiness pings every
master. `stats()` adds one entry per master, `node_up:HOST:PORT` (1/0, from the last
readiness check or usage refresh), exported as `seqserve_session_store_node_up{node=...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.errors import ServiceError, StoreUnavailable
from service.sessions import redis as single
from service.sessions.base import NO_QUOTA, Quota, SessionRecord
from service.sessions.redis import RedisSessionStore, _Script

T = TypeVar("T")
SCHEME = "redis+cluster://"

# A re-sent write that finds itself already applied still propagates one write (an expiry
# refresh), so that the WAIT after it covers the original write, whose reply was lost.
_SAVE_RESENT = "if at then\n"


def _durable(source: str, anchor: str, refresh: str) -> str:
    if anchor not in source:
        raise RuntimeError("the session scripts changed: update service/sessions/redis_cluster.py")
    return source.replace(anchor, refresh, 1)


SAVE = _durable(single.SAVE, _SAVE_RESENT, "if at then\n  redis.call('PEXPIRE', KEYS[1], ARGV[4])\n")

# The single-server create and delete also maintain the quota sets, keys of other slots, which
# a cluster script may not touch. These are the same scripts without them (same KEYS[1..2] and
# ARGV layout; the quota keys, if passed, are ignored); quotas are refused on a cluster store.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_at') == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return 1
  end
  if ARGV[4] ~= '1' then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[9], 'PX', tonumber(ARGV[1]) + tonumber(ARGV[2]))
return 1
"""

DELETE = """
local f = redis.call('HMGET', KEYS[1], 'model', 'owner')
if not f[1] then
  local marker = redis.call('GET', KEYS[2])
  if marker and (ARGV[2] ~= '1' or marker == ARGV[1]) then
    redis.call('DEL', KEYS[2])
    return 1
  end
  return 0
end
if ARGV[2] == '1' and (f[2] or '') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, int]:
    """Seed nodes, key prefix and wait_replicas from a redis+cluster:// URL; ValueError if bad."""
    if not url.startswith(SCHEME):
        raise ValueError(f"a Redis Cluster URL starts with {SCHEME}, got {url!r}")
    parts = urlsplit("redis://" + url[len(SCHEME) :])
    nodes: list[tuple[str, int]] = []
    for item in parts.netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{SCHEME} needs host:port[,host:port...], got {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(query) - {"prefix", "wait_replicas"}
    if unknown:
        raise ValueError(f"unknown {SCHEME} parameters: {sorted(unknown)}")
    wait = query.get("wait_replicas", "0")
    if not wait.isdigit():
        raise ValueError(f"wait_replicas must be a whole number >= 0, got {wait!r}")
    return nodes, query.get("prefix"), int(wait)


class _WaitingScript:
    """A write script followed by `WAIT replicas timeout` on the same connection (pipelined),
    sent straight to the master that owns the keys' slot."""

    def __init__(self, store: RedisClusterSessionStore, source: str) -> None:
        self.store = store
        self.script = _Script(source)

    async def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        direct = self.store._master_for(keys[0])
        result, acked = await self._send(direct, keys, args, self.script.sha)
        if isinstance(result, rex.NoScriptError):
            result, acked = await self._send(direct, keys, args, None)
        if isinstance(result, Exception):
            raise result
        wrote = result == 1 or (isinstance(result, list) and int(result[0]) == 1)
        if wrote and int(acked) < self.store.wait_replicas:
            raise StoreUnavailable(
                f"session store (redis cluster): {acked} of {self.store.wait_replicas} replicas confirmed the "
                "write in time; it may have been applied: retry with the same position"
            )
        return result

    async def _send(self, direct: Redis, keys: list[str], args: list[Any], sha: str | None) -> list[Any]:
        store = self.store
        pipe = direct.pipeline(transaction=False)
        if sha is None:
            pipe.eval(self.script.source, len(keys), *keys, *args)
        else:
            pipe.evalsha(sha, len(keys), *keys, *args)
        pipe.execute_command("WAIT", store.wait_replicas, store.wait_timeout_ms)
        try:
            return await pipe.execute(raise_on_error=False)
        except (rex.ConnectionError, rex.TimeoutError, OSError):
            store._stale = True  # the master may be gone: learn the layout again before the re-send
            raise


class RedisClusterSessionStore(RedisSessionStore):
    """The Redis store over redis-py's cluster client; see the module docstring."""

    kind = "redis-cluster"

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        socket_timeout: float = 1.0,
        connect_timeout: float = 0.5,
        wait_timeout: float = 1.0,
        tombstone_seconds: float = 24 * 3600.0,
        stats_interval: float = 30.0,
    ) -> None:
        nodes, prefix, wait = parse_cluster_url(url)
        # The base class sets up prefix, scripts and counters; its single-server client
        # (lazy: never connected) is swapped for the cluster client.
        super().__init__(
            f"redis://{nodes[0][0]}:{nodes[0][1]}/0",
            prefix=prefix,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            tombstone_seconds=tombstone_seconds,
            stats_interval=stats_interval,
        )
        self._timeouts: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
        if password:
            self._timeouts["password"] = password
        self._redis = RedisCluster(  # type: ignore[assignment]
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            require_full_coverage=False,  # slots of a failed master are 503, the others keep serving
            retry=Retry(NoBackoff(), 0),  # no hidden re-sends: the base class decides them
            decode_responses=False,
            **self._timeouts,
        )
        self.wait_replicas = wait
        self.wait_timeout_ms = max(1, round(wait_timeout * 1000))
        self._direct: dict[str, Redis] = {}
        self._stale = False
        self._nodes_up: dict[str, int] = {}
        self._delete = _Script(DELETE)
        if wait:
            self._save = _WaitingScript(self, SAVE)  # type: ignore[assignment]
            self._create = _WaitingScript(self, CREATE)  # type: ignore[assignment]
        else:
            self._create = _Script(CREATE)

    def _quota_keys(self, model: str, owner: str) -> list[str]:
        return []  # no cross-slot keys: quotas are refused on a cluster store (see make_store)

    async def create(self, record: SessionRecord, replace: bool = False, quota: Quota = NO_QUOTA) -> None:
        if quota.per_model > 0 or quota.per_key > 0:
            raise RuntimeError("per-model/per-key session quotas are not supported on redis+cluster://")
        await super().create(record, replace, quota)

    # -- routing for the WAIT path

    @property
    def _cluster(self) -> RedisCluster:
        """The client __init__ made (the base class declares `_redis` as a plain Redis)."""
        return cast(RedisCluster, self._redis)

    def _master_for(self, key: str) -> Redis:
        node = self._cluster.get_node_from_key(key)
        if node is None:  # no master for the slot (failover): transient, mapped like the others
            raise rex.SlotNotCoveredError(f"no node serves the slot of {key!r}")
        client = self._direct.get(node.name)
        if client is None:
            client = Redis(
                host=node.host,
                port=int(node.port),
                retry=Retry(NoBackoff(), 0),
                retry_on_error=[],
                decode_responses=False,
                **{
                    **self._timeouts,
                    # the reply comes after WAIT's own timeout: the socket must outlast it
                    "socket_timeout": self._timeouts["socket_timeout"] + self.wait_timeout_ms / 1000,
                },
            )
            self._direct[node.name] = client
        return client

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]], attempts: int = 2, timeouts: int = 0) -> T:
        """The base error mapping, plus the cluster's own transient errors (a slot without a
        master during failover, a moved slot) as connection errors: 503, or a re-send."""

        async def attempt() -> T:
            if self._stale:
                self._stale = False
                await self._cluster.nodes_manager.initialize()
            try:
                return await fn()
            except rex.MovedError as exc:
                self._stale = True
                raise rex.ConnectionError(f"slot moved: {exc}") from exc
            except (rex.ClusterDownError, rex.TryAgainError, rex.SlotNotCoveredError) as exc:
                self._stale = True
                raise rex.ConnectionError(str(exc) or type(exc).__name__) from exc
            except rex.RedisClusterException as exc:
                self._stale = True
                raise rex.ConnectionError(str(exc) or type(exc).__name__) from exc
            except (rex.ConnectionError, rex.TimeoutError, OSError):
                self._stale = True
                raise

        return await super()._call(what, attempt, attempts, timeouts)

    # -- bulk

    async def load_many(self, session_ids: list[str]) -> list[SessionRecord | ServiceError]:
        """One pipeline: redis-py groups the loads per master and sends each group in one round
        trip. Items the pipeline could not answer (a script not cached yet, a moved slot) are
        loaded one by one; a pipeline that fails as a whole falls back to one load per id."""
        if len(session_ids) < 2:
            return await super().load_many(session_ids)

        async def run() -> list[Any]:
            pipe = self._redis.pipeline()
            for sid in session_ids:
                pipe.execute_command("EVALSHA", self._load.sha, 2, *self._keys(sid), self.tombstone_ms)
            return await pipe.execute(raise_on_error=False)

        try:
            replies = await self._call("load_many", run)
        except StoreUnavailable:
            return await super().load_many(session_ids)
        out: list[SessionRecord | ServiceError] = []
        for sid, reply in zip(session_ids, replies, strict=True):
            if isinstance(reply, Exception):
                out.extend(await super().load_many([sid]))
            elif isinstance(reply, int):
                out.append(self._missing(sid, reply))
            elif len(reply) == 2 and isinstance(reply[0], int):  # {2, owner}: expired
                out.append(self._missing(sid, reply[0], reply[1].decode()))
            else:
                out.append(self._decode(sid, reply))
        return out

    # -- health

    async def ping(self) -> None:
        await self._ping_nodes()
        await self._call("ping", lambda: self._redis.ping(target_nodes=RedisCluster.PRIMARIES))

    async def _ping_nodes(self) -> None:
        async def one(node: ClusterNode) -> tuple[str, int]:
            try:
                await asyncio.wait_for(node.execute_command("PING"), self._timeouts["socket_timeout"])
                return node.name, 1
            except Exception:  # any failure means "down" for the gauge
                return node.name, 0

        with contextlib.suppress(Exception):
            await self._redis.initialize()  # lazy: the layout is learnt on first use
            results = await asyncio.gather(*(one(n) for n in self._cluster.get_primaries()))
            self._nodes_up = dict(results)

    def stats(self) -> dict[str, float]:
        out = dict(super().stats())
        for name, up in self._nodes_up.items():
            out[f"node_up:{name}"] = up
        return out

    async def usage(self) -> dict[tuple[str, int], int]:
        await self._ping_nodes()
        return await super().usage()

    async def close(self) -> None:
        await super().close()
        for client in self._direct.values():
            await client.aclose()
        self._direct.clear()

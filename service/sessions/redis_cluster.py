"""Sessions on Redis Cluster: `redis+cluster://host:port[,host:port...][?wait_replicas=N&degrade=B&prefix=P]`.

The key layout and the Lua scripts (service/sessions/scripts/*.lua) are those of the
single-server store (service.sessions.redis), and so is the constructor: both keys of a session
carry the session id as a hash tag, so every session script touches one slot and runs unchanged
on whichever master owns that slot (the create script counts quotas only when it is given the
quota sets as keys, which only a single server does). The quota scripts of the protocol below
are scripts/quota_*.lua. Session counts (`usage`, `count`)
SCAN every master.

Quotas (SEQSERVE_MAX_SESSIONS_PER_MODEL / _PER_KEY) keep the single store's sorted sets of
session ids scored by expiry, one per model and per owner, each under its own hash tag
(PREFIX q:m:{MODEL}, PREFIX q:k:{OWNER}): one slot per set, never the session's slot, so a
create is a short protocol instead of one script:

  1. reserve, per set, in one script on the set's master: if the id is a member already (a
     replaced session, a retried create) its slot is reused; else, below the limit, the id is
     added with score = now + TTL (the reservation) and marked pending in a companion set (same
     slot); else the script returns the members whose recorded expiry has passed. Their
     hashes' PTTLs are read (one pipeline) and a second script drops the gone ones and
     re-scores the live ones, each only if its score is still the one read (a member
     re-reserved meanwhile is left alone); then reserve again. A set full only because of
     pending reservations (creates that may yet give theirs back, e.g. refused by the other
     set) is asked again shortly instead of refusing, for PENDING_MS at most.
  2. create the session (the shared create script) refusing when the reservation's deadline
     passed (its score less a margin for clock skew between masters): a reservation a stalled
     creator held past its expiry may already have been pruned, so it must not turn into a
     session. The hash records which sets hold it (`quota`: "m", "k" or "mk").
  3. the reservations are settled: confirmed (no longer pending) when the session was
     written, given back when it was not (the id exists, the other set is full, the deadline
     passed); a create whose outcome is unknown (503) keeps them, and they are pruned once
     their score passes if no session came of them.

A delete removes the session (script), then its id from the sets its hash names. Expiry
needs no write: an expired session's member is found due and dropped by the next create that
finds its set full. So the limit is never exceeded by live sessions, however creates and
deletes through any number of replicas interleave; what can lag is the release of a slot
whose creator or deleter died between the two steps (until the member's recorded expiry).
Quota writes are not followed by WAIT: a failover may forget reservations made just before it
(at most the creates of that moment over the limit).

Bulk steps load and save every session in one cluster pipeline each (the single store's
load_many and save_many: redis-py groups the scripts per master, one round trip per master; a
pipeline that fails as a whole, e.g. one master down, is sent again item by item, each save
recognised by its token); with `wait_replicas` each save goes alone to its master, concurrently,
followed by its own WAIT. Records are cached
per replica as in the single store (service.sessions.cache).

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
promoted one); reads and the other shards are unaffected. That is what a failover leaves
behind with N=1: the promoted replica is a master without replicas, and its shard refuses
every write until the old master rejoins. Counted: `wait_refused` (writes answered 503 for
want of replicas), per master `node_replicas` (connected replicas, from ROLE at each health
check), and `/v1/health/sessions` names the shards short of replicas.

`degrade=true` trades that availability back for durability on the affected shard only: each
write waits for min(N, the replicas its master has now), at least zero, so a shard left without
replicas keeps accepting writes, acknowledged by its master alone (a second failure before a
replica rejoins can lose them). Each such write is counted (`degraded_writes`). The replica
count is the master's own (ROLE), read at each health check and again, at most once a second
per master, while a shard is short; a write whose WAIT falls short reads it at once, so a
replica that died since the last check costs one WAIT timeout, once.

Failover: a dead master is a connection error (503, retried by the client) until the cluster
promotes its replica; the client library then learns the new layout (on the next request
after a connection error, or from a MOVED reply) without a restart.

Health: readiness (`ping`) asks every master and checks that every slot has one; a master
down or a slot uncovered is StoreUnavailable (503 on /v1/health/sessions, on readiness with
SEQSERVE_READY_REQUIRES_STORE, and on the requests that need that master), and the next
successful check after a repair is 200 again, without a restart. `stats()` adds, per master
address (at most MAX_NODES, the rest under "_other"; operations not routed by a key, such as
scans, under "all"): `node_up` (1/0, last health check), and operations, errors (answered
503) and seconds spent, exported as `seqserve_session_store_node_*{node=...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from service.core.errors import ServiceError, StoreUnavailable
from service.sessions.base import NO_QUOTA, Quota, SessionRecord, too_many
from service.sessions.redis import RedisSessionStore, Script, ScriptCall, _ms

T = TypeVar("T")
SCHEME = "redis+cluster://"
SLOTS = 16384
MAX_NODES = 32  # node addresses with their own metric labels
PRUNE_BATCH = 256  # due quota members checked per round
PRUNE_ROUNDS = 8
PENDING_MS = 1000  # a reservation counts as "may be given back" this long at most
BUSY_WAIT_S = 0.005  # between tries while a full set holds such reservations
CREATE_ATTEMPTS = 3  # creates whose reservation lapsed before the session was written
RESERVE_MARGIN_MS = 1000  # tolerated clock difference between two masters
REPLICAS_REFRESH_S = 1.0  # a short shard's replica count is read again at most this often

# The quota scripts of the cluster (the session scripts are the single store's, unchanged).
RESERVE, SETTLE, REVISE, FREE = (Script(f"quota_{name}") for name in ("reserve", "settle", "revise", "free"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, int]:
    """Seed nodes, key prefix and wait_replicas from a redis+cluster:// URL; ValueError if bad
    (`degrade`, checked here too, is read by parse_degrade)."""
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
    unknown = set(query) - {"prefix", "wait_replicas", "degrade"}
    if unknown:
        raise ValueError(f"unknown {SCHEME} parameters: {sorted(unknown)}")
    wait = query.get("wait_replicas", "0")
    if not wait.isdigit():
        raise ValueError(f"wait_replicas must be a whole number >= 0, got {wait!r}")
    parse_degrade(url)
    return nodes, query.get("prefix"), int(wait)


def parse_degrade(url: str) -> bool:
    """`degrade=true|false` (default false): whether a shard with fewer replicas than
    wait_replicas waits for the ones it has instead of refusing writes."""
    query = dict(parse_qsl(urlsplit("redis://" + url[len(SCHEME) :]).query, keep_blank_values=True))
    value = query.get("degrade", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"degrade must be true or false, got {query['degrade']!r}")
    return value in ("true", "1")


class NodeStats:
    """Operations, errors and seconds per node address; at most MAX_NODES labels (failovers and
    resharding add addresses over time), the rest counted under "_other"."""

    def __init__(self) -> None:
        self.ops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def record(self, node: str, seconds: float, failed: bool) -> None:
        if node not in self.ops and len(self.ops) >= MAX_NODES:
            node = "_other"
        self.ops[node] = self.ops.get(node, 0) + 1
        self.seconds[node] = self.seconds.get(node, 0.0) + seconds
        self.errors[node] = self.errors.get(node, 0) + int(failed)

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for node, n in self.ops.items():
            out[f"node_ops:{node}"] = n
            out[f"node_errors:{node}"] = self.errors[node]
            out[f"node_seconds:{node}"] = self.seconds[node]
        return out


class _WaitingScript:
    """A write script followed by `WAIT replicas timeout` on the same connection (pipelined),
    sent straight to the master that owns the keys' slot."""

    def __init__(self, store: RedisClusterSessionStore, script: Script) -> None:
        self.store = store
        self.script = script

    async def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        store = self.store
        direct, node = store._master_for(keys[0]), store._node_of(keys[0])
        needed = await store.replicas_needed(node, direct)
        result, acked = await self._send(direct, keys, args, self.script.sha, needed)
        if isinstance(result, rex.NoScriptError):
            result, acked = await self._send(direct, keys, args, None, needed)
        if isinstance(result, Exception):
            raise result
        wrote = result == 1 or (isinstance(result, list) and int(result[0]) == 1)
        if not wrote:
            return result
        acked = int(acked)
        store.saw_replicas(node, acked)
        if acked < needed and store.degrade:  # a replica may have gone since the count was read
            needed = await store.replicas_needed(node, direct, fresh=True)
        if acked < needed:
            store.wait_refused += 1
            hint = "" if store.degrade else " (a shard short of replicas refuses writes; see degrade=true)"
            raise StoreUnavailable(
                f"session store (redis cluster): {acked} of {needed} replicas confirmed the write in time; it may "
                f"have been applied: retry with the same position{hint}"
            )
        if acked < store.wait_replicas:
            store.degraded_writes += 1
        return result

    async def _send(self, direct: Redis, keys: list[str], args: list[Any], sha: str | None, needed: int) -> list[Any]:
        store = self.store
        pipe = direct.pipeline(transaction=False)
        if sha is None:
            pipe.eval(self.script.source, len(keys), *keys, *args)
        else:
            pipe.evalsha(sha, len(keys), *keys, *args)
        pipe.execute_command("WAIT", needed, store.wait_timeout_ms)
        try:
            return await pipe.execute(raise_on_error=False)
        except (rex.ConnectionError, rex.TimeoutError, OSError):
            store._stale = True  # the master may be gone: learn the layout again before the re-send
            raise


class RedisClusterSessionStore(RedisSessionStore):
    """The Redis store over redis-py's cluster client; see the module docstring."""

    kind = "redis-cluster"
    pipelines_span_nodes = True
    frees_quota_in_script = False  # the quota sets live in other slots: freed by _deleted()

    # -- connections (the hooks of the base constructor)

    def _split_url(self, url: str) -> tuple[str, str | None]:
        self._seeds, prefix, self.wait_replicas = parse_cluster_url(url)
        self.degrade = parse_degrade(url)
        return url, prefix

    # -- replicas per shard (wait_replicas, degrade)

    async def replicas_needed(self, node: str, direct: Redis, fresh: bool = False) -> int:
        """How many replicas a write to `node` waits for: wait_replicas, or with degrade=true
        min(wait_replicas, the replicas the master has), at least zero. A short shard's count is
        read again at most once a second (`fresh`: now), so a replica that rejoins is waited for."""
        if not self.degrade:
            return self.wait_replicas
        known = self._replicas.get(node)
        stale = time.monotonic() - self._replicas_read.get(node, 0.0) > REPLICAS_REFRESH_S
        if fresh or known is None or (known < self.wait_replicas and stale):
            known = await self._read_replicas(node, direct)
        return max(0, min(self.wait_replicas, self.wait_replicas if known is None else known))

    def saw_replicas(self, node: str, acked: int) -> None:
        """WAIT's answer is a lower bound of the replicas the master has."""
        if acked > self._replicas.get(node, 0):
            self._replicas[node] = acked

    async def _read_replicas(self, node: str, client: Any) -> int | None:
        """The master's connected replicas (ROLE), or None when it does not answer."""
        try:
            role = await asyncio.wait_for(client.execute_command("ROLE"), self._connection["socket_timeout"])
        except Exception:  # unknown: the write path then waits for wait_replicas
            return None
        if not isinstance(role, list | tuple) or len(role) < 3 or str(_text(role[0])) != "master":
            return None
        self._replicas[node] = len(role[2])
        self._replicas_read[node] = time.monotonic()
        return len(role[2])

    def short_shards(self) -> list[str]:
        """Masters with fewer connected replicas than wait_replicas (at the last count)."""
        return sorted(n for n, k in self._replicas.items() if k < self.wait_replicas and self._nodes_up.get(n, 1))

    def _connect(self, url: str, health_check_interval: float) -> Any:
        """The cluster client, and the bookkeeping that goes with it: plain connections to the
        masters (script + WAIT pipelines), whether the layout must be learnt again, per-node
        health and counters."""
        self._direct: dict[str, Redis] = {}
        self._replicas: dict[str, int] = {}  # master address -> connected replicas (ROLE, WAIT)
        self._replicas_read: dict[str, float] = {}
        self.wait_refused = 0  # writes answered 503: fewer replicas confirmed than needed
        self.degraded_writes = 0  # degrade=true: acknowledged with fewer than wait_replicas
        self._stale = False
        self._nodes_up: dict[str, int] = {}
        self._node_stats = NodeStats()
        self._relearn_timeout = self._connection["socket_timeout"] + self._connection["socket_connect_timeout"]
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self._seeds],
            require_full_coverage=False,  # slots of a failed master are 503, the others keep serving
            **self._connection,
        )

    def _writer(self, script: Script) -> ScriptCall:
        return _WaitingScript(self, script) if self.wait_replicas else script

    @property
    def _cluster(self) -> RedisCluster:
        """The client _connect made (the base class declares `_redis` as a plain Redis)."""
        return cast(RedisCluster, self._redis)

    def _master_for(self, key: str) -> Redis:
        """A plain connection to the master of `key`'s slot (for script + WAIT pipelines)."""
        node = self._cluster.get_node_from_key(key)
        if node is None:  # no master for the slot (failover): transient, mapped like the others
            raise rex.SlotNotCoveredError(f"no node serves the slot of {key!r}")
        client = self._direct.get(node.name)
        if client is None:
            # the reply comes after WAIT's own timeout: the socket must outlast it
            timeout = self._connection["socket_timeout"] + self.wait_timeout_ms / 1000
            options = {**self._connection, "socket_timeout": timeout}
            client = Redis(host=node.host, port=int(node.port), retry_on_error=[], **options)
            self._direct[node.name] = client
        return client

    def _node_of(self, key: str | None) -> str:
        if key is None:
            return "all"
        try:
            node = self._cluster.get_node_from_key(key)
        except Exception:  # layout not learnt yet, or the slot has no master now
            node = None
        return node.name if node is not None else "unrouted"

    async def _call(
        self, what: str, fn: Callable[[], Awaitable[T]], attempts: int = 2, timeouts: int = 0, key: str | None = None
    ) -> T:
        """The base error mapping, plus the cluster's own transient errors (a slot without a
        master during failover, a moved slot) as connection errors: 503, or a re-send. Counted
        per node (the master of `key`'s slot when the call starts)."""

        async def attempt() -> T:
            try:
                if self._stale:  # relearn the layout (no node reachable: mapped below, 503)
                    self._stale = False
                    # it asks the nodes one after the other: bounded, or a hung cluster (every
                    # node paused) would hold each request for a socket timeout per node
                    await asyncio.wait_for(self._cluster.nodes_manager.initialize(), self._relearn_timeout)
                return await fn()
            except rex.MovedError as exc:
                self._stale = True
                raise rex.ConnectionError(f"slot moved: {exc}") from exc
            except rex.RedisClusterException as exc:  # includes ClusterDown, SlotNotCovered
                self._stale = True
                raise rex.ConnectionError(str(exc) or type(exc).__name__) from exc
            except (rex.ClusterDownError, rex.TryAgainError) as exc:
                self._stale = True
                raise rex.ConnectionError(str(exc) or type(exc).__name__) from exc
            except (rex.ConnectionError, rex.TimeoutError, OSError):
                self._stale = True
                raise

        node = self._node_of(key)
        started = time.perf_counter()
        try:
            result = await super()._call(what, attempt, attempts, timeouts, key)
        except StoreUnavailable:
            self._node_stats.record(node, time.perf_counter() - started, True)
            raise
        self._node_stats.record(node, time.perf_counter() - started, False)
        return result

    # -- quotas

    def _quota_keys(self, model: str, owner: str) -> list[str]:
        return []  # the create script touches only the session's slot; quotas: create() below

    def _quota_set(self, kind: str, name: str) -> str:
        return f"{self.prefix}q:{kind}:{{{name}}}"

    async def create(self, record: SessionRecord, replace: bool = False, quota: Quota = NO_QUOTA) -> None:
        limits = [
            (kind, self._quota_set(kind, name), limit, label, what)
            for kind, name, limit, label, what in (
                ("m", record.model, quota.per_model, "max_sessions_per_model", f"model '{record.model}'"),
                ("k", record.owner, quota.per_key, "max_sessions_per_key", "this API key"),
            )
            if limit > 0
        ]
        if not limits:
            self._created(record, await self._run_create(record, replace, []))
            return
        ttl_ms = _ms(record.ttl_seconds)
        margin = min(RESERVE_MARGIN_MS, ttl_ms // 2)
        flags = "".join(kind for kind, *_ in limits)
        for _ in range(CREATE_ATTEMPTS):
            held: list[tuple[str, int]] = []  # (set, score) of the reservations made here
            for _, key, limit, label, what in limits:
                score = await self._reserve_in(key, limit, record.session_id, ttl_ms)
                if score is None:
                    await self._settle_all(held, record.session_id, give_back=True)
                    raise too_many(label, limit, what)
                if score:
                    held.append((key, score))
            deadline = min(score for _, score in held) - margin if held else 0
            code = await self._run_create(record, replace, [], deadline=deadline, extra=("quota", flags))
            if code == -3:  # the reservation lapsed before the session was written: again
                await self._settle_all(held, record.session_id, give_back=True)
                continue
            await self._settle_all(held, record.session_id, give_back=code == 0)
            self._created(record, code)
            return
        raise StoreUnavailable("session store unavailable")

    async def _reserve_in(self, key: str, limit: int, session_id: str, ttl_ms: int) -> int | None:
        """A slot in one quota set: the reservation's score, 0 when the id holds one already,
        None when the set is full of live sessions. While the set is full but holds
        reservations that other creates may give back, it asks again (for PENDING_MS at most)."""
        args = [session_id, limit, ttl_ms, PRUNE_BATCH, PENDING_MS]
        keys = [key, key + ":pending"]
        rounds, busy_until = 0, time.monotonic() + PENDING_MS / 1000
        while rounds < PRUNE_ROUNDS:
            reply = await self._on_set(RESERVE, keys, args)
            code, due = int(reply[0]), reply[1:]
            if code == 1:
                return int(due[0])
            if code == 2:
                return 0
            if code == 3:
                if time.monotonic() > busy_until:
                    return None
                await asyncio.sleep(BUSY_WAIT_S)
                continue
            if not due:
                return None
            rounds += 1
            members = [m.decode() for m in due[::2]]

            async def pttls(members: list[str] = members) -> list[Any]:
                pipe = self._redis.pipeline()
                for member in members:
                    pipe.pttl(self._hash_key(member))
                return await pipe.execute()

            ttls = await self._call("quota", pttls)
            revise = [x for triple in zip(members, due[1::2], ttls, strict=True) for x in triple]
            await self._on_set(REVISE, [key], revise)
        return None

    async def _on_set(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """One quota script on the master of the set keys[0]."""
        return await self._call("quota", lambda: script(self._redis, keys, args), key=keys[0])

    async def _settle_all(self, held: list[tuple[str, int]], session_id: str, give_back: bool) -> None:
        """End this create's reservations: kept (the session exists) or given back (if still
        unchanged). An unreachable master keeps them: they stop counting as pending after
        PENDING_MS, and a given-back one that stayed is pruned once its score passes."""
        for key, score in held:
            with contextlib.suppress(StoreUnavailable):
                args = [session_id, score, "1" if give_back else "0"]
                await self._on_set(SETTLE, [key, key + ":pending"], args)

    async def _deleted(self, session_id: str, reply: Any) -> bool:
        if isinstance(reply, list):  # a live session in quota sets: free its slots
            model, owner, flags = (x.decode() for x in reply[1:4])
            for kind, name in (("m", model), ("k", owner)):
                if kind in flags:
                    with contextlib.suppress(StoreUnavailable):  # else freed once its score passes
                        await self._on_set(FREE, [self._quota_set(kind, name)], [session_id])
            return True
        return bool(reply)

    # -- bulk

    async def save_many(self, items: list[tuple[SessionRecord, int]]) -> list[ServiceError | None]:
        """One cluster pipeline (redis-py groups the scripts per master), as the single store's;
        with `wait_replicas`, each save alone, sent to its master concurrently, each followed by
        its own WAIT on the master's connection."""
        if self.wait_replicas:
            return await self._save_each(items)
        return await super().save_many(items)

    # -- health

    async def ping(self) -> None:
        """Every master answers, and every slot has a master (else StoreUnavailable)."""
        await self._ping_nodes()

        async def check() -> None:
            await self._cluster.ping(target_nodes=RedisCluster.PRIMARIES)
            covered = len(self._cluster.nodes_manager.slots_cache)
            if covered < SLOTS:
                raise rex.SlotNotCoveredError(f"{SLOTS - covered} of {SLOTS} slots have no master")

        await self._call("ping", check)

    async def _ping_nodes(self) -> None:
        async def one(node: ClusterNode) -> tuple[str, int]:
            try:
                await asyncio.wait_for(node.execute_command("PING"), self._connection["socket_timeout"])
            except Exception:  # any failure means "down" for the gauge
                return node.name, 0
            if self.wait_replicas:
                await self._read_replicas(node.name, node)
            return node.name, 1

        with contextlib.suppress(Exception):
            await self._cluster.initialize()  # lazy: the layout is learnt on first use
            results = await asyncio.gather(*(one(n) for n in self._cluster.get_primaries()))
            self._nodes_up = dict(results)

    def stats(self) -> dict[str, float]:
        out = dict(super().stats())
        for name, up in self._nodes_up.items():
            out[f"node_up:{name}"] = up
        for name, replicas in self._replicas.items():
            out[f"node_replicas:{name}"] = replicas
        if self.wait_replicas:
            out["wait_replicas"] = self.wait_replicas
            out["degrade"] = int(self.degrade)
            out["wait_refused"] = self.wait_refused
            out["degraded_writes"] = self.degraded_writes
        out.update(self._node_stats.stats())
        return out

    def detail(self) -> dict[str, Any]:
        """What /v1/health/sessions adds: the durability setting and the shards short of replicas."""
        if not self.wait_replicas:
            return {}
        short = self.short_shards()
        detail: dict[str, Any] = {
            "wait_replicas": self.wait_replicas,
            "degrade": self.degrade,
            "replicas": dict(sorted(self._replicas.items())),
            "shards_short_of_replicas": short,
        }
        if short:
            detail["warning"] = f"{len(short)} shard(s) have fewer than {self.wait_replicas} replica(s): " + (
                "their writes are acknowledged by fewer replicas (degrade=true)"
                if self.degrade
                else "their sessions' writes are refused (503) until a replica rejoins (degrade=true accepts them)"
            )
        return detail

    async def usage(self) -> dict[tuple[str, int], int]:
        await self._ping_nodes()
        return await super().usage()

    async def start(self) -> None:
        await self._ping_nodes()  # learn the layout now (a cluster down at start-up is retried later)
        await super().start()

    async def close(self) -> None:
        await super().close()
        for client in self._direct.values():
            await client.aclose()
        self._direct.clear()

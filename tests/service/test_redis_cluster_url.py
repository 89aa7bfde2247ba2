"""The redis+cluster:// URL: seed nodes, prefix and wait_replicas; anything else refused at startup.
Quotas are accepted (kept in sets of their own slots)."""

from __future__ import annotations

import pytest

from service.core.services import make_store
from service.core.settings import Settings
from service.sessions.redis_cluster import RedisClusterSessionStore, parse_cluster_url


def test_parses_nodes_prefix_and_wait_replicas() -> None:
    nodes, prefix, wait = parse_cluster_url("redis+cluster://10.0.0.1:7000,[::1]:7001?wait_replicas=1&prefix=p:")
    assert nodes == [("10.0.0.1", 7000), ("::1", 7001)]
    assert (prefix, wait) == ("p:", 1)
    assert parse_cluster_url("redis+cluster://h:1")[1:] == (None, 0)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://host",
        "redis+cluster://h:1?wait_replicas=-1",
        "redis+cluster://h:1?wait_replicas=x",
        "redis+cluster://h:1?waitreplicas=1",
        "redis+cluster://h:1?wait_replicas=1&degrade=maybe",
        "redis://h:1",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_cluster_url(url)


async def test_degrade_is_off_unless_the_url_says_so() -> None:
    strict = RedisClusterSessionStore("redis+cluster://127.0.0.1:1?wait_replicas=1")
    lenient = make_store(Settings(session_store="redis+cluster://127.0.0.1:1?wait_replicas=1&degrade=true"))
    assert isinstance(lenient, RedisClusterSessionStore)
    assert (strict.degrade, lenient.degrade) == (False, True)
    assert strict.stats()["degrade"] == 0 and lenient.stats()["degrade"] == 1
    assert lenient.detail() == {
        "wait_replicas": 1,
        "degrade": True,
        "replicas": {},
        "shards_short_of_replicas": [],
    }
    plain = RedisClusterSessionStore("redis+cluster://127.0.0.1:1")
    assert "wait_replicas" not in plain.stats() and plain.detail() == {}
    for store in (strict, lenient, plain):
        await store.close()


def test_replica_shortfalls_are_exported() -> None:
    from service.core.metrics import Metrics

    stats = {
        "wait_replicas": 1,
        "degrade": 1,
        "wait_refused": 2,
        "degraded_writes": 7,
        "node_replicas:10.0.0.1:7000": 0,
    }
    metrics = Metrics()
    metrics.watch_sessions(lambda: {"active": 0, "evicted": 0, "expired": 0, "available": 1, **stats})
    text = metrics.render().decode()
    assert 'seqserve_session_store_wait_replicas{degrade="true"} 1.0' in text
    assert "seqserve_session_store_wait_refused_total 2.0" in text
    assert "seqserve_session_store_degraded_writes_total 7.0" in text
    assert 'seqserve_session_store_node_replicas{node="10.0.0.1:7000"} 0.0' in text


async def test_make_store_builds_the_cluster_store_without_connecting() -> None:
    store = make_store(Settings(session_store="redis+cluster://127.0.0.1:1?wait_replicas=2"))
    assert isinstance(store, RedisClusterSessionStore)
    assert store.wait_replicas == 2
    await store.close()


async def test_quotas_are_accepted_on_a_cluster_store() -> None:
    settings = Settings(session_store="redis+cluster://127.0.0.1:1", max_sessions_per_model=5, max_sessions_per_key=2)
    store = make_store(settings)
    assert isinstance(store, RedisClusterSessionStore)
    await store.close()


def test_quota_sets_have_their_own_hash_tag() -> None:
    """Each quota set lives in one slot of its own: the model or owner is the hash tag."""
    store = RedisClusterSessionStore("redis+cluster://127.0.0.1:1?prefix=p:")
    assert store._quota_set("m", "gru") == "p:q:m:{gru}"
    assert store._quota_set("k", "ab12") == "p:q:k:{ab12}"


def test_node_metrics_have_a_bounded_label_space() -> None:
    """Failovers and resharding bring new node addresses: past MAX_NODES they share one label;
    operations, errors and time per node come out as counters and a summary."""
    from service.core.metrics import Metrics
    from service.sessions.redis_cluster import MAX_NODES, NodeStats

    nodes = NodeStats()
    for i in range(MAX_NODES + 10):
        nodes.record(f"10.0.0.{i}:6379", 0.002, failed=i % 2 == 1)
    nodes.record("10.0.0.0:6379", 0.004, failed=True)
    stats = nodes.stats()
    assert len([k for k in stats if k.startswith("node_ops:")]) == MAX_NODES + 1
    assert stats["node_ops:_other"] == 10 and stats["node_errors:_other"] == 5
    assert stats["node_ops:10.0.0.0:6379"] == 2 and stats["node_errors:10.0.0.0:6379"] == 1
    metrics = Metrics()
    metrics.watch_sessions(lambda: {"active": 0, "evicted": 0, "expired": 0, "available": 1, **stats})
    text = metrics.render().decode()
    assert 'seqserve_session_store_node_operations_total{node="10.0.0.0:6379"} 2.0' in text
    assert 'seqserve_session_store_node_errors_total{node="_other"} 5.0' in text
    assert 'seqserve_session_store_node_latency_seconds_sum{node="10.0.0.0:6379"} 0.006' in text


async def test_a_write_on_a_closed_transport_is_a_connection_error() -> None:
    """uvloop raises RuntimeError("... the handler is closed") for a write on a connection the
    peer had closed (seen under injected resets): re-sent like a connection error, then 503;
    any other RuntimeError is a bug and propagates."""
    from service.core.errors import StoreUnavailable
    from service.sessions.redis import RedisSessionStore

    closed = RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")
    for store in (RedisSessionStore("redis://127.0.0.1:1/0"), RedisClusterSessionStore("redis+cluster://127.0.0.1:1")):
        calls: list[int] = []

        async def flaky(fail: int, calls: list[int] = calls) -> str:
            calls.append(1)
            if len(calls) <= fail:
                raise closed
            return "ok"

        assert await store._call("save", lambda: flaky(1), attempts=4) == "ok"
        calls.clear()
        with pytest.raises(StoreUnavailable):
            await store._call("save", lambda: flaky(9), attempts=2)
        assert len(calls) == 2

        async def bug() -> None:
            raise RuntimeError("something else")

        with pytest.raises(RuntimeError, match="something else"):
            await store._call("load", bug)
        await store.close()


async def test_a_slot_without_a_master_fails_readiness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every master answering is not enough: a slot no master serves (the client's layout has a
    hole) makes ping() raise StoreUnavailable; a full layout passes."""
    from service.core.errors import StoreUnavailable
    from service.sessions.redis_cluster import SLOTS

    store = RedisClusterSessionStore("redis+cluster://127.0.0.1:1")
    cluster = store._cluster

    async def nothing(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr(store, "_ping_nodes", nothing)
    monkeypatch.setattr(cluster, "ping", nothing)
    monkeypatch.setattr(type(cluster.nodes_manager), "initialize", nothing)
    monkeypatch.setattr(cluster.nodes_manager, "slots_cache", {slot: [] for slot in range(SLOTS)})
    await store.ping()
    monkeypatch.setattr(cluster.nodes_manager, "slots_cache", {slot: [] for slot in range(SLOTS - 1)})
    with pytest.raises(StoreUnavailable):
        await store.ping()
    assert store.stats()["available"] == 0
    await store.close()

"""The redis+cluster:// URL: seed nodes, prefix and wait_replicas; anything else refused at startup."""

from __future__ import annotations

import pytest

from service.app import make_store
from service.sessions.redis_cluster import RedisClusterSessionStore, parse_cluster_url
from service.settings import Settings


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
        "redis://h:1",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_cluster_url(url)


async def test_make_store_builds_the_cluster_store_without_connecting() -> None:
    store = make_store(Settings(session_store="redis+cluster://127.0.0.1:1?wait_replicas=2"))
    assert isinstance(store, RedisClusterSessionStore)
    assert store.wait_replicas == 2
    await store.close()


def test_quotas_are_refused_on_a_cluster_store() -> None:
    with pytest.raises(ValueError, match="not supported"):
        make_store(Settings(session_store="redis+cluster://127.0.0.1:1", max_sessions_per_model=5))

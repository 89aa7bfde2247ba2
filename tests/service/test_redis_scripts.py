"""The Lua scripts are .lua files (package data) that the single-server and the cluster store
share: the same session scripts, byte for byte, with nothing patched in by text."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from service.sessions import redis_cluster
from service.sessions.redis import SCRIPTS, RedisSessionStore, Script
from service.sessions.redis_cluster import RedisClusterSessionStore

ROOT = Path(__file__).resolve().parents[2]


def test_both_stores_run_the_same_session_scripts() -> None:
    single = RedisSessionStore("redis://127.0.0.1:1/0")
    cluster = RedisClusterSessionStore("redis+cluster://127.0.0.1:1")
    for name in ("_load", "_save", "_create", "_delete"):
        script = getattr(single, name)
        assert isinstance(script, Script)
        assert getattr(cluster, name) is not script  # each store its own objects...
        assert getattr(cluster, name).sha == script.sha  # ...of the same files
        assert script.source == SCRIPTS.joinpath(f"{script.name}.lua").read_text(encoding="utf-8")


def test_a_cluster_asking_for_replicas_sends_the_same_writes_followed_by_wait() -> None:
    cluster = RedisClusterSessionStore("redis+cluster://127.0.0.1:1?wait_replicas=1", wait_timeout=0.25)
    plain = RedisSessionStore("redis://127.0.0.1:1/0")
    for name in ("_save", "_create"):
        waiting = getattr(cluster, name)
        assert isinstance(waiting, redis_cluster._WaitingScript)
        assert waiting.script.sha == getattr(plain, name).sha
    assert (cluster.wait_replicas, cluster.wait_timeout_ms) == (1, 250)
    assert plain.wait_replicas == 0


def test_every_script_file_is_used_and_shipped() -> None:
    """Each .lua file is loaded by a store (no dead copies), and the wheel's package data
    (pyproject.toml) covers them all."""
    files = sorted(p.name for p in Path(str(SCRIPTS)).glob("*.lua"))
    used = {"load.lua", "save.lua", "create.lua", "delete.lua"}
    used |= {f"{s.name}.lua" for s in (redis_cluster.RESERVE, redis_cluster.SETTLE, redis_cluster.REVISE)}
    used.add(f"{redis_cluster.FREE.name}.lua")
    assert set(files) == used
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    for name in files:
        assert any(fnmatch.fnmatch(f"sessions/scripts/{name}", pattern) for pattern in data), name
    for source in (Path(str(SCRIPTS)) / name for name in files):
        assert "--@" not in source.read_text()  # no template markers left to fill in by text

"""`bench.redis_cost` end to end (a real service on its own redis-server, wrk and the WebSocket
client): with the record cache, a single step costs at most one script call (the saves of steps
that finish together share one) and the save's three commands; without it, a load more. Short
loads; the counts, not the rates, are checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import redis_cost
from bench.loadgen import wrk_path
from bench.servers import export_bench_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_round_trips_and_commands_per_step_with_and_without_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not wrk_path() or not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
        pytest.skip("wrk and redis-server needed")
    repo = tmp_path / "repository"
    export_bench_model(repo)
    monkeypatch.setattr(redis_cost, "TRANSPORTS", [t for t in redis_cost.TRANSPORTS if t[1] == "steps"])
    on = redis_cost.measure(repo, tmp_path / "on", duration=1.5, warmup=0.5, cache_mb=64.0)
    off = redis_cost.measure(repo, tmp_path / "off", duration=1.5, warmup=0.5, cache_mb=0.0)
    (with_cache,), (without,) = on, off
    assert with_cache["errors"] == 0 and without["errors"] == 0
    # 8 streams, one session each: only each session's first step misses
    cached = with_cache["redis"]
    assert 0.0 < cached["round_trips_per_step"] < 1.1
    assert cached["calls"]["hmget"] >= with_cache["steps_counted_by_service"]  # every step saved
    # inside the scripts: the save's HMGET, HSET, PEXPIRE (an HGET every eighth), few loads
    assert 3.0 <= cached["ops_per_step"] - cached["round_trips_per_step"] < 3.5
    assert 1.0 <= without["redis"]["round_trips_per_step"] < 2.1
    assert with_cache["redis"]["bytes_per_step"] < without["redis"]["bytes_per_step"] / 2
    lines = redis_cost.render(on + off)
    assert "| 64 MiB |" in lines[2] and "| off |" in lines[3]

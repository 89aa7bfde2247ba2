"""`bench.redis_cost` end to end (a real service on its own redis-server, wrk and the WebSocket
client): with the record cache, a single step costs one script call and the save's three
commands; without it, two script calls. Short loads; the counts, not the rates, are checked."""

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
    assert 1.0 <= with_cache["redis"]["round_trips_per_step"] < 1.1
    assert with_cache["redis"]["calls"]["evalsha"] >= with_cache["steps_counted_by_service"]
    assert 4.0 <= with_cache["redis"]["ops_per_step"] < 4.5
    assert 2.0 <= without["redis"]["round_trips_per_step"] < 2.1
    assert with_cache["redis"]["bytes_per_step"] < without["redis"]["bytes_per_step"] / 2
    lines = redis_cost.render(on + off)
    assert "| 64 MiB |" in lines[2] and "| off |" in lines[3]

"""`python -m bench.capacity --quick` end to end (real service, real redis-server, wrk, a real
`seqserve train`): the JSON has every input of docs/scaling.md, with positive numbers, and the
projections made from them. About a minute; figures from a quick run are not for quoting."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench import capacity
from bench.loadgen import wrk_path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _require(found: object, what: str) -> None:
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is required under CI=true")
        pytest.skip(f"{what} not installed")


def test_capacity_quick_run_has_every_input(tmp_path: Path) -> None:
    _require(wrk_path(), "wrk")
    _require(shutil.which("redis-server") or Path("/usr/bin/redis-server").exists(), "redis-server")
    # shorter loads and fewer idle sessions than --quick's own: the figures are not what is tested
    quick = ["--quick", "--duration", "0.5", "--idle-sessions", "500"]
    capacity.main([*quick, "--out", str(tmp_path)])  # exit 1 only flags errors in some load
    report = json.loads((tmp_path / "capacity.json").read_text())
    assert (tmp_path / "capacity.md").read_text().startswith("# seqserve capacity inputs")

    env = report["environment"]
    assert len(env["load_start"]) == 3 and len(env["load_end"]) == 3 and env["cpus"] >= 1

    rows = report["transports"]
    measured = [r for r in rows if "failed" not in r]
    assert {r["mode"] for r in rows} >= {"steps", "ws", "bulk", "v2", "grpc-stream"}
    # the plain HTTP step path must work with both stores; every transport that ran has figures
    assert any(r["mode"] == "steps" and r["store"] == "memory" for r in measured)
    assert any(r["mode"] == "steps" and r["store"] == "redis" for r in measured)
    for r in measured:
        assert r["steps_counted_by_service"] > 0, r
        assert r["steps_per_server_cpu_s"] and r["steps_per_server_cpu_s"] > 0, r
        assert r["measured_steps_per_s"] > 0, r
        if r["store"] == "redis":
            rd = r["redis"]
            assert rd["round_trips_per_step"] > 0 and rd["ops_per_step"] >= rd["round_trips_per_step"], r
            assert rd["bytes_per_step"] > 0 and ("evalsha" in rd["calls"] or "eval" in rd["calls"]), r

    idle = report["idle_sessions"]
    raw_state = 2 * 2 * 64 * 4  # h + c of the 2-layer 64-hidden LSTM
    assert idle["memory"]["bytes_per_session"] > raw_state
    assert idle["redis"]["sessions"] > 0 and idle["redis"]["keys_per_session"] >= 1
    assert idle["redis"]["bytes_per_session_memory_usage"] > raw_state
    assert idle["redis"]["bytes_per_session"] >= idle["redis"]["bytes_per_session_memory_usage"]

    train = report["training"]
    assert train["optimizer_steps"] > 0 and train["optimizer_steps_per_s"] > 0 and train["timesteps_per_s"] > 0

    projection = report["projection"]
    assert projection["live"]["per_transport"], "no Redis transport to project from"
    for t in projection["live"]["per_transport"]:
        assert t["service_cores"] >= 1 and t["redis_round_trips_per_s"] > 0 and t["redis_network_gbit_per_s"] > 0
    assert projection["idle"]["redis_shards_for_memory"] >= 1
    assert projection["idle"]["redis_memory_gib_with_replicas"] > projection["idle"]["redis_data_gib"] > 0

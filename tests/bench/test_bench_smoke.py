"""Smoke test of the benchmark tooling: the load generator runs for ~2 s against the naive
baseline (and the real service once it exists) and reports steps with zero errors.

wrk drives the HTTP load; without it the test skips locally but FAILS under CI=true.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.loadgen import run_load, wrk_path
from bench.servers import export_bench_model, naive_server, service_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wrk() -> str:
    path = wrk_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wrk is required under CI=true (apt-get install wrk)")
        pytest.skip("wrk not installed")
    return path


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("bench-repo")
    export_bench_model(repo)
    return repo


def _assert_ok(result) -> None:
    assert result.errors == 0, result
    assert result.stream_steps > 0, result
    assert result.steps_per_s > 0, result
    assert 0 < result.p50_ms <= result.p99_ms, result


def test_naive_baseline_load(wrk: str, repository: Path, tmp_path: Path) -> None:
    with naive_server("naive", repository / "bench" / "1" / "model.onnx") as server:
        server.start(tmp_path, ready_timeout=60)
        result = run_load(server.url, "naive", streams=4, duration=2, warmup=0)
        _assert_ok(result)
        assert result.requests == result.stream_steps


def test_service_session_steps_load(wrk: str, repository: Path, tmp_path: Path) -> None:
    with service_server("service", repository, batching=True) as server:
        server.start(tmp_path, ready_timeout=60)
        result = run_load(server.url, "steps", streams=4, duration=2, warmup=0)
        _assert_ok(result)
        ws = run_load(server.url, "ws", streams=4, duration=1, warmup=0)
        _assert_ok(ws)

"""Several uvicorn worker processes on one port, sharing sessions through Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import numpy as np
import pytest

from tests.support.models import raw_inputs
from tests.support.redis import RedisProcess
from tests.support.servers import ROOT, ServiceProcess, require

pytestmark = pytest.mark.e2e


def test_two_workers_share_sessions_through_redis(repository, tmp_path):
    require("redis-server")
    with RedisProcess(tmp_path / "redis") as redis:
        env = {"SEQSERVE_WORKERS": "2", "SEQSERVE_SESSION_STORE": redis.url}
        with ServiceProcess(repository, tmp_path, env) as server:
            rng = np.random.default_rng(0)
            x = raw_inputs(rng, 40).astype(np.float32)
            with httpx.Client(base_url=server.url, timeout=30) as c:
                whole = c.post("/v1/models/gru/predict", json={"inputs": [x.tolist()]}).json()["outputs"][0]
                sid = c.post("/v1/models/gru/sessions", json={}).json()["session_id"]
            outputs = []
            for t in range(0, 40, 4):  # a new connection each time: the kernel spreads them over workers
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    r = c.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[t : t + 4].tolist(), "position": t})
                    assert r.status_code == 200, r.text
                    outputs.extend(r.json()["outputs"])
            np.testing.assert_allclose(outputs, whole, atol=1e-5 * max(1.0, float(np.abs(whole).max())))
            pids = {int(p) for p in subprocess.check_output(["pgrep", "-P", str(server.proc.pid)]).split()}
            assert len(pids) >= 2  # the supervisor really runs two workers


def test_several_workers_refuse_the_memory_store(repository, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SEQSERVE_WORKERS": "2",
        "SEQSERVE_MODEL_REPOSITORY": str(repository),
        "SEQSERVE_PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "seqserve.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "shared session store" in result.stderr

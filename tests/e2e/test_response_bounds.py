"""Reply size is checked before anything runs, over a real server: a 4 MB predict to a model
with 48 outputs per step would answer ~500 MB (the issue measured 493 MB and a 1.4 GB peak);
it is 413 with the figures, the server's memory does not move, and the same bound holds for
session steps, WebSocket batches and bulk requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import export_wide
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e


def _rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("wide-repo")
    export_wide(root)
    with ServiceProcess(root, tmp_path_factory.mktemp("wide")) as server:
        yield server


def test_a_predict_whose_reply_would_be_huge_is_413_before_it_runs(wide_server: ServiceProcess) -> None:
    assert wide_server.proc is not None
    pid = wide_server.proc.pid
    rng = np.random.default_rng(0)
    values = rng.integers(0, 10, size=(100, 10_000, 1))  # 1,000,000 readings x 48 outputs
    body = ('{"inputs": ' + str(values.tolist()).replace(" ", "") + "}").encode()
    assert 3_900_000 < len(body) < 8 * 1024 * 1024  # ~4 MB, inside the body limit
    with httpx.Client(base_url=wide_server.url, timeout=120) as c:
        assert c.post("/v1/models/wide/predict", json={"inputs": [[[1.0]]]}).status_code == 200
        before = _rss_kb(pid)
        r = c.post("/v1/models/wide/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text[:300]
        error = r.json()
        assert error["limit"] == "max_response_values" and error["values"] == 48_000_000
        assert "100 sequences" in error["error"] and "1,000,000 steps" in error["error"]
        grown = _rss_kb(pid) - before
        assert grown < 200 * 1024, f"RSS grew by {grown / 1024:.0f} MB"  # decoding 4 MB, no 500 MB reply
        # The same model, within the limit, answers.
        small = {"inputs": values[:2, :1000].tolist()}
        assert c.post("/v1/models/wide/predict", json=small).status_code == 200


def test_steps_websocket_batches_and_bulk_are_bounded_too(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    export_wide(root)
    env = {"SEQSERVE_MAX_RESPONSE_VALUES": "48000"}  # 1,000 steps of this model per reply
    with ServiceProcess(root, tmp_path, env) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        sid = c.post("/v1/models/wide/sessions").json()["session_id"]
        r = c.post(f"/v1/sessions/{sid}/steps", json={"inputs": [[1.0]] * 1001})
        assert r.status_code == 413 and r.json()["limit"] == "max_response_values", r.text
        assert c.get(f"/v1/sessions/{sid}").json()["position"] == 0  # nothing applied
        assert c.post(f"/v1/sessions/{sid}/steps", json={"inputs": [[1.0]] * 1000}).status_code == 200
        others = [c.post("/v1/models/wide/sessions").json()["session_id"] for _ in range(3)]
        bulk = {"steps": [{"session_id": s, "inputs": [[1.0]] * 400} for s in others]}  # 1,200 steps in all
        r = c.post("/v1/models/wide/sessions/steps", json=bulk)
        statuses = [item.get("status", 200) for item in r.json()["results"]]
        assert statuses == [413, 413, 413], r.text[:300]
        assert all(c.get(f"/v1/sessions/{s}").json()["position"] == 0 for s in others)
        r = c.post("/v1/models/wide/predict", json={"inputs": [[[1.0]] * 600, [[1.0]] * 600]})
        assert r.status_code == 413 and r.json()["values"] == 57_600
        r = c.post(
            "/v2/models/wide/infer",
            json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 600, 1], "data": [1.0] * 1200}]},
        )
        assert r.status_code == 413, r.text[:300]

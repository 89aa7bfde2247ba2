"""One long predict inside the documented limits keeps the server's memory bounded by the
chunk setting, not by the request, and health checks stay responsive while it runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from models.config import ModelConfig, Normalization
from models.export import export_onnx
from models.recurrent import RecurrentModel
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

MB = 1024 * 1024


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture(scope="module")
def univariate(tmp_path_factory) -> Path:
    """A one-feature model, so [200][10000][1] is a request inside the 8 MB body limit."""
    root = tmp_path_factory.mktemp("univariate")
    torch.manual_seed(0)
    config = ModelConfig(
        cell="lstm",
        input_size=1,
        hidden_size=8,
        output_size=1,
        features=("y",),
        outputs=("y@t+1",),
        normalization=Normalization((4.5,), (3.0,), (4.5,), (3.0,)),
    )
    export_onnx(RecurrentModel(config).eval(), root / "uni" / "1" / "model.onnx")
    return root


@pytest.mark.slow  # 2 million steps through the model: ~20 s on an idle 2-core machine
def test_long_predict_keeps_rss_bounded_and_health_responsive(univariate, tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 10, size=(200, 10_000, 1))  # one digit each: 4 bytes a reading
    body = ('{"inputs": ' + str(values.tolist()).replace(" ", "") + "}").encode()
    assert len(body) < 8 * MB  # inside the default max_body_bytes
    with ServiceProcess(univariate, tmp_path) as server:
        pid = server.proc.pid
        with httpx.Client(base_url=server.url, timeout=120) as c:
            small = {"inputs": [[[1.0], [2.0]]]}
            assert c.post("/v1/models/uni/predict", json=small).status_code == 200
            baseline = _status_kb(pid, "VmRSS")
            result: dict = {}

            def long_predict() -> None:
                with httpx.Client(base_url=server.url, timeout=300) as c2:
                    r = c2.post("/v1/models/uni/predict", content=body, headers={"content-type": "application/json"})
                    result["response"] = r  # parsed after the health checks: this process's GIL

            worker = threading.Thread(target=long_predict)
            worker.start()
            worst = 0.0
            checks = 0
            while worker.is_alive():
                start = time.perf_counter()
                assert c.get("/v2/health/live").status_code == 200
                worst = max(worst, time.perf_counter() - start)
                checks += 1
                time.sleep(0.05)
            worker.join()
            peak = _status_kb(pid, "VmHWM")
            after = _status_kb(pid, "VmRSS")
            # The first sequence alone (a small body, decoded whole, one call per 32k steps).
            alone = c.post("/v1/models/uni/predict", json={"inputs": values[:1].tolist()})
            assert alone.status_code == 200
    response = result["response"]
    assert response.status_code == 200, response.text[:500]
    outputs = np.asarray(response.json()["outputs"])
    assert outputs.shape == (200, 10_000, 1)
    np.testing.assert_array_equal(outputs[0], np.asarray(alone.json()["outputs"][0]))
    grew_mb = (peak - baseline) / 1024
    print(
        f"baseline {baseline / 1024:.0f} MB, peak +{grew_mb:.0f} MB, after +{(after - baseline) / 1024:.0f} MB, "
        f"worst health {worst * 1000:.0f} ms over {checks} checks"
    )
    assert grew_mb < 400, f"RSS grew {grew_mb:.0f} MB during one predict"
    assert worst < 2.0, f"a health check waited {worst:.1f} s"

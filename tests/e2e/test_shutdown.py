"""Graceful shutdown: SIGTERM stops the server only after in-flight requests are answered."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import numpy as np
import pytest

from tests.support.models import raw_inputs
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e


def test_sigterm_finishes_in_flight_requests(repository, tmp_path):
    server = ServiceProcess(repository, tmp_path, {"SEQSERVE_MAX_BODY_BYTES": str(64 << 20)}).start()
    rng = np.random.default_rng(0)
    x = raw_inputs(rng, 10_000, batch=32).astype(np.float32)  # a request of about two seconds
    body = json.dumps({"inputs": x.tolist()}).encode()  # encoded up front: sent at once
    result: dict = {}

    def slow_request() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/v1/models/lstm/predict", content=body, headers={"content-type": "application/json"})
            result["status"], result["steps"] = r.status_code, len(r.json()["outputs"][0])

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)  # the request is being read and computed
    assert not result, "the request finished before the signal; make it bigger"
    server.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    code = server.proc.wait(30)
    assert result == {"status": 200, "steps": 10_000}, server.log()[-2000:]
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert "stopped" in server.log()  # the lifespan ran to its end: store and threads closed

"""Graceful shutdown: SIGTERM stops the server only after in-flight requests are answered."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import numpy as np

from tests.support.models import raw_inputs
from tests.support.servers import ServiceProcess


def test_sigterm_finishes_in_flight_requests(repository, tmp_path):
    server = ServiceProcess(repository, tmp_path).start()
    rng = np.random.default_rng(0)
    big = raw_inputs(rng, 5000, batch=16).astype(np.float32).tolist()  # a call of ~1 s or more
    result: dict = {}

    def slow_request() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/v1/models/lstm/predict", json={"inputs": big})
            result["status"], result["steps"] = r.status_code, len(r.json()["outputs"][0])

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)  # the request is being computed
    server.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    code = server.proc.wait(30)
    assert result == {"status": 200, "steps": 5000}, server.log()[-2000:]
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert "stopped" in server.log()  # the lifespan ran to its end: store and threads closed

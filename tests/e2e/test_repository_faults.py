"""A repository with a Unicode-digit version and FIFOs where files should be: the server
starts, reloads, says what it ignored, and SIGTERM still ends it within seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import httpx
import pytest

from tests.support.models import export_model
from tests.support.servers import ServiceProcess, wait_for

pytestmark = pytest.mark.e2e


def _versions(server: ServiceProcess, name: str) -> list[int]:
    r = httpx.get(f"{server.url}/v1/models/{name}", timeout=5)
    return [v["version"] for v in r.json()["versions"]] if r.status_code == 200 else []


def test_odd_entries_neither_stop_start_reload_nor_sigterm(tmp_path):
    repo = tmp_path / "repo"
    export_model(repo, "lstm", 1, "lstm", seed=1)
    shutil.copytree(repo / "lstm" / "1", repo / "lstm" / "²")
    export_model(repo, "gru", 1, "gru", seed=3)
    os.mkfifo(repo / "gru" / "1" / "manifest.json")  # nobody ever writes to it
    env = {"SEQSERVE_RELOAD_INTERVAL_SECONDS": "0.3", "SEQSERVE_REPOSITORY_READ_TIMEOUT_SECONDS": "2"}
    server = ServiceProcess(repo, tmp_path, env).start(timeout=60)
    try:
        assert _versions(server, "lstm") == [1] and _versions(server, "gru") == [1]
        log = "\n".join(json.loads(line)["msg"] for line in server.log().splitlines() if line.startswith("{"))
        assert "ignoring 'lstm/²': a version is ASCII digits only" in log
        assert "gru v1: ignoring manifest.json: manifest.json is not a regular file" in log

        # A new version arrives (renamed into place, as the trainer does) with a FIFO manifest.
        staging = repo / "lstm" / ".tmp-new"
        shutil.copytree(repo / "lstm" / "1", staging)
        os.mkfifo(staging / "manifest.json")
        os.rename(staging, repo / "lstm" / "2")
        wait_for(lambda: _versions(server, "lstm") == [1, 2], 20, "reload of lstm v2", server.proc, server.log_path)
        r = httpx.post(f"{server.url}/v1/models/lstm/predict", json={"inputs": [[[20.0, 500.0, 12.0]]]}, timeout=10)
        assert r.status_code == 200 and r.json()["version"] == 2

        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(10)
        assert time.monotonic() - start < 5
        assert code in (0, -signal.SIGTERM)
    finally:
        server.stop(signal.SIGKILL)

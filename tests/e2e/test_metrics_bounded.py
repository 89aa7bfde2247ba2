"""Metric series are bounded: model names that are not loaded (and invented methods) add no
series; scrapes run while requests flow without stalling them."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _series(server) -> list[str]:
    text = httpx.get(f"{server.admin_url}/metrics", timeout=30).text  # the admin listener
    return [line for line in text.splitlines() if line.startswith("seqserve_request")]


def test_unknown_model_names_add_no_series(server, client):
    for _ in range(2):  # every label combination the loop below can reach exists once
        client.get(f"/v1/models/{uuid.uuid4().hex}")
        client.post(f"/v1/models/{uuid.uuid4().hex}/predict", json={"inputs": [[[1, 2, 3]]]})
    client.post("/v1/models/lstm/predict", json={"inputs": [[[20.0, 500.0, 12.0]]]})
    before = _series(server)

    def hammer(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(n):
                assert c.get(f"/v1/models/{uuid.uuid4().hex}").status_code == 404
                r = c.post(f"/v1/models/{uuid.uuid4().hex}/predict", json={"inputs": [[[1, 2, 3]]]})
                assert r.status_code == 404

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hammer, [150] * 4))  # 1,200 distinct names
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"PURGE /v1/models/pot HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 ")
    after = _series(server)
    new = {line.rsplit(" ", 1)[0] for line in after} - {line.rsplit(" ", 1)[0] for line in before}
    assert len(new) <= 20, sorted(new)[:20]  # the one PURGE request's own series, nothing per name
    text = "\n".join(after)
    assert 'model="_other"' in text and 'model="lstm"' in text
    assert "PURGE" not in text and 'method="OTHER"' in text
    assert not any(len(line) > 300 for line in after)


def test_scrapes_do_not_stall_requests(server, client):
    stop = threading.Event()
    scraped = []

    def scrape() -> None:
        with httpx.Client(base_url=server.admin_url, timeout=30) as c:
            while not stop.is_set():
                r = c.get("/metrics")
                scraped.append(r.status_code)

    threads = [threading.Thread(target=scrape) for _ in range(3)]
    for t in threads:
        t.start()
    worst = 0.0
    try:
        for _ in range(100):
            start = time.perf_counter()
            r = client.post("/v1/models/lstm/predict", json={"inputs": [[[20.0, 500.0, 12.0]]]})
            assert r.status_code == 200
            worst = max(worst, time.perf_counter() - start)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert scraped and set(scraped) == {200}
    assert worst < 1.0, f"a request waited {worst:.2f} s while /metrics was scraped"

"""Large replies are written as the client reads them, over a real server (service/api/streamed.py).

A predict whose reply holds 1.92 million output values (4 sequences x 10,000 steps of a model
with 48 outputs per step, an 80 KB request) is a ~21 MB JSON body, and so is a bulk request
stepping 4 sessions 10,000 steps each. Encoded whole, clients that send them and never read
kept all of it in the server: three such took its RSS up by 132 MB (predict) and 108 MB
(bulk). Streamed, the server encodes only as far as the sockets' buffers take and then waits:
what stays is each result's float32 arrays (7.7 MB) and a chunk: +17-23 MB and +25-31 MB
for three. Meanwhile the server answers other clients. A client that reads slowly gets, over
chunked transfer encoding, exactly the bytes a server encoding whole answers
(SEQSERVE_STREAM_MIN_VALUES=0), for predict, a session step, a bulk request and V2 (JSON and
binary).
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import export_wide
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
SEQUENCES, STEPS, OUTPUTS = 4, 10_000, 48
VALUES = SEQUENCES * STEPS * OUTPUTS  # 1,920,000 output values: ~21 MB of JSON
STALLED = 3  # clients that never read, at once
ONE_TO_FOUR = tuple(f"streamed-session-{n}" for n in range(4))  # the same ids on both servers
# What a client that never reads may cost the server: the outputs (7.7 MB as float32) and the
# buffers around them; far under the body (~21 MB), which the old code held (+43 MB measured).
STALLED_GROWTH_BOUND = 12 * MB  # per client


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def _predict_body() -> bytes:
    values = np.random.default_rng(0).integers(0, 10, size=(SEQUENCES, STEPS, 1))
    return ('{"inputs":' + str(values.tolist()).replace(" ", "") + "}").encode()


def _never_reading(port: int, path: str, body: bytes) -> socket.socket:
    """A client that sends its request and reads nothing (a small receive buffer, so the
    kernel holds little of the reply on its side either)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    s.sendall(head.encode() + body)
    return s


def _settled_rss(pid: int, clients: list[socket.socket], timeout: float = 60.0) -> int:
    """The server's RSS once every reply has started and the server's memory stopped moving."""
    deadline = time.monotonic() + timeout
    for client in clients:
        client.settimeout(timeout)
        assert client.recv(16, socket.MSG_PEEK).startswith(b"HTTP/1.1 200")
    last, still = _rss(pid), 0
    while time.monotonic() < deadline and still < 5:
        time.sleep(0.2)
        now = _rss(pid)
        still = still + 1 if abs(now - last) < 256 * 1024 else 0
        last = now
    return last


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wide")
    export_wide(root, outputs=OUTPUTS)
    return root


def _bulk_body(c: httpx.Client) -> bytes:
    """A bulk request as large a reply as the predict's: 4 fresh sessions x 10,000 steps."""
    ids = [c.post("/v1/models/wide/sessions").json()["session_id"] for _ in range(SEQUENCES)]
    values = np.random.default_rng(0).integers(0, 10, size=(SEQUENCES, STEPS, 1)).tolist()
    entries = zip(ids, values, strict=True)
    steps = ",".join(f'{{"session_id":"{sid}","inputs":{str(v).replace(" ", "")}}}' for sid, v in entries)
    return ('{"steps":[' + steps + "]}").encode()


@pytest.mark.parametrize("path", ["/v1/models/wide/predict", "/v1/models/wide/sessions/steps"], ids=["predict", "bulk"])
def test_a_client_that_never_reads_holds_a_bounded_part_of_its_reply(
    repository: Path, tmp_path: Path, path: str
) -> None:
    with ServiceProcess(repository, tmp_path) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        assert server.proc is not None
        pid = server.proc.pid

        def body() -> bytes:
            return _predict_body() if path.endswith("predict") else _bulk_body(c)

        small = {"inputs": [[[1.0], [2.0]]]}
        for _ in range(3):
            assert c.post("/v1/models/wide/predict", json=small).status_code == 200
        # The same request read whole first: what a large request leaves behind in any case
        # (the allocator's and ONNX Runtime's) is not counted against the stalled ones.
        assert len(c.post(path, content=body()).content) > 20 * MB
        bodies = [body() for _ in range(STALLED)]
        time.sleep(0.5)
        before = _rss(pid)
        stalled = [_never_reading(server.port, path, b) for b in bodies]
        try:
            grown = _settled_rss(pid, stalled) - before
            # The server answers others meanwhile, promptly.
            started = time.perf_counter()
            assert c.get("/v2/health/live").status_code == 200
            r = c.post("/v1/models/wide/predict", json=small)
            assert r.status_code == 200 and len(r.json()["outputs"][0]) == 2
            assert time.perf_counter() - started < 2.0
            print(f"server RSS +{grown / MB:.1f} MB with {STALLED} replies of {VALUES:,} values unread ({path})")
            assert grown < STALLED * STALLED_GROWTH_BOUND, f"RSS grew by {grown / MB:.1f} MB"
        finally:
            for s in stalled:
                s.close()


@pytest.fixture(scope="module")
def servers(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The same model served streaming (the default) and encoding every reply whole."""
    work = tmp_path_factory.mktemp("servers")
    with (
        ServiceProcess(repository, work) as streaming,
        ServiceProcess(repository, work, {"SEQSERVE_STREAM_MIN_VALUES": "0"}) as whole,
    ):
        yield streaming.url, whole.url


def _slowly(client: httpx.Client, path: str, **kwargs) -> tuple[httpx.Response, bytes]:
    """A client reading the reply in small pieces with pauses between them."""
    pieces = []
    with client.stream("POST", path, **kwargs) as r:
        for i, piece in enumerate(r.iter_raw(16 * 1024)):
            pieces.append(piece)
            if i % 8 == 0:
                time.sleep(0.005)
    return r, b"".join(pieces)


def test_a_slow_reader_gets_the_bytes_of_the_whole_encoding(servers: tuple[str, str]) -> None:
    rng = np.random.default_rng(1)
    readings = rng.standard_normal((2000, 1)).round(3).tolist()
    bulk_inputs = rng.standard_normal((3, 300, 1)).round(3).tolist()
    v2 = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 500, 1], "data": [0.5] * 1000}]}
    v2_binary = {**v2, "parameters": {"binary_data_output": True}}
    bodies: dict[str, list[tuple[httpx.Response, bytes]]] = {}
    for url in servers:
        with httpx.Client(base_url=url, timeout=120) as c:
            got = bodies[url] = []
            got.append(_slowly(c, "/v1/models/wide/predict", content=_predict_body()))
            for sid in ONE_TO_FOUR:
                assert c.post("/v1/models/wide/sessions", json={"session_id": sid}).status_code == 201
            step = {"inputs": readings, "position": 0}
            got.append(_slowly(c, f"/v1/sessions/{ONE_TO_FOUR[0]}/steps", json=step))
            got.append(_slowly(c, f"/v1/sessions/{ONE_TO_FOUR[0]}/steps", json=step))  # a retry: replayed
            ids = ONE_TO_FOUR[1:]
            steps = [{"session_id": s, "inputs": x} for s, x in zip(ids, bulk_inputs, strict=True)]
            got.append(_slowly(c, "/v1/models/wide/sessions/steps", json={"steps": steps}))
            got.append(_slowly(c, "/v2/models/wide/infer", json=v2))
            got.append(_slowly(c, "/v2/models/wide/infer", json=v2_binary))
    streamed, whole = bodies[servers[0]], bodies[servers[1]]
    for (r, body), (r_whole, body_whole) in zip(streamed, whole, strict=True):
        assert r.status_code == r_whole.status_code == 200, body[:300]
        assert body == body_whole, r.request.url
        assert r_whole.headers["content-length"] == str(len(body_whole))
    for r, _ in streamed[:-1]:
        assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
    assert (
        streamed[-1][0].headers["inference-header-content-length"]
        == whole[-1][0].headers["inference-header-content-length"]
    )
    assert streamed[-1][0].headers["content-length"] == str(len(whole[-1][1]))  # binary: length known
    assert len(streamed[0][1]) > 20 * MB


def test_a_reply_left_unread_is_given_up_after_the_send_timeout(repository: Path, tmp_path: Path) -> None:
    """SEQSERVE_SEND_TIMEOUT_SECONDS: a client that reads nothing while the server's write buffer
    stays full has its connection closed (what its reply held is let go); counted and logged.
    A client that reads is not affected, however long its reply takes."""
    env = {"SEQSERVE_SEND_TIMEOUT_SECONDS": "1"}
    body = _predict_body()
    with ServiceProcess(repository, tmp_path, env) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        stalled = _never_reading(server.port, "/v1/models/wide/predict", body)
        try:
            stalled.settimeout(60)
            assert stalled.recv(16, socket.MSG_PEEK).startswith(b"HTTP/1.1 200")
            time.sleep(3)
            received = []
            try:
                while piece := stalled.recv(1 << 20):  # what the sockets' buffers held, then the end
                    received.append(piece)
            except ConnectionResetError:
                pass
            got = b"".join(received)
        finally:
            stalled.close()
        assert len(got) < 10 * MB and not got.endswith(b"0\r\n\r\n"), len(got)  # the reply was cut short
        assert "read nothing of its reply for 1 s" in server.log()
        metrics = httpx.get(f"{server.admin_url}/metrics").text
        assert 'seqserve_refusals_total{limit="send_timeout_seconds"} 1.0' in metrics
        _, whole = _slowly(c, "/v1/models/wide/predict", content=body)  # a reader: the whole reply
        assert len(whole) > 20 * MB and whole.endswith(b"]]]}")


def test_sigterm_does_not_wait_the_grace_for_a_client_that_never_reads(repository: Path, tmp_path: Path) -> None:
    """At shutdown a reply still being written goes on, but a client not reading it gets a
    moment (2 s of a full buffer), not the whole grace period (40 s), and the log stays clean."""
    server = ServiceProcess(repository, tmp_path).start()
    try:
        assert server.proc is not None
        stalled = _never_reading(server.port, "/v1/models/wide/predict", _predict_body())
        _settled_rss(server.proc.pid, [stalled])
        started = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=60)
        took = time.monotonic() - started
        stalled.close()
    finally:
        server.stop(signal.SIGKILL)
    assert code in (0, -signal.SIGTERM) and took < 10, (code, took)
    assert "Traceback" not in server.log() and "read nothing of its reply for 2 s" in server.log()

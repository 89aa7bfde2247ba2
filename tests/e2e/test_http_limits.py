"""Connection-level limits, tried with real sockets against a real uvicorn process: header
size, header-read and keep-alive timeouts, the connection limit, WebSocket message size."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

LIMITS = {
    "SEQSERVE_MAX_HEADER_BYTES": "8192",
    "SEQSERVE_HEADER_TIMEOUT_SECONDS": "2",
    "SEQSERVE_KEEP_ALIVE_TIMEOUT_SECONDS": "1",
    "SEQSERVE_MAX_CONNECTIONS": "6",
    "SEQSERVE_WS_MAX_MESSAGE_BYTES": "65536",
    "SEQSERVE_BODY_TIMEOUT_SECONDS": "2",
    "SEQSERVE_WS_IDLE_TIMEOUT_SECONDS": "2",
    "SEQSERVE_MAX_CONNECTIONS_PER_CLIENT": "0",  # every test client is 127.0.0.1 (the per-client cap: below)
}


@pytest.fixture(scope="module")
def limited(repository, tmp_path_factory) -> Iterator[ServiceProcess]:
    with ServiceProcess(repository, tmp_path_factory.mktemp("limits"), LIMITS) as proc:
        yield proc


def _connect(server: ServiceProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return b"".join(chunks)


def _healthy(server: ServiceProcess) -> bool:
    return httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200


def test_huge_header_is_refused_quickly_never_answered(limited):
    sock = _connect(limited)
    start = time.monotonic()
    sent = 0
    try:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        block = b"a" * (1 << 20)
        while sent < 64 << 20:
            sock.sendall(block)
            sent += len(block)
        sock.sendall(b"\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = _read_all(sock)
    sock.close()
    elapsed = time.monotonic() - start
    assert sent < 64 << 20, "the server read a 64 MiB header to its end"
    assert elapsed < 10
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
    if reply:  # a reset may discard the answer; if it arrived, it is the 431
        assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == "headers_too_large"
    assert _healthy(limited)


def test_header_just_over_the_limit_gets_431_and_under_it_200(limited):
    r = httpx.get(f"{limited.url}/v2/health/live", headers={"x-pad": "a" * 6000}, timeout=5)
    assert r.status_code == 200
    sock = _connect(limited)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000)  # no end: no RST race
    reply = _read_all(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]


def test_request_body_in_the_same_read_as_headers_is_not_counted_as_headers(limited):
    body = json.dumps({"inputs": [[[20.0, 500.0, 12.0]] * 3000]}).encode()  # ~60 KB > header limit
    head = b"POST /v1/models/lstm/predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
    sock = _connect(limited)
    sock.sendall(head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
    reply = _read_all(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]


def test_unfinished_headers_are_timed_out(limited):
    sock = _connect(limited)
    start = time.monotonic()
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # never finished
    reply = _read_all(sock)
    elapsed = time.monotonic() - start
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert 1.5 < elapsed < 6


def test_silent_connection_is_closed_after_the_header_timeout(limited):
    sock = _connect(limited)
    start = time.monotonic()
    assert _read_all(sock) == b""
    sock.close()
    assert 1.5 < time.monotonic() - start < 6


def test_idle_keep_alive_connection_is_closed(limited):
    sock = _connect(limited)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    start = time.monotonic()
    assert _read_all(sock) == b""  # closed by the server, not by us
    sock.close()
    assert time.monotonic() - start < 4


def test_connections_beyond_the_limit_get_503_and_the_rest_keep_working(limited):
    held = [_connect(limited) for _ in range(6)]
    try:
        time.sleep(0.2)
        extra = _connect(limited)  # beyond the limit: the reserve, for health checks only
        extra.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _read_all(extra)
        extra.close()
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == "too_many_connections"
        # The probes still answer while every connection is held (they used to get 503).
        assert _healthy(limited)
        # A held connection still gets its answer.
        held[0].sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert _healthy(limited)


def test_websocket_message_over_the_limit_closes_with_1009(limited):
    r = httpx.post(f"{limited.url}/v1/models/lstm/sessions", json={}, timeout=10)
    assert r.status_code in (200, 201), r.text
    sid = r.json()["session_id"]
    with connect(f"ws://127.0.0.1:{limited.port}/v1/sessions/{sid}/stream", max_size=None) as ws:
        ws.send(json.dumps({"inputs": [[20.0, 500.0, 12.0]]}))
        assert "outputs" in json.loads(ws.recv(timeout=10))
        ws.send("[" + " " * 100_000 + "]")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert _healthy(limited)


def test_a_body_that_does_not_arrive_in_time_closes_the_connection(limited):
    sock = _connect(limited)
    start = time.monotonic()
    sock.sendall(b"POST /v1/models/lstm/predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n")
    sock.sendall(b'content-length: 1000\r\n\r\n{"inputs": ')  # then nothing more
    reply = _read_all(sock)
    sock.close()
    assert 1.5 < time.monotonic() - start < 8, reply[:200]
    assert not reply.startswith(b"HTTP/1.1 200")
    assert _healthy(limited)


def test_an_idle_websocket_is_closed(limited):
    sid = httpx.post(f"{limited.url}/v1/models/lstm/sessions", json={}, timeout=10).json()["session_id"]
    with connect(f"ws://127.0.0.1:{limited.port}/v1/sessions/{sid}/stream") as ws:
        ws.send(json.dumps({"inputs": [[20.0, 500.0, 12.0]]}))
        assert "outputs" in json.loads(ws.recv(timeout=10))
        start = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)  # nothing sent: the server closes it
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert "ws_idle_timeout_seconds" in closed.value.rcvd.reason
    assert 1.5 < time.monotonic() - start < 8


def test_one_client_cannot_hold_every_connection(repository, tmp_path):
    env = {"SEQSERVE_MAX_CONNECTIONS": "8", "SEQSERVE_MAX_CONNECTIONS_PER_CLIENT": "3"}
    with ServiceProcess(repository, tmp_path, env) as server:
        held = [_connect(server) for _ in range(3)]
        try:
            time.sleep(0.2)
            extra = _connect(server)
            reply = _read_all(extra)
            extra.close()
            assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
            body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
            assert body["code"] == "too_many_connections" and "at most 3" in body["error"]
            # Another client address is served (Linux routes all of 127/8 to loopback).
            other = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=("127.0.0.2", 0))
            other.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert other.recv(65536).startswith(b"HTTP/1.1 200")
            other.close()
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert _healthy(server)

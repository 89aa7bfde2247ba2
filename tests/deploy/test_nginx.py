"""service/deploy/nginx.conf, run for real by nginx in front of stub replicas on loopback.

Checks the behaviour the config promises: `nginx -t` on both the compose upstreams and the test
rendering, consistent hashing on the session id (one session's requests reach one replica, other
requests spread over all), keep-alive to upstreams, retries only where safe (GET
and stateless predict are re-sent to the next replica, a session step that reached a failing
replica is not), WebSocket upgrade headers on /stream, the 8 MiB body limit, the client's
X-Request-ID kept (one generated only when absent), admin and metrics never proxied, the
per-client-address cap on requests in progress.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.conftest import free_port, require_tool
from tests.deploy.nginx_topology import DEPLOY, check_config, rendered_nginx_dir, start_nginx
from tests.support.tier import starts

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


@dataclass
class Stub:
    """A fake replica: answers JSON describing the request, or drops the connection."""

    name: str
    drop: bool = False  # close the connection without answering (a crashed replica)
    hold: threading.Event | None = None  # when given, every request waits for it (a slow replica)
    hits: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def start(self) -> Stub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stub.hits.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                if stub.hold is not None:
                    stub.hold.wait(30)
                if stub.drop:
                    self.close_connection = True
                    return
                body = json.dumps({"replica": stub.name, "path": self.path, "received": length}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # listen backlog: nginx may open hundreds at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
@starts("nginx")
def nginx() -> str:
    return require_tool("nginx", "apt-get install nginx")


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, data
    finally:
        conn.close()


@pytest.fixture
def topology(nginx: str, tmp_path: Path) -> Iterator[tuple[int, Stub, Stub]]:
    """nginx on a free port in front of stub replicas a (answers) and b (set .drop to break it)."""
    a, b = Stub("a").start(), Stub("b").start()
    port = free_port()
    try:
        with start_nginx(nginx, tmp_path / "nginx", port, [a.port, b.port]):
            yield port, a, b
    finally:
        a.stop()
        b.stop()


def test_nginx_t_accepts_the_compose_and_the_test_rendering(nginx: str, tmp_path: Path) -> None:
    # Test rendering: the repo's nginx.conf unchanged plus loopback listen/upstreams.
    result = check_config(nginx, rendered_nginx_dir(tmp_path / "local", free_port(), [free_port(), free_port()]))
    assert result.returncode == 0, result.stderr
    # Compose rendering: the repo's own listen.conf/upstreams.conf. `nginx -t` resolves upstream
    # host names and seqserve-N only exist on the compose network, so those (and only those) are
    # mapped to 127.0.0.1 for the check.
    compose_dir = tmp_path / "compose"
    compose_dir.mkdir()
    for name in ("nginx.conf", "listen.conf"):
        (compose_dir / name).write_text((DEPLOY / name).read_text())
    # grpc.conf too (its limit_conn names the zone nginx.conf declares), hosts mapped likewise.
    (compose_dir / "grpc.conf").write_text(re.sub(r"seqserve-\d+:", "127.0.0.1:", (DEPLOY / "grpc.conf").read_text()))
    upstreams = (DEPLOY / "upstreams.conf").read_text()
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstreams, re.M)
    assert servers == [("seqserve-1", "8000"), ("seqserve-2", "8000")]
    (compose_dir / "upstreams.conf").write_text(re.sub(r"seqserve-\d+:", "127.0.0.1:", upstreams))
    result = check_config(nginx, compose_dir / "nginx.conf")
    assert result.returncode == 0, result.stderr
    assert "listen 80;" in (DEPLOY / "listen.conf").read_text()


def test_config_text_has_the_promised_directives() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "client_max_body_size 8m;" in code
    assert re.search(r"upstream seqserve \{[^}]*include upstreams\.conf;[^}]*keepalive \d+;", code, re.S)
    assert re.search(r"upstream seqserve \{\s*hash \$seqserve_affinity consistent;", code)
    for balancing in ("ip_hash", "sticky", "least_conn"):
        assert balancing not in code, f"{balancing}: replicas are chosen by the session id's hash"
    # non_idempotent appears exactly once: on the stateless predict location.
    assert code.count("non_idempotent") == 1
    predict = re.search(r"location ~ \^/v1/models/\[\^/\]\+/predict\$ \{([^}]*)\}", code)
    assert predict and "non_idempotent" in predict.group(1)
    stream = re.search(r"location ~ \^/v1/sessions/\[\^/\]\+/stream\$ \{([^}]*)\}", code)
    assert stream and "Upgrade $http_upgrade" in stream.group(1) and "$connection_upgrade" in stream.group(1)


def test_requests_without_a_session_spread_over_both_replicas_with_keepalive(topology: tuple[int, Stub, Stub]) -> None:
    port, a, b = topology
    replicas = [json.loads(request(port, "GET", "/v1/models")[1])["replica"] for _ in range(60)]
    # hashed on each request's random id: an even split, at random (binomial, p < 1e-4 below 15)
    assert replicas.count("a") >= 15 and replicas.count("b") >= 15, replicas
    for _, _, headers in a.hits + b.hits:
        assert headers.get("connection", "") != "close"  # keep-alive to the upstreams
        assert headers.get("x-request-id") and headers.get("x-forwarded-for") == "127.0.0.1"


def test_one_sessions_requests_reach_one_replica_and_sessions_spread(topology: tuple[int, Stub, Stub]) -> None:
    """Consistent hashing on the session id keeps each replica's record cache hot."""
    port, _, _ = topology
    body = json.dumps({"inputs": [[1.0]]}).encode()
    homes: dict[str, set[str]] = {}
    for k in range(24):
        sid = f"session-{k}"
        for _ in range(3):
            status, data = request(port, "POST", f"/v1/sessions/{sid}/steps", body)
            assert status == 200
            homes.setdefault(sid, set()).add(json.loads(data)["replica"])
        status, data = request(port, "GET", f"/v1/sessions/{sid}")
        homes[sid].add(json.loads(data)["replica"])
    assert all(len(replicas) == 1 for replicas in homes.values()), homes
    spread = [next(iter(r)) for r in homes.values()]
    assert spread.count("a") >= 4 and spread.count("b") >= 4, spread


def test_predict_and_get_are_retried_on_the_other_replica(topology: tuple[int, Stub, Stub]) -> None:
    port, _, b = topology
    b.drop = True
    body = json.dumps({"inputs": [[[1.0]]]}).encode()
    for _ in range(4):
        status, data = request(port, "POST", "/v1/models/demo/predict", body)
        assert status == 200 and json.loads(data)["replica"] == "a"
        status, data = request(port, "GET", "/v2/health/ready")
        assert status == 200 and json.loads(data)["replica"] == "a"
    assert b.hits, "the broken replica was never tried"


def test_session_steps_that_reached_a_replica_are_not_resent(topology: tuple[int, Stub, Stub]) -> None:
    port, a, b = topology
    b.drop = True
    body = json.dumps({"inputs": [[1.0]], "position": 0}).encode()
    paths = [f"/v1/sessions/s{k}/steps" for k in range(8)]  # some hash to b (the other test checks)
    statuses = [request(port, "POST", path, body)[0] for path in paths]
    steps_on_b = [hit for hit in b.hits if hit[1] in paths]
    steps_on_a = [hit for hit in a.hits if hit[1] in paths]
    assert steps_on_b, "the broken replica was never tried"
    # Every step that went to the broken replica came back as 502 and was applied nowhere else.
    assert statuses.count(502) == len(steps_on_b), statuses
    assert statuses.count(200) == len(steps_on_a) == len(paths) - len(steps_on_b)


def test_post_that_never_reached_a_replica_fails_over(nginx: str, tmp_path: Path) -> None:
    a = Stub("a").start()
    dead = free_port()  # nothing listens: connection refused, the request was never sent
    port = free_port()
    try:
        with start_nginx(nginx, tmp_path / "nginx", port, [a.port, dead]):
            for _ in range(4):
                status, data = request(port, "POST", "/v1/sessions/s1/steps", b'{"inputs": [[1.0]]}')
                assert status == 200 and json.loads(data)["replica"] == "a"
    finally:
        a.stop()


def test_websocket_upgrade_headers_on_stream(topology: tuple[int, Stub, Stub]) -> None:
    port, a, b = topology
    request(port, "GET", "/v1/sessions/s1/stream", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    (hit,) = [h for h in a.hits + b.hits if h[1] == "/v1/sessions/s1/stream"]
    assert hit[2].get("upgrade") == "websocket"
    assert hit[2].get("connection", "").lower() == "upgrade"


def test_body_limit_matches_the_service(topology: tuple[int, Stub, Stub]) -> None:
    port, _, _ = topology
    status, data = request(port, "POST", "/v1/models/demo/predict", b"0" * (8 * MiB - 1024))
    assert status == 200 and json.loads(data)["received"] == 8 * MiB - 1024
    status, _ = request(port, "POST", "/v1/models/demo/predict", b"0" * (8 * MiB + 1))
    assert status == 413


def test_client_request_id_is_kept_and_generated_only_when_absent(topology: tuple[int, Stub, Stub]) -> None:
    port, a, b = topology
    request(port, "GET", "/v1/models", headers={"X-Request-ID": "client-chosen-id-42"})
    request(port, "GET", "/v1/models/x")
    by_path = {hit[1]: hit[2] for hit in a.hits + b.hits}
    assert by_path["/v1/models"]["x-request-id"] == "client-chosen-id-42"
    generated = by_path["/v1/models/x"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated), generated


def test_admin_and_metrics_are_never_proxied(topology: tuple[int, Stub, Stub]) -> None:
    port, a, b = topology
    for method, path in (
        ("GET", "/metrics"),
        ("GET", "/v1/admin/sessions"),
        ("POST", "/v1/admin/reload"),
        ("POST", "/v1/admin/models/m/versions/1/unload"),
    ):
        status, data = request(port, method, path, headers={"X-API-Key": "admin-key-0123456789"})
        assert status == 404, (path, status)
        assert json.loads(data)["code"] == "not_found"
    assert not a.hits and not b.hits, "an admin or metrics request reached a replica"
    upstreams = (DEPLOY / "upstreams.conf").read_text()
    assert ":8082" not in upstreams and re.findall(r"server\s+\S+:(\d+)", upstreams) == ["8000", "8000"]


def _limit(pattern: str, text: str) -> int:
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    match = re.search(pattern, code)
    assert match, pattern
    return int(match.group(1))


def _send(port: int, path: str, source: str = "127.0.0.1") -> socket.socket:
    """A raw request from `source` (any 127.x address reaches nginx on loopback), left unread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return sock


def _reply(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_requests_in_progress_are_capped_per_client_address(nginx: str, tmp_path: Path) -> None:
    """One address holding the cap of slow requests is refused at the edge; another is not."""
    text = (DEPLOY / "nginx.conf").read_text()
    cap = _limit(r"limit_conn seqserve_per_client (\d+);", text)
    assert _limit(r"limit_conn seqserve_per_client (\d+);", (DEPLOY / "grpc.conf").read_text()) == cap
    hold = threading.Event()
    a, b = Stub("a", hold=hold).start(), Stub("b", hold=hold).start()
    port = free_port()
    try:
        with start_nginx(nginx, tmp_path / "nginx", port, [a.port, b.port]):
            held = [_send(port, f"/v1/models/m{k}") for k in range(cap)]
            deadline = time.monotonic() + 20
            while len(a.hits) + len(b.hits) < cap and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(a.hits) + len(b.hits) == cap  # every one of them is in progress upstream
            started = time.monotonic()
            status, body = _reply(_send(port, "/v1/models/over"))
            assert status == 503 and time.monotonic() - started < 5  # refused at once, not queued
            error = json.loads(body)
            assert error["code"] == "too_many_connections" and error["limit"] == cap
            assert str(cap) in error["error"]
            assert all(hit[1] != "/v1/models/over" for hit in a.hits + b.hits), "the refused one was proxied"
            # nginx's own health answers, and another client address is served meanwhile.
            assert _reply(_send(port, "/nginx-health"))[0] == 200
            other = _send(port, "/v1/models/other", source="127.0.0.2")
            hold.set()
            assert _reply(other)[0] == 200
            assert [_reply(sock)[0] for sock in held] == [200] * cap
            # The slots are released with the replies: the same address is served again.
            assert request(port, "GET", "/v1/models/after")[0] == 200
    finally:
        hold.set()
        a.stop()
        b.stop()

"""service/deploy/redis.conf is accepted by a real redis-server and turns on the append-only file."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from tests.deploy.conftest import REPO, free_port, require_tool


def command(port: int, *args: str) -> bytes:
    """One RESP command over a raw socket (no client library needed)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        time.sleep(0.1)
        return s.recv(65536)


def test_redis_conf_loads_with_aof(tmp_path: Path) -> None:
    redis_server = require_tool("redis-server", "apt-get install redis-server")
    port = free_port()
    # Arguments after the file override it: loopback, a free port and a scratch dir for the test.
    proc = subprocess.Popen(
        [redis_server, str(REPO / "service/deploy/redis.conf"), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(tmp_path), "--daemonize", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            with contextlib.suppress(OSError):
                if command(port, "PING").startswith(b"+PONG"):
                    break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        assert b"yes" in command(port, "CONFIG", "GET", "appendonly")
        assert b"everysec" in command(port, "CONFIG", "GET", "appendfsync")
        assert b"noeviction" in command(port, "CONFIG", "GET", "maxmemory-policy")
        command(port, "SET", "k", "v")
        time.sleep(0.3)
        assert any(tmp_path.rglob("appendonly.aof*")), list(tmp_path.rglob("*"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

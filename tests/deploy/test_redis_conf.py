"""service/deploy/redis.conf is accepted by a real redis-server and turns on the append-only file."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, free_port, require_tool

pytestmark = pytest.mark.e2e


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


def test_redis_sh_starts_with_the_secret_password_and_maxmemory(tmp_path: Path) -> None:
    """service/deploy/redis.sh (the compose entrypoint): password from the secret file, never
    on the command line; unauthenticated clients are refused; writes fail at maxmemory
    instead of evicting."""
    require_tool("redis-server", "apt-get install redis-server")
    require_tool("redis-cli", "apt-get install redis-tools")
    port = free_port()
    secret = tmp_path / "redis_password"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "REDIS_PASSWORD_FILE": str(secret),
        "REDIS_CONF": str(REPO / "service/deploy/redis.conf"),
        "TMPDIR": str(tmp_path),
    }
    script = str(REPO / "service/deploy/redis.sh")
    overrides = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--daemonize", "no"]
    proc = subprocess.Popen(
        ["sh", script, "start", *overrides], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            with contextlib.suppress(OSError):
                if command(port, "PING").startswith(b"-NOAUTH"):
                    break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"0123456789abcdef" not in cmdline, "the password must not be a process argument"
        assert command(port, "AUTH", "wrong").startswith(b"-WRONGPASS")
        health = subprocess.run(["sh", script, "health", "-p", str(port)], env=env, capture_output=True, timeout=10)
        assert health.returncode == 0, health
        secret.write_text("not-the-password\n")
        health = subprocess.run(["sh", script, "health", "-p", str(port)], env=env, capture_output=True, timeout=10)
        assert health.returncode != 0, "a wrong password must fail the healthcheck"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                b"AUTH 0123456789abcdef0123456789abcdef\r\nCONFIG GET maxmemory\r\nCONFIG GET maxmemory-policy\r\n"
            )
            time.sleep(0.2)
            data = s.recv(65536)
        assert str(256 * 1024 * 1024).encode() in data and b"noeviction" in data, data
    finally:
        proc.terminate()
        proc.wait(timeout=10)

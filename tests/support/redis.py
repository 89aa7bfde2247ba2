"""A real redis-server for tests: a free loopback port, its own data directory, AOF on.

with RedisProcess(tmp_path) as r:
    r.url          # redis://127.0.0.1:PORT/0
    r.stop()       # SIGTERM: clean shutdown, AOF flushed
    r.kill()       # SIGKILL: like a crash
    r.pause()      # SIGSTOP (r.resume(): SIGCONT)
    r.start()      # same port, same directory: the AOF is replayed
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.servers import free_port, require


def _ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


class RedisProcess:
    def __init__(self, directory: Path, port: int | None = None, appendonly: bool = True) -> None:
        self.binary = require("redis-server")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.log_path = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--maxmemory-policy", "noeviction",
            "--logfile", "",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.directory)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if _ping(self.port):
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"redis-server not answering PING after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig != signal.SIGKILL:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot stop
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections open, nothing answered) until resume()."""
        if self.proc is not None and self.running:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.running:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, sig: int = signal.SIGTERM) -> RedisProcess:
        self.stop(sig)
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

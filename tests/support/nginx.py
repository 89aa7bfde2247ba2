"""nginx in front of local replicas, with the configuration docker-compose.yml mounts.

service/deploy/nginx.conf is copied unchanged into a temporary directory, next to the two
files it includes, written here with loopback addresses (compose mounts
service/deploy/listen.conf and service/deploy/upstreams.conf instead):

    listen.conf      listen 127.0.0.1:PORT;
    upstreams.conf   server 127.0.0.1:P1 max_fails=2 fail_timeout=5s; ...

nginx runs in the foreground with its prefix, pid file and log in that directory.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.servers import ROOT, free_port, require

NGINX_CONF = ROOT / "service" / "deploy" / "nginx.conf"
UPSTREAM_OPTIONS = "max_fails=2 fail_timeout=5s"  # as in service/deploy/upstreams.conf


def render(directory: Path, listen_port: int, upstream_ports: Sequence[int]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    shutil.copyfile(NGINX_CONF, conf)
    (directory / "listen.conf").write_text(f"listen 127.0.0.1:{listen_port};\n")
    (directory / "upstreams.conf").write_text(
        "".join(f"server 127.0.0.1:{port} {UPSTREAM_OPTIONS};\n" for port in upstream_ports)
    )
    return conf


class NginxProcess:
    def __init__(self, directory: Path, upstream_ports: Sequence[int], port: int | None = None) -> None:
        self.binary = require("nginx")
        self.directory = directory
        self.port = port or free_port()
        self.conf = render(directory, self.port, upstream_ports)
        self.log_path = directory / "nginx.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        directives = f"daemon off; pid {self.directory / 'nginx.pid'};"
        return [self.binary, "-p", str(self.directory), "-c", str(self.conf), "-g", directives, *extra]

    def start(self, timeout: float = 10.0) -> NginxProcess:
        check = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.02)
        raise TimeoutError(f"nginx not listening on {self.port} after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: fast shutdown
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

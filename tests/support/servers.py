"""Real server processes for end-to-end tests: the service under uvicorn (started exactly as
`seqserve serve` starts it), redis-server and nginx. Each binds a free loopback port and is
stopped (and its log shown on failure) when the test is done."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from tests.support.tier import heavy

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(binary: str) -> str:
    """A system binary the test needs: under CI its absence is a failure, not a skip. Only
    tests marked slow or e2e may start one (tests/support/tier.py)."""
    heavy(binary)
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None
    )
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is not installed (make test installs it)")
        pytest.skip(f"{binary} is not installed")
    return path


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s:\n{log.read_text() if log else ''}")


class ServiceProcess:
    """`python -m seqserve.cli serve` on a loopback port, with SEQSERVE_* settings."""

    def __init__(self, repository: Path, workdir: Path, env: Mapping[str, str] | None = None, port: int | None = None):
        self.repository = repository
        self.port = port or free_port()
        self.grpc_port = free_port()  # KServe V2 gRPC; never the default 8001, tests run side by side
        self.admin_port = int((env or {}).get("SEQSERVE_ADMIN_PORT") or free_port())
        self.log_path = workdir / f"service-{self.port}.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SEQSERVE_HOST": "127.0.0.1",
            "SEQSERVE_PORT": str(self.port),
            "SEQSERVE_GRPC_PORT": str(self.grpc_port),
            "SEQSERVE_ADMIN_PORT": str(self.admin_port),
            "SEQSERVE_MODEL_REPOSITORY": str(repository),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """The admin listener (/v1/admin/*, /metrics): never the data port."""
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        heavy("a service process")
        log = self.log_path.open("ab")
        # Its own process group: a server with workers is a supervisor plus children, and a
        # stop that has to kill must take the children too (or they keep their ports).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqserve.cli", "serve"],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
            start_new_session=True,
        )
        wait_for(
            lambda: httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200,
            timeout,
            "service",
            self.proc,
            self.log_path,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        # Whatever is left of the group (workers of a killed supervisor) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return code if code is not None else self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __enter__(self) -> ServiceProcess:
        """Starts the process unless `start(timeout=...)` already did (a slower start allowed)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

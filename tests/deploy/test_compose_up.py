"""The project's own docker-compose.yml, brought up for real with podman-compose.

Images: the serving image is built from the Dockerfile (on the stand-in Python base, as in
test_container.py); Redis and nginx are local stand-ins (standin_services.sh), passed through
the compose file's REDIS_IMAGE / NGINX_IMAGE / SEQSERVE_IMAGE overrides: no registry pulls.
Secrets are generated into a temporary SEQSERVE_SECRETS_DIR; the `models` volume is filled with
a demo model before `up`.

Then, through nginx: one session streams positioned steps while a replica container is killed
and the Redis container restarted; every step is retried with its position until it is
answered, and the outputs and final state must equal one stateless prediction over the whole
sequence (nothing lost, nothing applied twice). Also: no data without a key, and neither the
admin API nor /metrics through nginx.

Needs root, podman, runc, debootstrap, podman-compose (dev extra). Under CI=true a missing one
fails the test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.deploy.conftest import REPO, free_port, require_root, require_tool
from tests.support.tier import starts

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

TAG = uuid.uuid4().hex[:8]
SEQSERVE_IMAGE = "localhost/seqserve:compose-test"
REDIS_IMAGE = "localhost/seqserve-standin/redis:7"
NGINX_IMAGE = "localhost/seqserve-standin/nginx:1"
RUN_ARGS = "--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
STEPS = 40


def sh(*cmd: str, timeout: float = 300, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} -> {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
@starts("podman containers")
def podman() -> str:
    require_root("rootful podman with runc")
    for tool, package in (("runc", "runc"), ("debootstrap", "debootstrap")):
        require_tool(tool, f"apt-get install {package}")
    return require_tool("podman", "apt-get install podman")


@pytest.fixture(scope="module")
def compose_cmd(podman: str) -> list[str]:
    return [require_tool("podman-compose", "pip install podman-compose (dev extra)")]


@pytest.fixture(scope="module")
def images(podman: str) -> None:
    """Stand-in bases (cached by tag), then the serving image (layer-cached by podman)."""
    if sh(podman, "image", "exists", "python:3.11-slim", check=False).returncode != 0:
        sh("bash", str(REPO / "tests/deploy/standin_base.sh"), timeout=900)
    env = {**os.environ, "REDIS_TAG": REDIS_IMAGE, "NGINX_TAG": NGINX_IMAGE}
    sh("bash", str(REPO / "tests/deploy/standin_services.sh"), timeout=900, env=env)
    build = ["build", "--isolation=chroot", "--pull=never", "--format", "docker", "--target", "serve"]
    sh(podman, *build, "-t", SEQSERVE_IMAGE, str(REPO), timeout=900)


class Project:
    def __init__(self, podman: str, compose: list[str], root: Path) -> None:
        self.podman = podman
        self.name = f"seqtest{TAG}"
        self.port = free_port()
        self.secrets = root / "secrets"
        self.secrets.mkdir(mode=0o700)
        self.api_key = secrets.token_hex(32)
        self.admin_key = secrets.token_hex(32)
        for name, value in (
            ("api_keys", f"{self.api_key}\n"),
            ("admin_key", f"{self.admin_key}\n"),
            ("redis_password", f"{secrets.token_hex(32)}\n"),
        ):
            path = self.secrets / name
            path.write_text(value)
            path.chmod(0o644)
        self.env = {
            **os.environ,
            "SEQSERVE_IMAGE": SEQSERVE_IMAGE,
            "REDIS_IMAGE": REDIS_IMAGE,
            "NGINX_IMAGE": NGINX_IMAGE,
            "SEQSERVE_SECRETS_DIR": str(self.secrets),
            "SEQSERVE_HTTP_PORT": str(self.port),
        }
        self.compose = [*compose, "-f", str(REPO / "docker-compose.yml"), "-p", self.name, "--in-pod", "false"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return sh(*self.compose, *args, timeout=timeout, check=check, env=self.env)

    def container(self, service: str) -> str:
        labels = ["--filter", f"label=com.docker.compose.project={self.name}"]
        labels += ["--filter", f"label=com.docker.compose.service={service}"]
        out = sh(self.podman, "ps", "-a", *labels, "--format", "{{.Names}}").stdout.split()
        assert len(out) == 1, (service, out)
        return out[0]

    def fill_models(self, repository: Path) -> None:
        volume = f"{self.name}_models"
        sh(self.podman, "volume", "create", volume)
        mountpoint = Path(sh(self.podman, "volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip())
        shutil.copytree(repository, mountpoint, dirs_exist_ok=True)
        for path in [mountpoint, *mountpoint.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)

    def logs(self) -> str:
        out = []
        for service in ("redis", "seqserve-1", "seqserve-2", "nginx"):
            result = sh(self.podman, "logs", "--tail", "40", f"{self.name}_{service}_1", check=False)
            out.append(f"--- {service}\n{result.stdout[-2500:]}{result.stderr[-2500:]}")
        return "\n".join(out)


@pytest.fixture(scope="module")
def project(
    podman: str, compose_cmd: list[str], images: None, demo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    proj = Project(podman, compose_cmd, tmp_path_factory.mktemp("compose"))
    proj.fill_models(demo_repository)
    try:
        proj.run(f"--podman-run-args={RUN_ARGS}", "up", "-d", timeout=900)
        wait_ready(proj)
        yield proj
    finally:
        sys.stderr.write(proj.logs() + "\n")
        proj.run("down", "-v", "-t", "5", check=False, timeout=300)
        sh(podman, "volume", "rm", "-f", f"{proj.name}_models", f"{proj.name}_redis-data", check=False)


def wait_ready(proj: Project, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{proj.url}/v1/models", headers={"X-API-Key": proj.api_key}, timeout=5)
            # both replicas answer (nginx round-robins; a few GETs reach each)
            if (
                r.status_code == 200
                and "demo" in r.text
                and all(httpx.get(f"{proj.url}/v2/health/ready", timeout=5).status_code == 200 for _ in range(4))
            ):
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(2)
    pytest.fail(f"compose topology not ready after {timeout}s: {last}\n{proj.logs()}")


def step(client: httpx.Client, sid: str, x: np.ndarray, position: int, failures: list[str]) -> dict:
    """One positioned step, retried (same position, same inputs) until it is answered."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            r = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x.tolist(), "position": position})
        except httpx.HTTPError as exc:
            failures.append(type(exc).__name__)
            time.sleep(0.5)
            continue
        if r.status_code == 200:
            return r.json()
        assert r.status_code in (502, 503, 504), r.text  # never a 409 or 4xx for a positioned retry
        failures.append(str(r.status_code))
        time.sleep(0.5)
    pytest.fail(f"step at position {position} not answered in 120 s: {failures[-5:]}")


def answered(send) -> dict:
    """An idempotent read (session info, stateless predict), retried like a client would while
    nginx briefly has no live upstream after the faults (502/503/504 or a dropped connection)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            r = send()
            if r.status_code == 200:
                return r.json()
            assert r.status_code in (502, 503, 504), r.text
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("read not answered in 60 s after the faults")
        time.sleep(0.5)


def test_stream_through_nginx_survives_a_replica_kill_and_a_redis_restart(project: Project, podman: str) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((STEPS, 1)).astype(np.float32)
    headers = {"X-API-Key": project.api_key}
    failures: list[str] = []
    redis = project.container("redis")
    redis_started = sh(podman, "inspect", "--format", "{{.State.StartedAt}}", redis).stdout
    background: list[threading.Thread] = []
    with httpx.Client(base_url=project.url, headers=headers, timeout=15) as client:
        sid = client.post("/v1/models/demo/sessions").json()["session_id"]
        outputs = []
        for t in range(STEPS):
            if t == 10:
                sh(podman, "kill", project.container("seqserve-1"))
            if t == 20:  # restarted while the stream goes on
                restart = ["restart", "-t", "10", redis]
                background.append(threading.Thread(target=sh, args=(podman, *restart), kwargs={"timeout": 120}))
                background[-1].start()
            data = step(client, sid, x[t : t + 1], t, failures)
            assert data["position"] == t + 1
            outputs.append(data["outputs"][0])
        for thread in background:
            thread.join()
        info = answered(lambda: client.get(f"/v1/sessions/{sid}", params={"include_state": True}))
        body = {"inputs": [x.tolist()], "return_state": True}
        whole = answered(lambda: client.post("/v1/models/demo/predict", json=body))
    print(f"retried: {failures}")
    # Both faults really happened: the replica is down (or was restarted), Redis started again.
    assert sh(podman, "inspect", "--format", "{{.State.StartedAt}}", redis).stdout != redis_started
    assert info["position"] == STEPS  # nothing lost, nothing doubled
    want = np.asarray(whole["outputs"][0])
    np.testing.assert_allclose(np.asarray(outputs), want, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    for name, value in info["state"].items():
        np.testing.assert_allclose(np.asarray(value), np.asarray(whole["state"][name])[:, 0, :], atol=1e-5)


def test_secure_by_default_through_nginx(project: Project) -> None:
    wait_ready(project, timeout=120)  # the fault test before this one leaves nginx a moment to recover
    r = httpx.get(f"{project.url}/v1/models", timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    for path in ("/metrics", "/v1/admin/sessions"):
        r = httpx.get(project.url + path, headers={"X-API-Key": project.admin_key}, timeout=10)
        assert r.status_code == 404, (path, r.text)
    headers = {"X-Request-ID": "compose-test-rid", "X-API-Key": project.api_key}
    r = httpx.get(f"{project.url}/v1/models", headers=headers, timeout=10)
    assert r.headers["x-request-id"] == "compose-test-rid"
    assert json.loads(r.text)["models"][0]["name"] == "demo"

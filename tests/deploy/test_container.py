"""The real serving image: built with podman from the Dockerfile, run, and asked for a prediction.

Recipe for machines without a Docker engine or registry access (see standin_base.sh):
- `python:3.11-slim` is a local stand-in (debootstrap'ed bookworm), built once and reused;
- `podman build --isolation=chroot --pull=never --format docker` (docker format keeps HEALTHCHECK);
- `podman run --runtime runc --network none`: no published ports; the test reaches the service
  on the container's own loopback by entering its network namespace with nsenter.

Needs root, podman, runc, debootstrap, nsenter. Under CI=true a missing one fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, require_root, require_tool
from tests.support.tier import starts

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

IMAGE = "localhost/seqserve:deploy-test"
RUN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none"]
API_KEY = "container-test-api-key-0123"
ADMIN_KEY = "container-test-admin-key-0123"
KEY_FLAGS = ["-e", f"SEQSERVE_API_KEYS={API_KEY}", "-e", f"SEQSERVE_ADMIN_KEY={ADMIN_KEY}"]

# Runs with the host's python inside the container's network namespace: GET or POST on loopback.
PROBE = r"""
import json, sys, urllib.error, urllib.request
method, path, key = sys.argv[1], sys.argv[2], sys.argv[3]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
headers = {"Content-Type": "application/json"}
if key:
    headers["X-API-Key"] = key
url = ("http://127.0.0.1:8082" if path.startswith(("/v1/admin", "/metrics")) else "http://127.0.0.1:8000") + path
req = urllib.request.Request(url, data=data, method=method, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        status, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read().decode()
except OSError as e:
    status, body = 0, str(e)
print(json.dumps({"status": status, "body": body}))
"""


def sh(*cmd: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} -> {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
@starts("podman containers")
def podman() -> str:
    require_root("rootful podman with runc")
    for tool, package in (("runc", "runc"), ("debootstrap", "debootstrap"), ("nsenter", "util-linux")):
        require_tool(tool, f"apt-get install {package}")
    return require_tool("podman", "apt-get install podman")


@pytest.fixture(scope="module")
def image(podman: str) -> str:
    """Stand-in base (cached), then the serving target (layer-cached by podman)."""
    if sh(podman, "image", "exists", "python:3.11-slim", check=False).returncode != 0:
        sh("bash", str(REPO / "tests/deploy/standin_base.sh"), timeout=900)
    build = ["build", "--isolation=chroot", "--pull=never", "--format", "docker", "--target", "serve"]
    sh(podman, *build, "-t", IMAGE, str(REPO), timeout=900)
    return IMAGE


@pytest.fixture(scope="module")
def container(podman: str, image: str, demo_repository: Path) -> Iterator[tuple[str, int]]:
    """The serving image running with the demo repository at /models; yields (name, host pid)."""
    name = f"seqserve-deploy-test-{uuid.uuid4().hex[:8]}"
    sh(podman, "run", "-d", "--name", name, *RUN_FLAGS, *KEY_FLAGS, "-v", f"{demo_repository}:/models:ro", image)
    try:
        pid = int(sh(podman, "inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
        yield name, pid
    finally:
        logs = sh(podman, "logs", name, check=False)
        sys.stderr.write(f"--- container logs ---\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}\n")
        sh(podman, "rm", "-f", "-t", "5", name, check=False)


def probe(pid: int, method: str, path: str, body: object | None = None, key: str = API_KEY) -> tuple[int, str]:
    args = ["nsenter", "--target", str(pid), "--net", "--", sys.executable, "-c", PROBE, method, path, key]
    if body is not None:
        args.append(json.dumps(body))
    out = json.loads(sh(*args, timeout=30).stdout)
    return out["status"], out["body"]


def wait_ready(podman: str, name: str, pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last = (0, "")
    while time.monotonic() < deadline:
        state = sh(podman, "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            pytest.fail(f"container is {state}: {sh(podman, 'logs', name, check=False).stderr[-3000:]}")
        last = probe(pid, "GET", "/v2/health/ready")
        if last[0] == 200:
            return
        time.sleep(1)
    pytest.fail(f"not ready after {timeout}s: {last}")


def test_image_config(podman: str, image: str) -> None:
    (config,) = json.loads(sh(podman, "image", "inspect", image).stdout)
    cfg = config["Config"]
    assert cfg["Entrypoint"] == ["seqserve", "serve"]
    assert cfg["User"] == "10001:10001"
    assert "/models" in cfg["Volumes"]
    env = dict(item.split("=", 1) for item in cfg["Env"])
    assert env["SEQSERVE_HOST"] == "0.0.0.0" and env["SEQSERVE_MODEL_REPOSITORY"] == "/models"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # podman reports the docker-format HEALTHCHECK at the top level of `image inspect`.
    healthcheck = config.get("Healthcheck") or cfg.get("Healthcheck")
    assert healthcheck and healthcheck["Test"] == ["CMD", "python", "/opt/seqserve/healthcheck.py"]


def test_image_has_no_torch(podman: str, image: str) -> None:
    check = "import importlib.util as u; print([m for m in ('torch', 'onnx', 'pandas') if u.find_spec(m)])"
    result = sh(podman, "run", "--rm", *RUN_FLAGS, "--entrypoint", "python", image, "-c", check)
    assert result.stdout.strip() == "[]", result.stdout
    result = sh(podman, "run", "--rm", *RUN_FLAGS, "--entrypoint", "python", image, "-c", "import torch", check=False)
    assert result.returncode != 0 and "No module named 'torch'" in result.stderr
    imports = "import onnxruntime, fastapi, redis, service.app; print(onnxruntime.get_available_providers())"
    result = sh(podman, "run", "--rm", *RUN_FLAGS, "--entrypoint", "python", image, "-c", imports)
    assert "CPUExecutionProvider" in result.stdout


def test_serves_predictions(podman: str, container: tuple[str, int]) -> None:
    name, pid = container
    wait_ready(podman, name, pid)
    status, body = probe(pid, "GET", "/v2/health/live")
    assert status == 200, body
    status, body = probe(pid, "GET", "/v1/models")
    assert status == 200 and "demo" in body, body
    inputs = [[[0.1], [0.2], [0.3]], [[1.0], [0.0], [-1.0]]]  # [batch=2][time=3][features=1]
    status, body = probe(pid, "POST", "/v1/models/demo/predict", {"inputs": inputs})
    assert status == 200, body
    outputs = json.loads(body)["outputs"]
    assert len(outputs) == 2 and all(len(seq) == 3 for seq in outputs), outputs
    assert all(len(step) == 1 and isinstance(step[0], float) for seq in outputs for step in seq), outputs
    # Secure by default: no key, no data; the admin API is on its own port behind its own key.
    status, body = probe(pid, "POST", "/v1/models/demo/predict", {"inputs": inputs}, key="")
    assert status == 401 and json.loads(body)["code"] == "unauthorized", body
    assert probe(pid, "GET", "/v1/admin/sessions")[0] == 401  # a data key is not the admin key
    assert probe(pid, "GET", "/v1/admin/sessions", key=ADMIN_KEY)[0] == 200
    assert probe(pid, "GET", "/metrics", key="")[0] == 200
    # The image's HEALTHCHECK command succeeds inside the running container, as the user it runs as.
    result = sh(podman, "exec", name, "python", "/opt/seqserve/healthcheck.py", check=False)
    assert result.returncode == 0, result.stderr
    assert sh(podman, "exec", name, "id", "-u").stdout.strip() == "10001"


def test_image_refuses_to_start_without_keys(podman: str, image: str, demo_repository: Path) -> None:
    """The image listens on 0.0.0.0: without keys it must not come up open."""
    result = sh(
        podman, "run", "--rm", *RUN_FLAGS, "-v", f"{demo_repository}:/models:ro", image, check=False, timeout=120
    )
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "SEQSERVE_API_KEYS" in result.stderr, result.stderr[-2000:]

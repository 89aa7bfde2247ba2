"""Start and stop the servers under test as separate processes, and time their start-up."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:  # torch only when a forecaster is built
    from models.forecaster import Forecaster

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "bench"
# Outside the repository: baseline snapshots and the Triton peer's virtualenv live here between runs.
CACHE_DIR = Path(os.environ.get("SEQSERVE_BENCH_CACHE", Path.home() / ".cache" / "seqserve-bench"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_available() -> bool:
    """True once the service's server module exists (it is being written alongside)."""
    try:
        return importlib.util.find_spec("service.server") is not None
    except ImportError:
        return False


def export_bench_model(repository: Path, name: str = MODEL_NAME) -> Path:
    """The benchmark model, a 2-layer 64-hidden LSTM on 4 features, as <repo>/<name>/1/model.onnx."""
    from models.config import ModelConfig
    from models.export import export_onnx
    from models.recurrent import RecurrentModel

    path = Path(repository) / name / "1" / "model.onnx"
    if not path.is_file():
        config = ModelConfig(cell="lstm", input_size=4, hidden_size=64, num_layers=2, output_size=1)
        export_onnx(RecurrentModel(config), path)
    return path


FORECASTER_NAME = "forecaster"


def export_bench_forecaster(repository: Path, name: str = FORECASTER_NAME) -> Path:
    """What `seqserve train --task forecast` produces, at the benchmark model's size (see
    bench_forecaster), exported into `repository` once."""
    path = Path(repository) / name / "1" / "model.onnx"
    if path.is_file():
        return path
    from models.export import export_onnx

    export_onnx(bench_forecaster(), path)
    return path


def bench_forecaster(transform: str = "seasonal_diff") -> Forecaster:
    """The project's forecaster at the benchmark model's size (2-layer 64-hidden LSTM, one
    feature, one step ahead, daily and weekly seasons of half-hourly data, the `transform`
    formula, a phase clock), its constants fitted on a synthetic demand-like series, weights as
    initialised (speed does not depend on them); a torch module in eval mode."""
    import numpy as np

    from models.config import Clock, ModelConfig
    from models.forecast_spec import make_spec
    from models.forecaster import Forecaster, fit_spec, forecaster_config

    spec = make_spec(target_index=0, num_features=1, horizon=1, seasons=(48, 336), transform=transform, phase=True)
    base = ModelConfig(
        cell="lstm", input_size=1, hidden_size=64, num_layers=2, output_size=1, features=("load",),
        outputs=("load@t+1",), horizon=1,
    )  # fmt: skip
    t = np.arange(3000, dtype=np.float64)
    rng = np.random.default_rng(0)
    series = (
        1000 + 200 * np.sin(2 * np.pi * t / 48) + 80 * np.sin(2 * np.pi * t / 336) + 20 * rng.standard_normal(t.size)
    )
    clock = Clock("phase", 1800.0, 0.0, spec.cycle)
    config = fit_spec(forecaster_config(base, spec, clock), series[:, None], 2000)
    return Forecaster(config).eval()


def _seqserve_cmd(root: Path = ROOT) -> list[str]:
    """`seqserve` as `python -m seqserve.cli` run in `root`: the service measured is the one in
    that checkout (this one next to bench/, or an exported snapshot of another commit), whatever
    the editable install points at. Snapshots from before the console script left service/ still
    have `service.cli`."""
    module = "seqserve.cli" if (root / "seqserve" / "cli.py").is_file() else "service.cli"
    return [sys.executable, "-m", module]


@dataclass
class Server:
    label: str
    kind: str  # service | naive
    cmd: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    ready_s: float | None = None
    first_answer_s: float | None = None
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)
    root: Path = ROOT  # working directory: whose code `python -m ...` imports first

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path, ready_timeout: float = 120.0) -> Server:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.label}.log"
        log = self.log_path.open("wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
        )
        log.close()
        deadline = self.started_at + ready_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {self.proc.returncode}: {self.tail_log()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/v2/health/ready").status_code == 200:
                        break
                if time.perf_counter() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.label} not ready after {ready_timeout}s: {self.tail_log()}")
                time.sleep(0.01)
            self.ready_s = time.perf_counter() - self.started_at
            self._first_request(client)
            self.first_answer_s = time.perf_counter() - self.started_at
        return self

    def _first_request(self, client: httpx.Client) -> None:
        """The first answered request a client would make: a session and its first step."""
        step = {"inputs": [[0.1, 0.2, 0.3, 0.4]]}
        if self.kind == "naive":
            resp = client.post(f"{self.url}/step", json=step, timeout=30)
        elif self.kind == "floor":
            resp = client.post(f"{self.url}/v1/noop", json=step, timeout=30)
        else:
            created = client.post(f"{self.url}/v1/models/{MODEL_NAME}/sessions", json={}, timeout=30)
            created.raise_for_status()
            sid = created.json()["session_id"]
            resp = client.post(f"{self.url}/v1/sessions/{sid}/steps", json={**step, "position": 0}, timeout=30)
        resp.raise_for_status()

    def rss_bytes(self) -> int:
        return rss_of(self.proc.pid) if self.proc else 0

    def tail_log(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_of(pid: int) -> int:
    """Resident set size of a process, in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def service_server(
    label: str,
    repository: Path,
    *,
    batching: bool = True,
    noop: bool = False,
    env: dict | None = None,
    root: Path = ROOT,
) -> Server:
    """`seqserve serve` from the checkout at `root` (default: this one) on free loopback ports."""
    port = free_port()
    cmd = [*_seqserve_cmd(root), "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--model-repository", str(repository), "--log-level", "warning"]
    full_env = {
        **os.environ,
        "SEQSERVE_BATCHING": "true" if batching else "false",
        "SEQSERVE_NOOP_ROUTE": "true" if noop else "false",
        "SEQSERVE_GRPC_PORT": str(free_port()),  # KServe V2 gRPC (bench --grpc-streams)
        "SEQSERVE_ADMIN_PORT": str(free_port()),  # admin + /metrics; never the default 8082 side by side
        **(env or {}),
    }
    if root != ROOT:  # another commit's snapshot: its packages first, for the server and its children
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return Server(label, "floor" if noop else "service", cmd, full_env, port, root=root)


def naive_server(label: str, model_path: Path, *, floor: bool = False) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.naive_server", "--model", str(model_path), "--port", str(port)]
    return Server(label, "floor" if floor else "naive", cmd, dict(os.environ), port)

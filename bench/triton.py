"""Raw Triton with its sequence batcher as a peer, measured in the same run (issue #12 target:
8 HTTP streams >= 2x Triton, same load generator and load shape).

The peer is the `tritonserver` binary shipped inside the nvidia-pytriton wheel, started directly
(bench/peers/start_triton_raw.sh), serving the benchmark's own ONNX model through a Python-backend
model that keeps h/c per sequence (bench/peers/triton_repo/). It needs a Python 3.11 virtualenv
with nvidia-pytriton, onnxruntime, onnx and numpy<2, which `ensure_peers_venv` creates once under
the bench cache (outside the repository; pip from PyPI, a few hundred MB).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.servers import CACHE_DIR, Server, free_port

PEERS_DIR = Path(__file__).resolve().parent / "peers"
START_SCRIPT = PEERS_DIR / "start_triton_raw.sh"
TRITON_MODEL = "seqserve_lstm"
PEERS_PACKAGES = ("nvidia-pytriton", "onnxruntime", "onnx", "numpy<2")
PEERS_PYTHON = "python3.11"  # the python backend stub in the wheel is built for 3.11


class PeerUnavailable(RuntimeError):
    """The Triton peer cannot run here (no python3.11, pip failed, binary missing)."""


def peers_venv() -> Path:
    return Path(os.environ.get("SEQSERVE_PEERS_VENV", CACHE_DIR / "peers"))


def venv_commands(venv: Path, python: str = PEERS_PYTHON) -> list[list[str]]:
    """The commands that build the peers venv (also what the README shows)."""
    return [[python, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", "-q", *PEERS_PACKAGES]]


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / "python3.11" / "site-packages"


def venv_ready(venv: Path) -> bool:
    return (_site_packages(venv) / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file() and (
        _site_packages(venv) / "onnxruntime"
    ).is_dir()


def ensure_peers_venv(venv: Path | None = None, log=print) -> Path:
    """The peers venv, created when absent (minutes, once). PeerUnavailable if it cannot be."""
    venv = venv or peers_venv()
    if venv_ready(venv):
        return venv
    python = shutil.which(PEERS_PYTHON)
    if python is None:
        raise PeerUnavailable(f"{PEERS_PYTHON} not found: the Triton python backend stub needs Python 3.11")
    log(f"creating the Triton peer's virtualenv under {venv} (once; pip install {' '.join(PEERS_PACKAGES)})")
    shutil.rmtree(venv, ignore_errors=True)
    shutil.rmtree(Path(f"{venv}-raw"), ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    for cmd in venv_commands(venv, python):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise PeerUnavailable(f"{' '.join(cmd[:3])}... failed: {proc.stderr.strip()[-500:]}")
    if not venv_ready(venv):
        raise PeerUnavailable("the peers venv has no tritonserver binary after pip install")
    return venv


def first_step_output(model_path: Path, x: list[float]) -> float:
    """What the served ONNX model answers for one step `x` from a zero state (ONNX Runtime here)."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    feed = {inputs[0].name: np.asarray(x, np.float32).reshape(1, 1, -1)}
    for state in inputs[1:]:
        feed[state.name] = np.zeros((state.shape[0], 1, state.shape[2]), np.float32)
    return float(sess.run(None, feed)[0].reshape(-1)[0])


class TritonServer(Server):
    """tritonserver as a bench Server: ready on /v2/health/ready; the first request is one
    sequence step whose answer must equal the ONNX model's (the peer computes the same thing)."""

    def _first_request(self, client) -> None:
        x = [0.1, 0.2, 0.3, 0.4]
        resp = client.post(
            f"{self.url}/v2/models/{TRITON_MODEL}/infer",
            json={
                "parameters": {"sequence_id": 1, "sequence_start": True, "sequence_end": True},
                "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": x}],
            },
            timeout=60,
        )
        resp.raise_for_status()
        outputs = resp.json().get("outputs") or []
        if not outputs or outputs[0].get("name") != "Y":
            raise RuntimeError(f"unexpected Triton answer: {resp.text[:300]}")
        want = first_step_output(Path(self.env["LSTM_ONNX"]), x)
        if abs(outputs[0]["data"][0] - want) > 1e-4 * max(1.0, abs(want)):
            raise RuntimeError(f"Triton answered {outputs[0]['data'][0]}, the model computes {want}")


def triton_server(label: str, model_path: Path, venv: Path) -> TritonServer:
    """Triton serving `model_path` (the benchmark's ONNX file) from the peers venv, loopback only."""
    port = free_port()
    while any(_busy(p) for p in (port + 1, port + 2)):
        port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "PEERS_VENV": str(venv),
        "LSTM_ONNX": str(Path(model_path).resolve()),
    }
    return TritonServer(label, "triton", ["bash", str(START_SCRIPT), str(port)], env, port)


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


if __name__ == "__main__":  # python -m bench.triton: build the peers venv ahead of a run
    print(ensure_peers_venv(log=lambda m: print(m, file=sys.stderr)))

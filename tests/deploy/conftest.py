"""Shared helpers for the deployment tests: tool discovery that fails under CI, a demo model.

Outside CI a missing tool (podman, nginx, ...) skips the test with the reason; with CI=true it
fails, so a CI run can never go green by skipping the deployment checks.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
from pathlib import Path

import pytest

from tests.support.tier import heavy

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, hint: str = "") -> str:
    """Absolute path of a command (also looked up in .venv/bin), or skip/fail. A system
    command (not one of the virtualenv's, like hadolint) is for tests marked slow or e2e."""
    here = Path(sys.executable).parent  # the virtualenv running the tests, wherever it lives
    path = shutil.which(name) or shutil.which(name, path=str(VENV_BIN)) or shutil.which(name, path=str(here))
    if path is not None and Path(path).parent not in {VENV_BIN, here}:
        heavy(name)
    if path is None:
        unavailable(f"`{name}` is not installed{f' ({hint})' if hint else ''}")
    return path  # type: ignore[return-value]


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{why} needs root")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_world_readable(root: Path) -> None:
    """a+rX on a tree, so an unprivileged container user (uid 10001) can read a bind mount."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir():
            extra |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        path.chmod(mode | extra)


def export_demo_model(repository: Path, name: str = "demo", version: int = 1) -> Path:
    """A random 1-feature LSTM exported as <repository>/<name>/<version>/model.onnx (needs torch)."""
    try:
        import torch

        from models.config import ModelConfig
        from models.export import export_onnx
        from models.recurrent import RecurrentModel
    except ImportError as exc:  # torch comes with the [train] extra
        unavailable(f"exporting a demo model needs torch/onnx: {exc}")
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell="lstm", input_size=1, hidden_size=8, output_size=1)).eval()
    path = repository / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, path, parity_cases=((1, 1), (2, 5)))
    return path


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding one random model, `demo` version 1, readable by everyone."""
    root = tmp_path_factory.mktemp("model-repository")
    export_demo_model(root)
    make_world_readable(root)
    return root

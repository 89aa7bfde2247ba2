"""The client is usable on a machine without the server: importing it pulls in neither torch
nor the server's packages (checked in a fresh interpreter, where nothing is preloaded)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.servers import ROOT


def test_import_needs_no_server_or_training_packages():
    code = (
        "import sys, seqserve, seqserve.client, seqserve.aio\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'service', 'models', 'training',"
        " 'fastapi', 'onnxruntime', 'uvicorn', 'redis', 'pandas'})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_py_typed_marker_ships():
    assert (ROOT / "seqserve" / "py.typed").is_file()


@pytest.mark.slow
def test_client_is_mypy_strict_clean(tmp_path):
    """Users get checked types (py.typed): the package passes mypy --strict."""
    client = ["__init__.py", "errors.py", "_protocol.py", "aio.py", "_stream.py", "client.py"]  # not the CLI
    files = [str(ROOT / "seqserve" / name) for name in client]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr

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
        "shared = {'models', 'models.error_codes', 'models.times'}\n"  # error codes, time parser: stdlib only
        "bad = sorted({m.split('.')[0] for m in set(sys.modules) - shared} & {'torch', 'service', 'models',"
        " 'training', 'fastapi', 'onnxruntime', 'uvicorn', 'redis', 'pandas'})\n"
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
    client = [p.name for p in (ROOT / "seqserve").glob("*.py") if p.name != "cli.py"]  # not the CLI
    files = [str(ROOT / "seqserve" / name) for name in client]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stream_does_not_reach_into_the_session():
    """seqserve/_stream.py works on a narrow link (its progress, lock, settings and a few calls),
    not on AsyncSession's private members, and imports nothing of seqserve.aio: no import
    circle, even for type checking."""
    import ast

    path = ROOT / "seqserve" / "_stream.py"
    tree = ast.parse(path.read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "seqserve.aio" not in imported and "seqserve.client" not in imported
    private = sorted(
        {
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
        }
    )
    assert private == [], private

"""mypy holds service/core, models and seqserve to --strict (pyproject.toml's per-module
override), and only them: a probe module with an untyped function and a bare generic fails
mypy under each of those packages and passes under service/api (checked with the project's
own configuration, on probe files outside the tree, so nothing else is type-checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = "def untyped(x):\n    return x\n\n\ndef bare(value: dict) -> list:\n    return [value]\n"


def test_strict_where_the_override_says(tmp_path: Path) -> None:
    strict = ["service/core", "models", "seqserve"]
    for package in [*strict, "service/api"]:
        folder = tmp_path / package
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "strict_probe.py").write_text(PROBE)
    for folder in {tmp_path / "service", *(tmp_path / p for p in [*strict, "service/api"])}:
        (folder / "__init__.py").touch()
    mypy = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    result = subprocess.run(
        [*mypy, "--cache-dir", str(tmp_path / "c"), *(f"{p}/strict_probe.py" for p in [*strict, "service/api"])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    flagged = {Path(m).parent.as_posix() for m in re.findall(r"^(\S+strict_probe\.py):\d+: error", result.stdout, re.M)}
    assert flagged == set(strict), result.stdout + result.stderr
    for package in strict:
        assert f"{package}/strict_probe.py:1: error: Function is missing a type annotation" in result.stdout
        assert f"{package}/strict_probe.py:5: error: Missing type arguments for generic type" in result.stdout

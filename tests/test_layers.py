"""The import rules that keep the house in floors (docs/architecture.md): data flows
training -> repository -> service, and imports only point down.

    seqserve/ (cli, client)  ->  service/, training/  ->  models/

service/ and training/ never import each other (the serving image ships without training/),
models/ imports neither, the client imports no server or training code, and nothing imports
seqserve/ except seqserve itself. Checked statically on every module, lazy imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN: dict[str, set[str]] = {
    "models": {"service", "training", "seqserve", "fastapi", "starlette", "uvicorn"},
    "service": {"training", "seqserve", "torch"},
    "training": {"service", "seqserve"},
}
CLIENT_FORBIDDEN = {"service", "training", "models", "torch", "fastapi", "starlette", "uvicorn", "onnxruntime"}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import in a file, including imports inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package: str) -> None:
    files = modules(package)
    assert files, f"{package}/ has no modules"
    bad = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in files
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert not bad, f"{package}/ imports a floor above it or a framework it must not: {bad}"


def test_client_needs_no_server_code() -> None:
    client = [p for p in modules("seqserve") if p.name != "cli.py"]
    assert client
    bad = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & CLIENT_FORBIDDEN) for p in client}
    assert not {k: v for k, v in bad.items() if v}


WEB = {"fastapi", "starlette", "uvicorn", "grpc"}


def web_imports(files: list[Path]) -> dict[str, list[str]]:
    found = {str(p): sorted(imported_packages(p) & WEB) for p in files}
    return {k: v for k, v in found.items() if v}


def test_service_core_imports_no_web_framework() -> None:
    """The transport-neutral core knows nothing of HTTP or gRPC frameworks."""
    core = modules("service/core")
    assert {p.name for p in core} >= {"engine.py", "services.py"}, "service/core/ is missing"
    assert not web_imports(core)


def test_the_core_rule_catches_a_framework_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    from starlette.requests import Request\n")
    assert web_imports([probe]) == {str(probe): ["starlette"]}


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself sees lazy imports inside functions."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from training.cli import run\n    import service.app\n")
    assert imported_packages(probe) == {"training", "service"}

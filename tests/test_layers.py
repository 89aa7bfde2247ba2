"""The import rules that keep the house in floors (docs/architecture.md): data flows
training -> repository -> service, and imports only point down.

    seqserve/ (cli, client)  ->  service/, training/  ->  models/

service/ and training/ never import each other (the serving image ships without training/),
models/ imports neither, the client imports no server or training code, and nothing imports
seqserve/ except seqserve itself. Checked statically on every module, lazy imports included.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN: dict[str, set[str]] = {
    "models": {"service", "training", "seqserve", "fastapi", "starlette", "uvicorn"},
    "service": {"training", "seqserve", "torch"},
    "training": {"service", "seqserve"},
}
CLIENT_FORBIDDEN = {"service", "training", "models", "torch", "fastapi", "starlette", "uvicorn", "onnxruntime"}


def parsed(path: Path) -> ast.Module:
    stamp = path.stat().st_mtime_ns
    key = (path, stamp)
    if key not in _TREES:
        _TREES[key] = ast.parse(path.read_text(), filename=str(path))
    return _TREES[key]


_TREES: dict[tuple[Path, int], ast.Module] = {}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import in a file, including imports inside functions."""
    tree = parsed(path)
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


# What the client shares with the server: the error code table (plain data) and the time parser
# (one parser for training, the service's start_time and the client's frames), standard library.
CLIENT_SHARED = {"models.error_codes", "models.times"}


def client_violations(files: list[Path]) -> dict[str, list[str]]:
    """Imports of the client's modules that are server, training or framework code (the
    shared modules of CLIENT_SHARED excepted)."""
    bad: dict[str, list[str]] = {}
    for path in files:
        found = set()
        for node in ast.walk(parsed(path)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] if node.module != "models" else [f"models.{a.name}" for a in node.names]
            found.update(n for n in names if n.split(".")[0] in CLIENT_FORBIDDEN and n not in CLIENT_SHARED)
        if found:
            bad[str(path)] = sorted(found)
    return bad


def test_client_needs_no_server_code() -> None:
    client = [p for p in modules("seqserve") if p.name != "cli.py"]
    assert client
    assert not client_violations(client)


def test_the_shared_table_needs_nothing_but_the_standard_library() -> None:
    """The client imports models/error_codes.py on a machine without the server: it may import
    only the standard library (models/__init__.py, which runs first, imports nothing)."""
    import sys

    for module in (*CLIENT_SHARED, "models"):
        path = module_file(ROOT, module)
        assert path is not None
        assert imported_packages(path) <= set(sys.stdlib_module_names) | {"__future__"}, module


def test_the_client_rule_catches_a_server_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from models.error_codes import CODES\nfrom models import config\nimport service.core\n")
    assert client_violations([probe]) == {str(probe): ["models.config", "service.core"]}


WEB = {"fastapi", "starlette", "uvicorn", "grpc"}
# The transports and the assembly: the core serves them and never imports them.
TRANSPORTS = ("service.api", "service.grpc", "service.app", "service.server")


def web_imports(files: list[Path]) -> dict[str, list[str]]:
    found = {str(p): sorted(imported_packages(p) & WEB) for p in files}
    return {k: v for k, v in found.items() if v}


def module_file(root: Path, module: str) -> Path | None:
    """The file of a project module (`a.b` -> a/b.py or a/b/__init__.py), None if not one."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def project_imports(root: Path, path: Path) -> set[str]:
    """The project modules a file imports (lazy and TYPE_CHECKING imports included), with the
    packages whose `__init__` runs on the way (`a.b.c` runs a/__init__.py and a/b/__init__.py)."""
    tree = parsed(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules, if they are
    found: set[str] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if module_file(root, prefix) is not None:
                found.add(prefix)
    return found


def transport_reach(root: Path, package: str = "service.core") -> dict[str, list[str]]:
    """Every module of `package` from which a transport or a web framework is reachable by
    imports, transitively, through any project module: module -> the import chain to it (the
    last link is the offending module or `module -> framework`)."""
    start = sorted(
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for p in root.joinpath(*package.split(".")).rglob("*.py")
    )
    graph: dict[str, tuple[list[str], list[str]]] = {}  # module -> (frameworks, project imports)

    def edges(module: str) -> tuple[list[str], list[str]]:
        if module not in graph:
            path = module_file(root, module)
            assert path is not None
            graph[module] = (sorted(imported_packages(path) & WEB), sorted(project_imports(root, path)))
        return graph[module]

    bad: dict[str, list[str]] = {}
    for first in start:
        chains = {first: [first]}
        queue = [first]
        while queue and first not in bad:
            module = queue.pop(0)
            if module.startswith(TRANSPORTS):
                bad[first] = chains[module]
                break
            frameworks, imports = edges(module)
            if frameworks:
                bad[first] = [*chains[module], frameworks[0]]
                break
            for name in imports:
                if name not in chains:
                    chains[name] = [*chains[module], name]
                    queue.append(name)
    return bad


def test_service_core_imports_no_web_framework() -> None:
    """The transport-neutral core knows nothing of HTTP or gRPC: no module of service/core/
    imports a transport (service/api, service/grpc, the app) or a web framework, directly or
    through anything it imports (models/, service/sessions/, ...)."""
    core = modules("service/core")
    assert {p.name for p in core} >= {"engine.py", "services.py", "predict.py", "v2.py"}, "service/core/ is missing"
    assert not web_imports(core)
    reached = transport_reach(ROOT)
    assert not reached, f"service/core/ reaches a transport or a web framework: {reached}"


def test_the_core_rule_catches_a_framework_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    from starlette.requests import Request\n")
    assert web_imports([probe]) == {str(probe): ["starlette"]}


def copy_tree(tmp_path: Path) -> Path:
    """The real service/ and models/ packages, to add a probe import to."""
    root = tmp_path / "tree"
    for package in ("service", "models"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "static", "ui"))
    assert not transport_reach(root)  # the copy is as clean as the real tree
    return root


def add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_probe_a_transport_import_in_the_core_fails(tmp_path: Path) -> None:
    """Probe: a lazy import of a transport module added to a core module (a copy of the real
    tree) fails the check, naming the module and what it reaches."""
    root = copy_tree(tmp_path)
    add_line(root / "service/core/batching.py", "def later():\n    from service.api import codecs")
    bad = transport_reach(root)
    assert bad["service.core.batching"][:2] == ["service.core.batching", "service.api"]
    assert "service.core.services" in bad  # and every core module that imports batching


def test_probe_a_transport_import_below_the_core_fails(tmp_path: Path) -> None:
    """Probe: the core imports nothing of gRPC itself, but a store it builds would: caught
    through the chain core -> store -> transport."""
    root = copy_tree(tmp_path)
    add_line(root / "service/sessions/memory.py", "from service.grpc import tensors  # noqa")
    chain = transport_reach(root)["service.core.services"]
    assert chain[0] == "service.core.services" and "service.sessions.memory" in chain
    assert chain[-1].startswith("service.grpc")


def test_probe_a_framework_import_deep_down_fails(tmp_path: Path) -> None:
    """Probe: a web framework imported by a module of models/ that the core loads."""
    root = copy_tree(tmp_path)
    add_line(root / "models/config.py", "import fastapi  # noqa")
    chain = transport_reach(root)["service.core.registry"]
    assert chain[-2:] == ["models.config", "fastapi"]


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself sees lazy imports inside functions."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from training.cli import run\n    import service.app\n")
    assert imported_packages(probe) == {"training", "service"}

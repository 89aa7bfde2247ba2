"""training/ has no import circle: settings, data, configs, publish and verdict sit below the two
task paths (forecaster_run, global_run), pipeline only dispatches to them, and cli sits on top.
Checked statically, imports inside functions included, so a lazy import cannot hide a circle."""

from __future__ import annotations

import ast
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[2] / "training"


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in TRAINING.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "training":
                    found.update(alias.name for alias in node.names)
                elif node.module.startswith("training."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("training."))
        edges[path.stem] = found - {path.stem}
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import circle as a path of module names, or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_training_has_no_import_circle() -> None:
    edges = graph()
    assert {"cli", "pipeline", "forecaster_run", "global_run", "settings"} <= set(edges)
    assert cycle(edges) == []


def test_the_check_finds_a_circle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_pipeline_only_dispatches_downwards() -> None:
    edges = graph()
    for low in ("settings", "configs", "publish", "verdict", "forecaster_run", "global_run"):
        assert "pipeline" not in edges[low] and "cli" not in edges[low], low

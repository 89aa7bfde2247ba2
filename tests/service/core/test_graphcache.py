"""The cache of ONNX Runtime's optimised graphs (service/core/graphcache.py): the first load of
a model file writes its optimised graph, the next load runs on it without optimising, with the
same outputs bit for bit and the fingerprint of the repository's file; a broken entry is
optimised again; a directory that cannot be written only means no cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.core.registry import LoadedModel, ModelRegistry
from service.core.settings import Settings
from tests.support.models import export_forecaster


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    export_forecaster(repo, "fc", 1, "lstm", seed=3)
    return repo


def load(repository: Path, cache: Path | None) -> tuple[LoadedModel, list[str]]:
    """The model, and how each session was created: "file" (the repository's bytes, optimised
    now) or "cached" (a path in the cache directory, not optimised)."""
    made: list[str] = []
    original = ort.InferenceSession

    def recording(model, options=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        made.append("cached" if isinstance(model, str) else "file")
        return original(model, options, *args, **kwargs)

    ort.InferenceSession = recording  # type: ignore[misc]
    try:
        registry = ModelRegistry(Settings(model_repository=repository, ort_cache_dir=cache))
        registry.load_all()
        return registry.get("fc", 1), made
    finally:
        ort.InferenceSession = original  # type: ignore[misc]


def outputs(model: LoadedModel) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((3, 5, model.config.input_size)).astype(np.float32)
    out, state = model.run(inputs, model.zero_state(3))
    return [out, *state]


def test_the_second_load_runs_on_the_cached_graph_with_the_same_bits(repository: Path, tmp_path: Path) -> None:
    cache = tmp_path / "graphs"
    plain, how = load(repository, None)
    assert how == ["file"]
    first, how = load(repository, cache)
    assert how == ["file"]
    (entry,) = list(cache.glob("*.ort.onnx"))
    assert not list(cache.glob(".*tmp*"))
    second, how = load(repository, cache)
    assert how == ["cached"]
    file_hash = hashlib.sha256((repository / "fc" / "1" / "model.onnx").read_bytes()).hexdigest()
    assert plain.fingerprint == first.fingerprint == second.fingerprint  # of the repository's file
    assert entry.name.startswith(file_hash)
    # the entry is the optimised graph (what runs), not a copy of the file
    optimised = len(onnx.load(str(entry)).graph.node)
    assert optimised < len(onnx.load(str(repository / "fc" / "1" / "model.onnx")).graph.node)
    assert second.config == plain.config
    for a, b in zip(outputs(plain), outputs(second), strict=True):
        assert np.array_equal(a, b)


def test_a_broken_entry_is_optimised_again(repository: Path, tmp_path: Path) -> None:
    cache = tmp_path / "graphs"
    load(repository, cache)
    (entry,) = list(cache.glob("*.ort.onnx"))
    entry.write_bytes(b"not a graph")
    model, how = load(repository, cache)
    assert how == ["cached", "file"]
    assert entry.stat().st_size > 1000  # written again
    again, how = load(repository, cache)
    assert how == ["cached"] and again.fingerprint == model.fingerprint


def test_an_unwritable_cache_is_no_cache(repository: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    model, how = load(repository, blocked / "graphs")  # its parent is a file: cannot be created
    assert how == ["file"] and len(outputs(model)) == 1 + len(model.config.state_specs)

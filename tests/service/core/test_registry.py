"""Loading the repository: providers, version policy, broken files."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest

from service.core.errors import ModelNotFound, VersionNotFound
from service.core.registry import CPU, CUDA, ModelLoadError, ModelRegistry, choose_providers
from service.core.settings import Settings
from tests.support.models import export_model
from tests.support.servers import ROOT


def test_latest_version_serves_by_default(registry):
    assert registry.get("lstm").version == 2
    assert registry.get("lstm", 1).version == 1
    with pytest.raises(VersionNotFound):
        registry.get("lstm", 3)
    with pytest.raises(ModelNotFound):
        registry.get("nope")


def test_latest_policy_loads_only_newest(repository):
    reg = ModelRegistry(Settings(model_repository=repository, version_policy="latest", latest_versions=1))
    reg.load_all()
    assert reg.versions("lstm") == [2] and reg.versions("gru") == [1]


def test_broken_file_is_refused_and_others_serve(tmp_path, caplog):
    export_model(tmp_path, "good", 1, "gru")
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "model.onnx").write_bytes(b"\x00garbage")
    reg = ModelRegistry(Settings(model_repository=tmp_path))
    with caplog.at_level(logging.ERROR, logger="seqserve.registry"):
        reg.load_all()
    assert reg.names() == ["good"]
    assert "bad/1" in reg.errors and str(tmp_path) not in reg.errors["bad/1"]
    assert "refusing model" in caplog.text


def test_provider_choice_without_cuda(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert choose_providers("auto") == [CPU]
    assert choose_providers("cpu") == [CPU]
    with pytest.raises(ModelLoadError, match="cuda"):
        choose_providers("cuda")


def test_auto_falls_back_to_cpu_when_cuda_cannot_start(monkeypatch, tmp_path, caplog):
    """As with onnxruntime-gpu on a machine whose CUDA cannot initialise: the library lists
    CUDA, the session ends up on CPU, and the service says so and keeps serving."""
    export_model(tmp_path, "m", 1, "lstm")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    assert choose_providers("auto") == [CUDA, CPU]
    with caplog.at_level(logging.WARNING, logger="seqserve.registry"):
        reg = ModelRegistry(Settings(model_repository=tmp_path, provider="auto"))
        reg.load_all()
    assert reg.get("m").provider == CPU
    assert "falling back to CPU" in caplog.text
    strict = ModelRegistry(Settings(model_repository=tmp_path, provider="cuda"))
    strict.load_all()
    assert strict.names() == [] and "cuda" in next(iter(strict.errors.values()))


def test_serving_side_never_imports_torch():
    """The slim serving image has no torch: importing and building the app must not need it."""
    import subprocess
    import sys

    code = (
        "import sys; from service.app import create_app; from service.sessions import redis; "
        "from service.api import v2, admin; create_app(); "
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert result.returncode == 0, result.stderr

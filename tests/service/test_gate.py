"""The quality gate decides the default version: the highest promoted one serves requests that
name no version; an unpromoted version is served only when asked for by number."""

from __future__ import annotations

import json
import logging

import pytest

from service.core.registry import ModelRegistry
from service.core.settings import Settings
from tests.support.models import export_model, gate


@pytest.fixture(scope="module")
def gated_repo(tmp_path_factory: pytest.TempPathFactory):
    """m: v1 without a gate (older file), v2 promoted, v3 not promoted (in its metadata)."""
    root = tmp_path_factory.mktemp("gated")
    export_model(root, "m", 1, "gru", seed=1, layers=1, hidden=4)
    export_model(root, "m", 2, "gru", seed=2, layers=1, hidden=4, gate_verdict=gate(True))
    export_model(root, "m", 3, "gru", seed=3, layers=1, hidden=4, gate_verdict=gate(False, 3.0, 2.0))
    return root


def loaded(root, **settings) -> ModelRegistry:
    registry = ModelRegistry(Settings(model_repository=root, **settings))
    registry.load_all()
    return registry


def test_default_is_the_highest_promoted_version(gated_repo, caplog):
    with caplog.at_level(logging.WARNING, logger="seqserve.registry"):
        registry = loaded(gated_repo)
    assert "m/3 is not promoted" in caplog.text and "worse than seasonal naive" in caplog.text
    assert registry.get("m").version == 2
    assert registry.get("m", 3).version == 3  # asked for by number: served whatever its gate
    assert [registry.get("m", v).promoted for v in (1, 2, 3)] == [True, True, False]
    described = registry.get("m", 3).describe()
    assert described["promoted"] is False and described["gate"] == gate(False, 3.0, 2.0)
    assert registry.get("m", 1).describe()["gate"] is None
    version, why = registry.default_version("m")
    assert version == 2 and "highest promoted" in why and "1 unpromoted" in why


def test_manifest_gate_overrides_and_reload_picks_it_up(gated_repo, tmp_path):
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(gated_repo, root)
    registry = loaded(root)
    manifest = root / "m" / "3" / "manifest.json"
    manifest.write_text(json.dumps({"created": "now", "gate": gate(True)}))
    assert registry.refresh_gates() == ["m/3"]
    assert registry.get("m").version == 3
    assert registry.refresh_gates() == []  # unchanged: nothing to report
    manifest.write_text(json.dumps({"gate": gate(False)}))
    (root / "m" / "2" / "manifest.json").write_text(json.dumps({"gate": gate(False)}))
    (root / "m" / "1" / "manifest.json").write_text(json.dumps({"gate": gate(False)}))
    assert sorted(registry.refresh_gates()) == ["m/1", "m/2", "m/3"]
    # Nothing promoted: the highest version serves, and the registry says why.
    version, why = registry.default_version("m")
    assert registry.get("m").version == 3 == version and "no loaded version passed" in why
    # A malformed gate in the manifest falls back to the file's own verdict.
    manifest.write_text(json.dumps({"gate": {"promoted": "yes"}}))
    registry.refresh_gates()
    assert registry.get("m", 3).gate == gate(False, 3.0, 2.0)


def test_removing_the_default_falls_back_to_the_next_promoted(gated_repo):
    registry = loaded(gated_repo)
    registry.remove("m", 2)
    assert registry.get("m").version == 1
    registry.remove("m", 1)
    assert registry.get("m").version == 3  # only an unpromoted one is left: it serves


def test_latest_policy_keeps_the_promoted_default_loaded(gated_repo, tmp_path):
    """With version_policy=latest and 1 version, an unpromoted newest version must not push
    the promoted default out of memory."""
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(gated_repo, root)
    (root / "m" / "3" / "manifest.json").write_text(json.dumps({"gate": gate(False)}))
    registry = loaded(root, version_policy="latest", latest_versions=1)
    assert registry.versions("m") == [2, 3] and registry.get("m").version == 2
    (root / "m" / "3" / "manifest.json").write_text(json.dumps({"gate": gate(True)}))
    registry.refresh_gates()
    assert [(e.name, e.version) for e in registry.wanted()] == [("m", 3)]


async def test_reload_under_latest_policy_keeps_the_default_when_the_new_file_is_unpromoted(tmp_path):
    """The newest version's gate is only in its ONNX metadata (no manifest): the reload learns
    it by loading the file, and must not unload the promoted version the default still is."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from service.core.metrics import Metrics
    from service.core.reloader import reload
    from service.core.services import BatcherPool

    root = tmp_path / "repo"
    export_model(root, "m", 1, "gru", seed=1, layers=1, hidden=4, gate_verdict=gate(True))
    settings = Settings(model_repository=root, version_policy="latest", latest_versions=1)
    registry = ModelRegistry(settings)
    registry.load_all()

    async def no_sessions() -> dict:
        return {}

    with ThreadPoolExecutor(1) as executor:
        svc = SimpleNamespace(
            settings=settings,
            registry=registry,
            executor=executor,
            reload_lock=asyncio.Lock(),
            pool=BatcherPool(settings, Metrics(), registry, executor),
            store=SimpleNamespace(usage=no_sessions),
        )
        export_model(root, "m", 2, "gru", seed=2, layers=1, hidden=4, gate_verdict=gate(False))
        report = await reload(svc)
        assert report.loaded == ["m/2"] and report.unloaded == []
        assert registry.versions("m") == [1, 2] and registry.get("m").version == 1
        export_model(root, "m", 3, "gru", seed=3, layers=1, hidden=4, gate_verdict=gate(True))
        report = await reload(svc)
        assert report.loaded == ["m/3"] and sorted(report.unloaded) == ["m/1", "m/2"]
        assert registry.versions("m") == [3] and registry.get("m").version == 3


def test_the_trainer_the_service_and_the_cli_say_the_same_default(tmp_path, caplog, capsys):
    """An unpromoted version next to a promoted one: v2 stays the default everywhere. The only
    version unpromoted: the service serves it by default (with a warning), and the trainer's
    warning, the service log and `seqserve models` all say so instead of 'the previous promoted
    version' or 'served only when asked for'."""
    from seqserve.cli import main as cli
    from training.cli import default_note

    failed = gate(False, 3.0, 2.0)
    export_model(
        tmp_path, "m", 2, "gru", seed=2, layers=1, hidden=4, gate_verdict=gate(True), manifest={"gate": gate(True)}
    )
    export_model(tmp_path, "m", 3, "gru", seed=3, layers=1, hidden=4, gate_verdict=failed, manifest={"gate": failed})
    export_model(tmp_path, "nile", 1, "gru", seed=4, layers=1, hidden=4, gate_verdict=failed, manifest={"gate": failed})
    with caplog.at_level(logging.WARNING, logger="seqserve.registry"):
        registry = loaded(tmp_path)
    assert registry.default_version("m")[0] == 2 and registry.default_version("nile")[0] == 1
    assert "v2 (the highest promoted version) stays the default" in caplog.text
    assert "no version of nile is promoted, so requests that name no version get the highest, v1" in caplog.text
    assert "keeps serving v2 (the highest promoted version)" in default_note(str(tmp_path), "m", 3)
    note = default_note(str(tmp_path), "nile", 1)
    assert "No version of nile is promoted, so the service serves the highest, v1, by default" in note
    assert "previous" not in note
    assert cli(["models", "--model-repository", str(tmp_path)]) == 0
    rows = {tuple(line.split()[:2]): line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "* (none promoted)" in rows[("nile", "1")] and "NOT promoted" in rows[("nile", "1")]
    assert " * " in rows[("m", "2")] and "*" not in rows[("m", "3")]

"""Versioned, atomic writes: numbers only grow, nothing is overwritten, failures leave no trace."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from training import repository
from training.data import TrainingError
from training.repository import publish

from .conftest import snapshot


def _build(tag: str) -> Any:
    def build(directory: Path) -> dict[str, Any]:
        (directory / "model.onnx").write_text(tag)
        return {"name": "m", "tag": tag}

    return build


def test_versions_increment(tmp_path: Path) -> None:
    versions = [publish(tmp_path, "m", _build(str(i)))[0] for i in range(3)]
    assert versions == [1, 2, 3]
    manifest = json.loads((tmp_path / "m" / "3" / "manifest.json").read_text())
    assert manifest == {"name": "m", "tag": "2", "version": 3}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "3"]


def test_versions_continue_after_the_highest(tmp_path: Path) -> None:
    (tmp_path / "m" / "7").mkdir(parents=True)
    (tmp_path / "m" / "7" / "model.onnx").write_text("someone else")
    assert publish(tmp_path, "m", _build("new"))[0] == 8


def test_lost_race_takes_the_next_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer claims version 1 between our scan and our rename: we must not overwrite it."""
    publish(tmp_path, "m", _build("theirs"))
    real = repository.next_version
    calls = iter([1])
    monkeypatch.setattr(repository, "next_version", lambda d: next(calls, None) or real(d))
    version, path = publish(tmp_path, "m", _build("ours"))
    assert version == 2 and path.name == "2"
    assert (tmp_path / "m" / "1" / "model.onnx").read_text() == "theirs"
    assert json.loads((path / "manifest.json").read_text())["version"] == 2


def test_rename_refused_onto_existing_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if the existence check is fooled, rename onto a non-empty version dir fails and we retry."""
    publish(tmp_path, "m", _build("theirs"))
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self.name == "1" else real_exists(self))
    monkeypatch.setattr(repository, "next_version", lambda d: 1)
    version, _ = publish(tmp_path, "m", _build("ours"))
    assert version == 2
    assert (tmp_path / "m" / "1" / "model.onnx").read_text() == "theirs"


def test_concurrent_writers_get_distinct_versions(tmp_path: Path) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        version, _ = publish(tmp_path, "m", _build(str(i)))
        with lock:
            results.append(version)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    tags = {(tmp_path / "m" / str(v) / "model.onnx").read_text() for v in results}
    assert len(tags) == 8  # nothing overwritten
    assert all(p.name.isdigit() for p in (tmp_path / "m").iterdir())


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    publish(tmp_path, "m", _build("keep"))
    before = snapshot(tmp_path)

    def broken(directory: Path) -> dict[str, Any]:
        (directory / "model.onnx").write_text("half")
        raise TrainingError("export failed")

    with pytest.raises(TrainingError):
        publish(tmp_path, "m", broken)
    with pytest.raises(TrainingError):
        publish(tmp_path, "other", broken)
    assert snapshot(tmp_path) == before


def test_loss_curves_are_strict_json() -> None:
    """The step loop's evaluation 0 has no training loss (NaN in memory): the manifest writes it
    null with the reason, because strict JSON parsers reject NaN."""
    from training.forecast_loop import StepHistory
    from training.publish import loss_record

    history = StepHistory(train_loss=[float("nan"), 0.5, 0.25], val_loss=[1.5, 1.25, 1.0])
    record = loss_record(history)
    text = json.dumps(record, allow_nan=False)  # raises on NaN / Infinity
    assert json.loads(text)["train_loss"] == [None, 0.5, 0.25]
    assert record["val_loss"] == [1.5, 1.25, 1.0]
    assert "train_loss[0] is null" in record["train_loss_note"]
    assert "train_loss_note" not in loss_record(StepHistory(train_loss=[0.5], val_loss=[1.0]))

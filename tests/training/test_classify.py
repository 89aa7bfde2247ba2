"""Japanese vowels: per-step logits, label read at each sequence's last step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.export import input_names, output_names
from training.pipeline import Outcome


@pytest.mark.slow
def test_clearly_beats_majority(classify_run: tuple[Path, list[Outcome]]) -> None:
    repo, _ = classify_run
    manifest = json.loads((repo / "vowels" / "1" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["model"]["accuracy"] > 0.8
    assert metrics["model"]["accuracy"] > metrics["majority"]["accuracy"] + 0.5
    assert metrics["model"]["macro_f1"] > 0.75 > metrics["majority"]["macro_f1"]
    assert manifest["outputs"] == [str(k) for k in range(1, 10)]
    assert manifest["config"]["head"] == "classification"
    assert sorted(p.name for p in (repo / "vowels" / "1").iterdir()) == [
        "confusion.png",
        "loss.png",
        "manifest.json",
        "model.onnx",
    ]


@pytest.mark.slow
def test_onnx_matches_reported_predictions(classify_run: tuple[Path, list[Outcome]]) -> None:
    """Raw LPC values into the exported graph give the same classes as the torch evaluation."""
    from training import loop
    from training.data import load_table, prepare_classify
    from training.presets import preset

    repo, outcomes = classify_run
    p = preset("vowels")
    data = prepare_classify(
        load_table(p["data"]), "speaker", "series_id", p["features"], split_column="split", report=lambda m: None
    )
    model = outcomes[0].model
    config = model.config
    session = ort.InferenceSession(str(repo / "vowels" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    seqs = data.test
    zeros = [np.zeros(config.state_shape(len(seqs.ids)), np.float32) for _ in config.state_names]
    logits = session.run(
        output_names(config), dict(zip(input_names(config), [seqs.x.astype(np.float32), *zeros], strict=True))
    )[0]
    onnx_pred = logits[np.arange(len(seqs.ids)), seqs.lengths - 1].argmax(-1)
    np.testing.assert_array_equal(onnx_pred, loop.predict_classes(model, seqs))

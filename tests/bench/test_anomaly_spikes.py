"""bench/anomaly_spikes.py on a tiny exported forecaster: the robust state update's model flags
every spike and hardly anything after it, the layout before flags the spike's echoes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench import anomaly_spikes
from models.export import export_onnx
from tests.models.test_quantiles import _sane, seasonal


def _entry(root: Path, layout: int) -> Path:
    entry = root / f"layout{layout}" / "1"
    export_onnx(_sane(layout), entry / "model.onnx", parity_cases=((1, 1),))
    manifest = {"data": {"split": {"test_pairs": 120}}, "time": None}
    (entry / "manifest.json").write_text(json.dumps(manifest))
    return entry


def test_spikes_are_flagged_once_with_the_robust_update(tmp_path: Path) -> None:
    data = tmp_path / "series.csv"
    pd.DataFrame({"y": seasonal(300, seed=4)[:, 0]}).to_csv(data, index=False)
    robust, old = (_entry(tmp_path, layout) for layout in (3, 2))
    series = pd.read_csv(data)[["y"]].to_numpy(dtype=np.float64)
    after = anomaly_spikes.measure(robust, series, every=20, after=14, shift=1.3)  # echoes a season (12) later
    before = anomaly_spikes.measure(old, series, every=20, after=14, shift=1.3)  # echoes a season (12) later
    assert after["robust"] and not before["robust"]
    assert after["spikes"] == before["spikes"] == 6
    assert after["spikes_flagged"] == before["spikes_flagged"] == 6
    assert after["extra_flags_max"] <= 1 < before["extra_flags_max"]
    assert after["flagged_95"] == before["flagged_95"]  # no ordinary reading is replaced
    assert anomaly_spikes.main(["--data", str(data), "--target", "y", "--every", "40", str(robust)]) == 0

"""Anomaly flags of trained forecasters on their own series, as served: the share of ordinary
test readings flagged, and what one reading ten times too large, or a level shift, does to the
flags of the readings after it.

For each model directory (a repository entry: model.onnx and manifest.json, trained on the
series given) the exported file runs in ONNX Runtime, one session from row 0 as a client would
stream it (one call: streaming in chunks gives the same rows). The test readings are the
series' last `test_pairs` rows (the manifest's split; readings t + 1 of the test origins t at
one step ahead). Then, at every `--every`-th test reading p in turn, from the state the
session had before it:

- spike: reading p times ten; is it flagged (outside 95 %), and how many of the next
  `--after` ordinary readings are flagged that were not without the spike;
- shift: every reading from p on times `--shift`; how many of the first `--after` are flagged,
  and how many of the last half of them (a shift the state accepts stops being flagged).

    python -m bench.anomaly_spikes --data training/datasets/electricity_halfhourly/electricity_halfhourly.csv \\
        --target demand_mw REPO/electricity_halfhourly/1 [OTHER/electricity_halfhourly/1 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _session(path: Path) -> tuple[Any, Any]:
    import onnxruntime as ort

    from models.config import METADATA_KEY, ModelConfig

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    return session, ModelConfig.from_json(meta[METADATA_KEY])


def _run(session: Any, config: Any, x: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(anomaly rows [T, 4], the state after) of readings x [T, F] from `state`."""
    from models.export import graph_output_names, input_names

    feeds = dict(zip(input_names(config), [x[None].astype(np.float32), *state], strict=True))
    got = session.run(graph_output_names(config), feeds)
    return got[-1][0], got[1 : 1 + len(config.state_names)]


def measure(model_dir: Path, series: np.ndarray, every: int, after: int, shift: float) -> dict[str, Any]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    session, config = _session(model_dir / "model.onnx")
    if not config.anomaly:
        raise SystemExit(f"{model_dir}: the model has no anomaly levels")
    test = int(manifest["data"]["split"]["test_pairs"])
    start = len(series) - test
    start_time = (manifest.get("time") or {}).get("first")  # row 0's time: the session's phase
    state = list(config.initial_state(1, start_time=start_time))
    before, state = _run(session, config, series[:start], state)
    ordinary, _ = _run(session, config, series[start:], state)
    flagged = ordinary[:, 1:3].mean(axis=0)
    spikes, extra, worst, shifted, late = 0, [], 0, [], []
    positions = range(0, test - after - 1, every)
    target = config.extra["forecaster"]["target_index"]
    for p in positions:
        _, at = _run(session, config, series[start : start + p], state) if p else (None, state)
        window = series[start + p : start + p + after + 1].copy()
        base = ordinary[p : p + after + 1, 2]
        spiked = window.copy()
        spiked[0, target] *= 10.0
        rows, _ = _run(session, config, spiked, at)
        spikes += int(rows[0, 2] == 1.0)
        more = int(((rows[1:, 2] == 1.0) & (base[1:] == 0.0)).sum())
        extra.append(more)
        worst = max(worst, more)
        moved = window.copy()
        moved[:, target] *= shift
        rows, _ = _run(session, config, moved, at)
        shifted.append(int(rows[:after, 2].sum()))
        late.append(int(rows[after // 2 : after, 2].sum()))
    n = len(extra)
    return {
        "model": str(model_dir),
        "layout": config.extra["forecaster"].get("layout", 1),
        "robust": bool(config.extra["forecaster"].get("robust_run", 0)),
        "test_readings": test,
        "flagged_80": float(flagged[0]),
        "flagged_95": float(flagged[1]),
        "spikes": n,
        "spikes_flagged": spikes,
        "extra_flags_mean": float(np.mean(extra)) if n else 0.0,
        "extra_flags_max": worst,
        "spikes_with_extra": int(sum(e > 0 for e in extra)),
        "shift_flags_mean": float(np.mean(shifted)) if n else 0.0,
        "shift_late_flags_mean": float(np.mean(late)) if n else 0.0,
        "warm_up_rows": len(before),
    }


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="repository entries (model.onnx + manifest.json)")
    parser.add_argument("--data", type=Path, required=True, help="the series the models were trained on (CSV)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--every", type=int, default=24, help="a spike at every n-th test reading")
    parser.add_argument("--after", type=int, default=11, help="ordinary readings watched after each")
    parser.add_argument("--shift", type=float, default=1.3, help="level shift factor")
    args = parser.parse_args(argv)
    frame = pd.read_csv(args.data)
    series = frame[[args.target]].to_numpy(dtype=np.float64)
    print(
        "| model | layout | robust | ordinary test readings flagged 80 % / 95 % | 10x spikes flagged "
        f"| extra flags in the next {args.after} (mean / max / spikes with any) "
        f"| shift x{args.shift}: flags in its first {args.after} / in the last {args.after - args.after // 2} |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for model in args.models:
        r = measure(model, series, args.every, args.after, args.shift)
        print(
            f"| {model.name if model.name not in ('1', '2') else model.parent.name} | {r['layout']} | "
            f"{'yes' if r['robust'] else 'no'} | {100 * r['flagged_80']:.1f} / {100 * r['flagged_95']:.1f} % | "
            f"{r['spikes_flagged']} of {r['spikes']} | {r['extra_flags_mean']:.2f} / {r['extra_flags_max']} / "
            f"{r['spikes_with_extra']} | {r['shift_flags_mean']:.1f} / {r['shift_late_flags_mean']:.1f} |"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

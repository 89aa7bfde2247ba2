"""Writing trained models: the `Outcome` of one trained cell, its repository entry (ONNX export
with its parity check, plots, manifest) and the LSTM/GRU comparison table.

Shared by the single-series and the many-series paths (training/pipeline.py dispatches,
training/global_run.py), so neither imports the other for it.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.config import ModelConfig
from training.data import ClassifyData, ForecastData, TrainingError
from training.series import MultiSeriesData
from training.settings import RunSettings


@dataclass
class Outcome:
    """One trained model with everything the manifest and the comparison table need."""

    cell: str
    model: Any  # RecurrentModel
    history: Any  # loop.History
    metrics: dict[str, Any]
    plots: dict[str, Any] = field(default_factory=dict)  # plot name -> callable(path)
    name: str = ""
    version: int = 0
    path: Path | None = None
    inference_us_per_step: float = 0.0
    parity_error: float = 0.0
    gate: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # why this cell was not published (its export failed); empty when it was
    record: dict[str, Any] = field(default_factory=dict)  # more top-level manifest entries (time, seasons)
    data: Any = None  # the ForecastData a single-series forecaster was evaluated on (sorted, adapted)


def measure_step_latency(model_path: Path, config: ModelConfig, steps: int = 200) -> float:
    """Median microseconds for one streaming step (batch 1, length 1) in ONNX Runtime."""
    import onnxruntime as ort

    from models.export import input_names, output_names

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 1, config.input_size), dtype=np.float32)
    state = list(config.initial_state(1))
    times = []
    for i in range(steps + 10):
        start = time.perf_counter()
        result = session.run(output_names(config), dict(zip(input_names(config), [x, *state], strict=True)))
        if i >= 10:
            times.append(time.perf_counter() - start)
        state = result[1:]
    return float(np.median(times) * 1e6)


def publish_outcome(
    outcome: Outcome,
    name: str,
    settings: RunSettings,
    data: ForecastData | ClassifyData | MultiSeriesData,
    fingerprint: str,
    torch_version: str,
) -> None:
    import onnx
    import onnxruntime

    from models.config import ANOMALY_COLUMNS, METADATA_KEY
    from models.export import ExportError, export_onnx
    from training.gate import GATE_KEY, to_metadata
    from training.repository import publish

    model = outcome.model
    config: ModelConfig = model.config

    def build(directory: Path) -> dict[str, Any]:
        model_path = directory / "model.onnx"
        try:
            outcome.parity_error = export_onnx(
                model,
                model_path,
                metadata={
                    "seqserve.name": name,
                    "seqserve.data_sha256": fingerprint,
                    "seqserve.task": settings.task,
                    GATE_KEY: to_metadata(outcome.gate),
                },
            )
        except ExportError as exc:
            raise TrainingError(f"export of {name} failed its parity check: {exc}") from exc
        outcome.inference_us_per_step = measure_step_latency(model_path, config)
        for filename, draw in outcome.plots.items():
            draw(directory / filename)
        history = outcome.history
        policy = "linear interpolation (edges: nearest value); refused above 20% per column"
        split: dict[str, Any]
        if isinstance(data, ForecastData):
            split = {
                "train_pairs": len(data.train),
                "val_pairs": len(data.val),
                "test_pairs": len(data.test),
                # origins whose reading or a target was filled in: not scored (training/data.py)
                "val_pairs_filled_not_scored": data.excluded_val,
                "test_pairs_filled_not_scored": data.excluded_test,
            }
            rows = len(data.features)
            policy = (
                "linear interpolation (edges: nearest value), as for times missing from a regular time column; "
                "validation and test origins whose reading or targets were filled are not scored; refused above "
                "20% per column"
            )
        elif isinstance(data, MultiSeriesData):
            split = {
                "within": "each series: chronological, its last part is its test block",
                "series": len(data.series),
                "series_left_out": data.dropped,
                "train_pairs": data.pairs("train"),
                "val_pairs": data.pairs("val"),
                "test_pairs": data.pairs("test"),
            }
            rows = int(sum(len(s.rows) for s in data.series))
            policy = (
                "per series: leading/trailing empty values dropped; gaps inside a series linearly interpolated "
                "within that series; origins whose input or targets were interpolated are not scored; refused "
                "above 20% per series"
            )
        else:
            split = {
                "train_sequences": len(data.train.labels),
                "val_sequences": len(data.val.labels),
                "test_sequences": len(data.test.labels),
            }
            rows = int(sum(len(s.ids) for s in (data.train, data.val, data.test)))
        return {
            "name": name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "task": settings.task,
            "config": config.to_dict(),
            "config_key": METADATA_KEY,
            "features": list(config.feature_names),
            "outputs": list(config.output_names),
            "quantiles": list(config.quantiles),
            "anomaly": list(ANOMALY_COLUMNS[1:]) if config.anomaly else [],
            "normalization": config.to_dict()["normalization"],
            "metrics": outcome.metrics,
            "gate": outcome.gate,
            "training": {
                "seconds": round(history.seconds, 3),
                "epochs_run": len(history.train_loss),
                "best_epoch": history.best_epoch,
                "steps_run": getattr(history, "steps_run", None),
                "best_step": getattr(history, "best_step", None),
                "best_is_last": getattr(history, "best_is_last", None),
                "distributed": getattr(history, "distributed", None) or None,
                "stopped_early": history.stopped_early,
                **loss_record(history),
                "parameters": model.num_parameters(),
                "inference_us_per_step": round(outcome.inference_us_per_step, 2),
                "onnx_parity_max_abs_error": outcome.parity_error,
            },
            "data": {
                "path": str(Path(settings.data).resolve()),
                "sha256": fingerprint,
                "rows": rows,
                "missing_values_filled": data.filled,
                "missing_value_policy": policy,
                "split": split,
            },
            "versions": {
                "torch": torch_version,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "python": platform.python_version(),
            },
            "training_args": settings.to_dict(),
            "files": ["model.onnx", "manifest.json", *outcome.plots],
            **outcome.record,
        }

    outcome.name = name
    outcome.version, outcome.path = publish(settings.repository, name, build)


def comparison_table(outcomes: list[Outcome], task: str) -> str:
    """The LSTM vs GRU table `--cell both` prints: error (next to every baseline), size, training
    and inference time, and whether each cell was published and promoted."""

    def status(o: Outcome) -> str:
        if o.error:
            return "export failed"
        return "promoted" if o.gate.get("promoted") else "not promoted"

    if task == "forecast":
        header = ["model", "MAE", "RMSE", "MASE", "MAPE %", "MASE window", "params", "train s", "µs/step", "gate"]

        def mape(m: dict[str, Any]) -> str:
            return "-" if m.get("mape") is None else f"{m['mape']:.3f}"

        rows = [
            [
                o.cell,
                f"{o.metrics['streaming']['mae']:.4g}",
                f"{o.metrics['streaming']['rmse']:.4g}",
                f"{o.metrics['streaming']['mase']:.3f}",
                mape(o.metrics["streaming"]),
                f"{o.metrics['windowed']['mase']:.3f}",
                str(o.model.num_parameters()),
                f"{o.history.seconds:.1f}",
                f"{o.inference_us_per_step:.0f}" if not o.error else "-",
                status(o),
            ]
            for o in outcomes
        ]
        metrics = outcomes[0].metrics
        for name in metrics["baselines"]:
            m = metrics[name]
            rows.append(
                [name, f"{m['mae']:.4g}", f"{m['rmse']:.4g}", f"{m['mase']:.3f}", mape(m), "-", "-", "-", "-", "-"]
            )
    else:
        header = ["model", "accuracy", "macro-F1", "params", "train s", "µs/step", "gate"]
        rows = [
            [
                o.cell,
                f"{o.metrics['model']['accuracy']:.3f}",
                f"{o.metrics['model']['macro_f1']:.3f}",
                str(o.model.num_parameters()),
                f"{o.history.seconds:.1f}",
                f"{o.inference_us_per_step:.0f}" if not o.error else "-",
                status(o),
            ]
            for o in outcomes
        ]
        maj = outcomes[0].metrics["majority"]
        rows.append(["majority", f"{maj['accuracy']:.3f}", f"{maj['macro_f1']:.3f}", "-", "-", "-", "-"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def loss_record(history: Any) -> dict[str, Any]:
    """The loss curves as strict JSON: an evaluation with no training loss is written null, with why.

    The step loop evaluates the untrained network once before its first step (the validation loss
    that later evaluations must beat), so that evaluation has no training loss; it is kept as NaN
    in memory (the loss plot skips it) but NaN is not JSON, so strict parsers would reject the
    manifest.
    """
    train = [float(v) if math.isfinite(v) else None for v in history.train_loss]
    val = [float(v) if math.isfinite(v) else None for v in history.val_loss]
    record: dict[str, Any] = {"train_loss": train, "val_loss": val}
    if train and train[0] is None:
        record["train_loss_note"] = (
            "train_loss[0] is null: evaluation 0 is the network before any training step "
            "(its validation loss is the one to beat), so it has no training loss"
        )
    return record

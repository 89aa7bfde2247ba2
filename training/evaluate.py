"""Test-split metrics for the model and the baselines of training/baselines.py.

Forecasting: MAE, RMSE, MASE and MAPE for the model and every baseline, over the same test origins,
plus the error by lead time when the horizon is longer than one step. MASE divides by the
in-sample MAE of the one-step naive forecast on the *training* block, per target (Hyndman &
Koehler 2006), so MASE < 1 means "better than naive was in-sample"; the naive row of the table
shows what the naive forecast actually scores on test. MAPE is taken over the test values that are
not zero (a series with zeros, e.g. sunspots, has a MAPE that says little).

Classification: accuracy and macro-F1 for the model and for always predicting the majority
class of the training split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.baselines import Baselines, naive_forecast, seasonal_naive_forecast
from training.data import ForecastData

__all__ = ["naive_forecast", "seasonal_naive_forecast"]

MASE_SCALE = "in-sample MAE of the one-step naive forecast on the training block, per target"


def mase_scale(data: ForecastData) -> np.ndarray:
    """Per output column: in-sample one-step naive MAE of its target on the training block."""
    train = data.targets[: data.train_rows]
    scale = np.abs(np.diff(train, axis=0)).mean(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return np.repeat(scale, data.horizon)


def _mape(err: np.ndarray, actual: np.ndarray) -> float | None:
    nonzero = np.abs(actual) > 1e-12
    if not nonzero.any():
        return None
    return float(100.0 * np.mean(np.abs(err[nonzero]) / np.abs(actual[nonzero])))


def forecast_metrics(pred: np.ndarray, actual: np.ndarray, scale: np.ndarray, horizon: int = 1) -> dict[str, Any]:
    """MAE, RMSE, MASE, MAPE (%) over every output column; by lead time when horizon > 1."""
    err = pred - actual
    mae_cols = np.abs(err).mean(axis=0)
    out: dict[str, Any] = {
        "mae": float(mae_cols.mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mase": float((mae_cols / scale).mean()),
        "mape": _mape(err, actual),
    }
    if horizon > 1:
        # Columns are target-major (target0@t+1..t+h, target1@...): lead k is every h-th column.
        leads = range(horizon)
        out["by_lead"] = {
            "mae": [float(np.abs(err[:, k::horizon]).mean()) for k in leads],
            "mape": [_mape(err[:, k::horizon], actual[:, k::horizon]) for k in leads],
        }
    return out


def forecast_report(data: ForecastData, predictions: dict[str, np.ndarray], baselines: Baselines) -> dict[str, Any]:
    """Metrics for each model prediction set (e.g. windowed, streaming) and every baseline.

    `best_baseline` is the baseline with the lowest test MAE; `best_naive_baseline` the best of
    naive and the seasonal naives, which is what the quality gate compares with."""
    pairs = data.test
    actual = data.y[pairs]
    scale = mase_scale(data)
    h = data.horizon
    report: dict[str, Any] = {name: forecast_metrics(pred, actual, scale, h) for name, pred in predictions.items()}
    for name, pred in baselines.predictions.items():
        report[name] = forecast_metrics(pred, actual, scale, h)
    names = list(baselines.predictions)
    report["baselines"] = {
        name: {"description": baselines.descriptions[name], "seconds": baselines.seconds[name]} for name in names
    }
    report["baselines_skipped"] = dict(baselines.skipped)
    report["best_baseline"] = min(names, key=lambda n: report[n]["mae"])
    report["best_naive_baseline"] = min(baselines.naive_names, key=lambda n: report[n]["mae"])
    report["test_pairs"] = len(pairs)
    # test origins whose reading or a target was filled in (interpolated): left out for all
    report["test_excluded_filled"] = int(getattr(data, "excluded_test", 0))
    report["test_origins"] = [int(pairs[0]), int(pairs[-1])]
    report["mase_scale"] = MASE_SCALE
    per_output = {}
    for name, pred in predictions.items():
        per_output[name] = {
            out: float(np.abs(pred[:, i] - actual[:, i]).mean()) for i, out in enumerate(data.output_names)
        }
    report["mae_per_output"] = per_output
    return report


def macro_f1(pred: np.ndarray, actual: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over the classes present in either predictions or labels."""
    scores = []
    for cls in range(num_classes):
        tp = int(np.sum((pred == cls) & (actual == cls)))
        fp = int(np.sum((pred == cls) & (actual != cls)))
        fn = int(np.sum((pred != cls) & (actual == cls)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix(pred: np.ndarray, actual: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (actual, pred), 1)
    return matrix


def classify_report(pred: np.ndarray, actual: np.ndarray, train_labels: np.ndarray, classes: tuple[str, ...]) -> dict:
    n = len(classes)
    majority = int(np.bincount(train_labels, minlength=n).argmax())
    base = np.full_like(actual, majority)
    return {
        "model": {"accuracy": float(np.mean(pred == actual)), "macro_f1": macro_f1(pred, actual, n)},
        "majority": {
            "accuracy": float(np.mean(base == actual)),
            "macro_f1": macro_f1(base, actual, n),
            "class": classes[majority],
        },
        "test_sequences": len(actual),
        "confusion_matrix": confusion_matrix(pred, actual, n).tolist(),
    }

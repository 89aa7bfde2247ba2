"""Test-split metrics and the honest baselines a model has to beat.

Forecasting: MAE, RMSE and MASE for the model, the naive forecast (every future step equals the
last observed value) and, given a season s, the seasonal naive forecast (y[t+k] = y[t+k-s*ceil(k/s)]).
MASE divides by the in-sample MAE of the one-step naive forecast on the *training* block, per
target (Hyndman & Koehler 2006), so MASE < 1 means "better than naive was in-sample" and the
naive row of the table shows what the naive forecast actually scores on test.

Classification: accuracy and macro-F1 for the model and for always predicting the majority
class of the training split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.data import ForecastData


def naive_forecast(data: ForecastData, pairs: np.ndarray) -> np.ndarray:
    """[P, T*h]: the last observed target value repeated over the horizon."""
    last = data.targets[pairs]  # [P, T]
    return np.repeat(last, data.horizon, axis=1)


def seasonal_naive_forecast(data: ForecastData, pairs: np.ndarray, season: int) -> np.ndarray:
    """[P, T*h]: the value one (or more) seasons before each future step, all already observed."""
    cols = []
    for j in range(len(data.target_names)):
        for k in range(1, data.horizon + 1):
            back = season * int(np.ceil(k / season))
            idx = pairs + k - back
            cols.append(data.targets[np.clip(idx, 0, None), j])
    return np.stack(cols, axis=1)


def mase_scale(data: ForecastData) -> np.ndarray:
    """Per output column: in-sample one-step naive MAE of its target on the training block."""
    train = data.targets[: data.train_rows]
    scale = np.abs(np.diff(train, axis=0)).mean(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return np.repeat(scale, data.horizon)


def forecast_metrics(pred: np.ndarray, actual: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    err = pred - actual
    mae_cols = np.abs(err).mean(axis=0)
    return {
        "mae": float(mae_cols.mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mase": float((mae_cols / scale).mean()),
    }


def forecast_report(
    data: ForecastData, predictions: dict[str, np.ndarray], seasons: list[int] | int | None
) -> dict[str, Any]:
    """Metrics for each model prediction set (e.g. windowed, streaming) and the baselines."""
    pairs = data.test
    actual = data.y[pairs]
    scale = mase_scale(data)
    report: dict[str, Any] = {name: forecast_metrics(pred, actual, scale) for name, pred in predictions.items()}
    report["naive"] = forecast_metrics(naive_forecast(data, pairs), actual, scale)
    for season in [seasons] if isinstance(seasons, int) else seasons or []:
        report[f"seasonal_naive_{season}"] = forecast_metrics(
            seasonal_naive_forecast(data, pairs, season), actual, scale
        )
    report["test_pairs"] = len(pairs)
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

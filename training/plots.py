"""PNG plots written next to each model, so a version can be judged without re-running it.

matplotlib's Agg backend is selected before pyplot is imported: training runs headless.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from training.data import ForecastData
from training.loop import History


def loss_curves(history: History, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(history.train_loss) + 1)
    ax.plot(epochs, history.train_loss, label="train")
    ax.plot(epochs, history.val_loss, label="validation")
    ax.axvline(history.best_epoch, color="grey", linestyle=":", label=f"best epoch {history.best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (normalised units)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def baselines_to_draw(metrics: dict[str, Any], limit: int = 2) -> list[str]:
    """The baselines worth drawing next to the model: the best one and the best naive one."""
    names = [metrics["best_baseline"], metrics["best_naive_baseline"]]
    return list(dict.fromkeys(names))[:limit]


def _x(times: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    return rows if times is None else times[rows]


def forecast_panels(
    data: ForecastData,
    times: np.ndarray | None,
    series: dict[str, np.ndarray],
    path: Path,
    title: str,
    max_points: int = 48 * 7,
) -> None:
    """One panel per target (rows) and per lead shown (1 step ahead, and the last lead when the
    horizon is longer): the actual values and each forecast over the first test origins, against
    the time the forecast is for, labelled with each series' test MAE."""
    pairs = data.test[:max_points]
    h = data.horizon
    leads = [1] if h == 1 else [1, h]
    targets = data.target_names
    fig, axes = plt.subplots(
        len(targets), len(leads), figsize=(11 * len(leads) ** 0.5, 3.6 * len(targets)), squeeze=False
    )
    for j, target in enumerate(targets):
        for c, lead in enumerate(leads):
            ax = axes[j][c]
            column = j * h + lead - 1
            when = _x(times, pairs + lead)
            ax.plot(when, data.y[pairs, column], color="black", linewidth=1.6, label="actual")
            actual_all = data.y[data.test, column]
            for name, values in series.items():
                mae = float(np.abs(values[:, column] - actual_all).mean())  # this lead, every test origin
                ax.plot(when, values[: len(pairs), column], linewidth=1, label=f"{name} (test MAE {mae:.4g})")
            ax.set_ylabel(f"{target} (data units)")
            ax.set_xlabel("time of the forecast value" if times is not None else "row of the forecast value")
            ax.set_title(f"{target}, {lead} step{'s' if lead > 1 else ''} ahead")
            ax.grid(alpha=0.3)
            if times is not None:
                fig.autofmt_xdate()
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}: first {len(pairs)} of {len(data.test)} test origins")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def error_by_lead(by_lead: dict[str, dict[str, list[Any]]], path: Path, title: str, units: str) -> None:
    """Test MAE (and MAPE when defined) against the lead time, one line per model/baseline."""
    with_mape = all(all(v is not None for v in lead["mape"]) for lead in by_lead.values())
    fig, axes = plt.subplots(1, 2 if with_mape else 1, figsize=(12 if with_mape else 7, 4), squeeze=False)
    for name, lead in by_lead.items():
        steps = np.arange(1, len(lead["mae"]) + 1)
        axes[0][0].plot(steps, lead["mae"], marker=".", label=name)
        if with_mape:
            axes[0][1].plot(steps, lead["mape"], marker=".", label=name)
    axes[0][0].set_ylabel(f"MAE ({units})")
    if with_mape:
        axes[0][1].set_ylabel("MAPE (%)")
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("lead time (steps ahead)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mase_distribution(metrics: dict[str, Any], path: Path, title: str) -> None:
    """A global model over many series: the distribution of per-series test MASE (ECDF, log x)
    of the model and every baseline, and the share of series where the model is better."""
    per_series = metrics["per_series"]
    names = ["streaming", *metrics["beats"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in names:
        values = np.sort([e[name]["mase"] for e in per_series.values() if name in e])
        values = np.maximum(values, 1e-3)
        share = np.arange(1, len(values) + 1) / len(values)
        if name == "streaming":
            label = f"model (mean {metrics[name]['mase']:.3f})"
        else:
            label = f"{name} (mean {metrics[name]['mase']:.3f}; model better on {metrics['beats'][name]:.0%})"
        ax.step(values, share, where="post", linewidth=2.2 if name == "streaming" else 1.2, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("test MASE of a series (log scale; lower is better)")
    ax.set_ylabel("share of series with MASE at most x")
    ax.set_title(f"{title} ({len(per_series)} series)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def series_panels(
    data: Any, predictions: list[np.ndarray], baselines: list[Any], metrics: dict[str, Any], path: Path, title: str
) -> None:
    """Six series chosen across the model's MASE distribution (best to worst): each series'
    whole history and, at every test origin, the forecast of the last lead from the model and
    the best baseline."""
    order = np.argsort([metrics["per_series"][s.key]["streaming"]["mase"] for s in data.series])
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(6, len(order))).round().astype(int))]
    best = metrics["best_baseline"]
    h = data.horizon
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), squeeze=False)
    for ax, i in zip(axes.ravel(), picks, strict=False):
        s = data.series[int(i)]
        d = s.data
        ax.plot(np.arange(len(d.targets)), d.targets[:, 0], color="black", linewidth=1.2, label="actual")
        when = d.test + h
        ax.plot(when, predictions[int(i)][:, h - 1], marker="o", markersize=3, label="model")
        if best in baselines[int(i)].predictions:
            ax.plot(when, baselines[int(i)].predictions[best][:, h - 1], marker="x", markersize=3, label=best)
        ax.axvline(d.train_rows - 0.5, color="grey", linestyle=":")
        ax.axvline(int(d.val[-1]) + h + 0.5, color="grey", linestyle="--")
        mase = metrics["per_series"][s.key]["streaming"]["mase"]
        ax.set_title(f"{s.key}: model MASE {mase:.2f}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(picks) :]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}; {h} step{'s' if h > 1 else ''} ahead; dotted: end of training, dashed: start of test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

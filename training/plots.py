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

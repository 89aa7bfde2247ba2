"""PNG plots written next to each model, so a version can be judged without re-running it.

matplotlib's Agg backend is selected before pyplot is imported: training runs headless.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

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


def forecast_vs_actual(
    actual: np.ndarray,
    series: dict[str, np.ndarray],
    path: Path,
    title: str,
    max_points: int = 48 * 7,
) -> None:
    """The first `max_points` test steps of one output column: actual vs each prediction."""
    fig, ax = plt.subplots(figsize=(10, 4))
    n = min(len(actual), max_points)
    ax.plot(actual[:n], label="actual", color="black", linewidth=1.5)
    for name, values in series.items():
        ax.plot(values[:n], label=name, linewidth=1)
    ax.set_xlabel("test step")
    ax.set_title(title)
    ax.legend()
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

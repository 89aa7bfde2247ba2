"""Sizes that adapt to the length of the series, so a short series trains instead of being refused.

Only settings the user did not give (`RunSettings.defaulted`) are chosen here, except the
window, which is shortened whenever the training block cannot hold two of them (said so):

- window (the TBPTT chunk / the windowed evaluation's length): at most half the training pairs;
- hidden size: SMALL_HIDDEN for short training blocks, where a 32-wide cell has more weights
  than there are training values to fit them (its head starts at zero, so a model that learns
  nothing still answers its baseline);
- streams (batch size): no more streams than there are distinct chunk starts.

The smallest series that trains: MIN_TRAIN_PAIRS training pairs and one validation and one test
origin, i.e. about 16 rows with the default fractions (15 % validation, 15 % test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from training.data import TrainingError
from training.settings import RunSettings

MIN_TRAIN_PAIRS = 8
# (training rows below which, hidden size) for a hidden size the user did not give.
SMALL_HIDDEN = ((150, 8), (600, 16))


def split_rows(rows: int, settings: RunSettings) -> tuple[int, int, int]:
    """(train, validation, test) rows of the chronological split (training/data.py)."""
    n_test = round(rows * settings.test_fraction)
    n_val = round(rows * settings.val_fraction)
    return rows - n_val - n_test, n_val, n_test


def adapt(settings: RunSettings, rows: int, report: Callable[[str], None] = print) -> RunSettings:
    """`settings` with window, hidden size and streams fitted to a series of `rows` rows."""
    if settings.task != "forecast":
        return settings
    train_rows, n_val, n_test = split_rows(rows, settings)
    train_pairs = train_rows - settings.horizon
    if train_pairs < MIN_TRAIN_PAIRS or n_val < settings.horizon or n_test < settings.horizon:
        raise TrainingError(
            f"too few rows ({rows}) for horizon {settings.horizon}: the split gives {max(train_pairs, 0)} training "
            f"pairs (need {MIN_TRAIN_PAIRS}), {n_val} validation and {n_test} test rows (need {settings.horizon} "
            "each); use more data or a shorter --horizon"
        )
    changes: dict[str, Any] = {}
    window = max(2, min(settings.window, train_pairs // 2))
    if window != settings.window:
        changes["window"] = window
    if "hidden" in settings.defaulted:
        for below, hidden in SMALL_HIDDEN:
            if train_rows < below:
                if hidden < settings.hidden:
                    changes["hidden"] = hidden
                break
    if "batch_size" in settings.defaulted:
        starts = max(1, train_pairs - window + 1)
        if starts < settings.batch_size:
            changes["batch_size"] = max(1, starts)
    if changes:
        listing = ", ".join(f"{k.replace('_', '-')} {getattr(settings, k)} -> {v}" for k, v in changes.items())
        report(f"{rows} rows ({train_rows} for training): sizes adapted to the series: {listing}")
        return replace(settings, **changes)
    return settings

"""Fixtures of the benchmark tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _baseline_entry_points_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench.quality replaces training.baselines' entry points with cached, in-process ones for
    the rest of its own process (bench/quality.py `_cached_baselines`); in the test process they
    are put back after each test, so later tests (the baselines' worker process among them) run
    the real ones."""
    from training import baselines

    monkeypatch.setattr(baselines, "start", baselines.start)
    monkeypatch.setattr(baselines, "compute_baselines", baselines.compute_baselines)

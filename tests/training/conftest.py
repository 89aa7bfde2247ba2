"""Shared, session-scoped trainings: each model is trained once and examined by many tests.

Sizes are small (hidden 16, few epochs) so the whole directory runs in well under two minutes
on two CPU cores; the bundled datasets under training/datasets are used, never /work/shared.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.support.tier import starts
from training.cli import RunSettings, add_arguments, resolve
from training.pipeline import Outcome, train_and_publish
from training.presets import DATASETS

ELECTRICITY = DATASETS / "electricity_halfhourly" / "electricity_halfhourly.csv"
VOWELS = DATASETS / "japanese_vowels" / "japanese_vowels.csv"
CO2 = DATASETS / "co2_weekly" / "co2_weekly.csv"
SUNSPOTS = DATASETS / "sunspots_yearly" / "sunspots_yearly.csv"


def settings_from(argv: list[str]) -> RunSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve(parser.parse_args(argv))


@pytest.fixture(scope="session")
@starts("a training run to quality")
def forecast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Outcome]]:
    """Small LSTM and GRU on the electricity preset (real data), published as <name>-lstm/-gru."""
    repo = tmp_path_factory.mktemp("forecast_repo")
    argv = ["--preset", "electricity", "--cell", "both", "--hidden", "16", "--epochs", "4", "--lr", "0.003"]
    argv += ["--baselines", "naive"]  # the statsforecast baselines are tested in test_quality.py
    settings = settings_from([*argv, "--repository", str(repo), "--name", "elec", "--quiet"])
    return repo, train_and_publish(settings)


@pytest.fixture(scope="session")
@starts("a training run to quality")
def classify_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Outcome]]:
    repo = tmp_path_factory.mktemp("classify_repo")
    argv = ["--preset", "vowels", "--cell", "lstm", "--hidden", "16", "--epochs", "25"]
    settings = settings_from([*argv, "--repository", str(repo), "--quiet"])
    return repo, train_and_publish(settings)


def snapshot(root: Path) -> list[str]:
    """Every path under root (hidden ones included), to prove a failed run left nothing."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

"""Bad input gives a named TrainingError (exit 2, one line, no traceback) and leaves the
repository exactly as it was; the CLI path through seqserve.cli.main works end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from seqserve.cli import main

from .conftest import CO2, SUNSPOTS, VOWELS, snapshot

# Tiny models are not expected to pass the quality gate (tested in test_quality.py), and the
# statistical baselines are tested there too: these tests are about input handling.
TINY = ["--hidden", "8", "--epochs", "3", "--quiet", "--allow-worse", "--baselines", "naive"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository that already holds one entry, so "unchanged" is a real check."""
    root = tmp_path / "repo"
    (root / "existing" / "1").mkdir(parents=True)
    (root / "existing" / "1" / "model.onnx").write_bytes(b"x")
    return root


def _bad_csvs(tmp_path: Path) -> dict[str, Path]:
    ok = pd.read_csv(SUNSPOTS)
    files = {}
    short = tmp_path / "short.csv"
    ok.head(12).to_csv(short, index=False)  # 30 rows train now (training/sizing.py); 12 cannot
    files["short"] = short
    text = ok.copy().astype({"sunactivity": object})
    text.loc[100, "sunactivity"] = "lots"
    files["text"] = tmp_path / "text.csv"
    text.to_csv(files["text"], index=False)
    vowels = pd.read_csv(VOWELS, nrows=600)
    vowels["speaker"] = vowels["speaker"].astype(float)
    vowels.loc[42, "speaker"] = float("nan")
    files["nan_label"] = tmp_path / "nan_label.csv"
    vowels.to_csv(files["nan_label"], index=False)
    typed = tmp_path / "typed_config.json"
    typed.write_text(json.dumps({"data": str(SUNSPOTS), "target": "sunactivity", "epochs": "ten"}))
    files["typed"] = typed
    config = tmp_path / "bad_config.json"
    config.write_text(json.dumps({"data": str(SUNSPOTS), "target": "sunactivity", "learning_rate": 1}))
    files["config"] = config
    return files


CASES = {
    "missing file": (["--data", "{tmp}/nope.csv", "--target", "y"], "data file not found"),
    "unknown column": (["--data", str(SUNSPOTS), "--target", "sunspots"], "unknown target column(s) ['sunspots']"),
    "unknown feature": (
        ["--data", str(SUNSPOTS), "--target", "sunactivity", "--features", "year,temp"],
        "unknown feature column(s) ['temp']",
    ),
    "too few rows": (["--data", "{short}", "--target", "sunactivity"], "too few rows (12) for horizon 1"),
    "non-numeric": (["--data", "{text}", "--target", "sunactivity"], "non-numeric value(s), first 'lots'"),
    "nan label": (
        ["--data", "{nan_label}", "--task", "classify", "--label", "speaker", "--sequence-id", "series_id"],
        "label column 'speaker' has 1 missing value(s)",
    ),
    "unknown config key": (["--config", "{config}"], "unknown setting(s) ['learning_rate']"),
    "config value type": (["--config", "{typed}"], "setting 'epochs' must be an integer, got 'ten'"),
    "bad dropout": (
        ["--data", str(SUNSPOTS), "--target", "sunactivity", "--layers", "2", "--dropout", "1.5"],
        "dropout must be in [0, 1)",
    ),
    "negative input noise": (["--preset", "vowels", "--input-noise", "-0.1"], "--input-noise must be"),
    "input noise on a forecast": (
        ["--data", str(SUNSPOTS), "--target", "sunactivity", "--input-noise", "0.5"],
        "--input-noise is for classification",
    ),
    "weight average of 1": (["--preset", "vowels", "--weight-average", "1"], "--weight-average must be"),
    "weight average on a forecast": (
        ["--data", str(SUNSPOTS), "--target", "sunactivity", "--weight-average", "0.9"],
        "--weight-average is for classification",
    ),
    "no target": (["--data", str(SUNSPOTS)], "forecasting needs --target"),
    "bad name": (["--data", str(SUNSPOTS), "--target", "sunactivity", "--name", "../evil"], "invalid model name"),
    "unknown preset": (["--preset", "nope"], "unknown preset 'nope'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error_and_changes_nothing(
    case: str, tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _bad_csvs(tmp_path)
    argv, message = CASES[case]
    argv = [a.format(tmp=tmp_path, **files) for a in argv]
    before = snapshot(repo)
    code = main(["train", *argv, "--repository", str(repo), *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0  # one line
    assert snapshot(repo) == before


def test_an_unknown_column_is_the_first_thing_said(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Default flags (no --quiet) with a target the file lacks: the error comes before any
    sizing or season report about a series that is not there."""
    code = main(["train", "--data", str(SUNSPOTS), "--target", "pax", "--repository", str(repo)])
    captured = capsys.readouterr()
    assert code == 2 and "unknown target column(s) ['pax']" in captured.err
    assert "sizes adapted" not in captured.out and "seasons" not in captured.out, captured.out


def test_failure_on_fresh_repository_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "fresh"
    assert main(["train", "--data", str(SUNSPOTS), "--target", "nope", "--repository", str(repo), *TINY]) == 2
    assert not repo.exists()


@pytest.mark.slow
def test_cli_trains_publishes_and_increments_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data": str(SUNSPOTS), "target": ["sunactivity"], "window": 11, "season": 11}))
    argv = ["train", "--config", str(config), "--name", "spots", "--repository", str(repo), *TINY]
    argv += ["--transform", "seasonal_diff"]  # the formula given: choosing it is tested elsewhere
    assert main(argv) == 0
    assert main([*argv, "--horizon", "2"]) == 0  # explicit flag overrides nothing in config: adds horizon
    assert sorted(p.name for p in (repo / "spots").iterdir()) == ["1", "2"]
    first = json.loads((repo / "spots" / "1" / "manifest.json").read_text())
    second = json.loads((repo / "spots" / "2" / "manifest.json").read_text())
    assert first["version"] == 1 and second["version"] == 2
    assert first["training_args"]["window"] == 11  # from the config file
    assert second["outputs"] == ["sunactivity@t+1", "sunactivity@t+2"]
    assert "seasonal_naive_11" in first["metrics"]
    assert "wrote" in capsys.readouterr().out


def test_missing_values_are_interpolated_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    code = main(["train", "--preset", "co2", "--repository", str(repo), *TINY])
    assert code == 0
    out = capsys.readouterr().out
    assert "column 'co2_ppm': 59 missing value(s) of 2284 filled by linear interpolation" in out
    manifest = json.loads((repo / "co2" / "1" / "manifest.json").read_text())
    assert manifest["data"]["missing_values_filled"] == 59
    assert manifest["outputs"] == [f"co2_ppm@t+{k}" for k in range(1, 5)]


def test_mostly_missing_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.read_csv(CO2)
    frame.loc[: len(frame) // 2, "co2_ppm"] = None
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    assert main(["train", "--data", str(path), "--target", "co2_ppm", "--repository", str(tmp_path / "r"), *TINY]) == 2
    assert "more than 20%" in capsys.readouterr().err


def test_same_seed_same_model(tmp_path: Path) -> None:
    argv = ["train", "--data", str(SUNSPOTS), "--target", "sunactivity", "--window", "11", "--seed", "7", *TINY]
    assert main([*argv, "--repository", str(tmp_path / "a")]) == 0
    assert main([*argv, "--repository", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "sunspots_yearly" / "1" / "manifest.json").read_text())
    b = json.loads((tmp_path / "b" / "sunspots_yearly" / "1" / "manifest.json").read_text())
    assert a["training"]["val_loss"] == b["training"]["val_loss"]
    assert (tmp_path / "a" / "sunspots_yearly" / "1" / "model.onnx").read_bytes() == (
        tmp_path / "b" / "sunspots_yearly" / "1" / "model.onnx"
    ).read_bytes()

"""Every way `seqserve train` can fail ends with one line on stderr and exit code 2, and the
repository holds no partial entry: full disk, a huge table, unreadable and non-UTF-8 files,
an unexpected error."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from seqserve.cli import main
from tests.support.servers import ROOT

from .conftest import CO2, SUNSPOTS, snapshot

# The formula given (choosing it is tested elsewhere): these runs fail on purpose, at reading or writing.
TINY = ["--hidden", "8", "--epochs", "2", "--quiet", "--window", "11", "--baselines", "naive"]
TINY += ["--transform", "seasonal_diff"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "spots" / "1").mkdir(parents=True)
    (root / "spots" / "1" / "model.onnx").write_bytes(b"x")
    return root


def _fails_cleanly(argv: list[str], repo: Path, capsys: pytest.CaptureFixture[str], message: str) -> str:
    before = snapshot(repo)
    code = main(["train", *argv, "--repository", str(repo)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err  # one line
    assert snapshot(repo) == before
    return err


def test_full_disk_while_publishing(repo, monkeypatch, capsys):
    import training.repository as repository

    def full(directory: Path, manifest: dict, version: int) -> None:
        (directory / ".manifest.json.tmp").write_text('{"half": ')  # what a full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / ".manifest.json.tmp"))

    monkeypatch.setattr(repository, "_write_manifest", full)
    argv = ["--data", str(SUNSPOTS), "--target", "sunactivity", "--name", "spots", *TINY]
    _fails_cleanly(argv, repo, capsys, "No space left on device")


def _limit_file_size() -> None:
    """The child may write files of at most 4 KiB: a small full disk, for real writes."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.slow  # a real `seqserve train` process (torch import and a short training)
def test_cli_process_with_writes_failing(tmp_path, repo):
    before = snapshot(repo)
    argv = ["--data", str(SUNSPOTS), "--target", "sunactivity", "--name", "spots", *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    proc = subprocess.run(
        [sys.executable, "-m", "seqserve.cli", "train", *argv, "--repository", str(repo)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=_limit_file_size,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "Traceback" not in err, err[-3000:]
    # Warnings (training progress, matplotlib's font cache) may come first; the error is one line.
    assert err.splitlines()[-1].startswith("seqserve train: error: File too large"), err[-2000:]
    assert snapshot(repo) == before


def test_huge_table_is_refused_not_loaded(tmp_path, repo, capsys):
    big = tmp_path / "big.csv"
    with big.open("wb") as f:  # 200 MB: 50 million readings
        f.write(b"y\n")
        block = b"1.5\n" * (1 << 20)
        for _ in range(50):
            f.write(block)
    assert big.stat().st_size > 200_000_000
    _fails_cleanly(["--data", str(big), "--target", "y", *TINY], repo, capsys, "has more than 2000000 rows")
    _fails_cleanly(["--data", str(CO2), "--target", "co2_ppm", "--max-rows", "100", *TINY], repo, capsys, "100 rows")
    _fails_cleanly(["--data", str(CO2), "--target", "co2_ppm", "--max-rows", "-1"], repo, capsys, "--max-rows must")


def test_wrong_encoding_and_unreadable_files(tmp_path, repo, monkeypatch, capsys):
    frame = pd.read_csv(SUNSPOTS).rename(columns={"sunactivity": "activité"})
    utf16 = tmp_path / "utf16.csv"
    frame.to_csv(utf16, index=False, encoding="utf-16")
    latin = tmp_path / "latin1.csv"
    frame.to_csv(latin, index=False, encoding="latin-1")
    for path in (utf16, latin):
        _fails_cleanly(["--data", str(path), "--target", "activité", *TINY], repo, capsys, "not UTF-8 text")

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(SUNSPOTS))

    monkeypatch.setattr(pd, "read_csv", unreadable)
    _fails_cleanly(["--data", str(SUNSPOTS), "--target", "sunactivity", *TINY], repo, capsys, "Permission denied")


def test_unexpected_error_is_one_line_too(repo, monkeypatch, capsys):
    import training.pipeline as pipeline

    def broken(settings):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(pipeline, "train_and_publish", broken)
    monkeypatch.delenv("SEQSERVE_TRACEBACK", raising=False)
    argv = ["--data", str(SUNSPOTS), "--target", "sunactivity", *TINY]
    _fails_cleanly(argv, repo, capsys, "unexpected RuntimeError: something unforeseen")


@pytest.mark.parametrize("bad", ["inf", "-inf", "1e300"])
def test_values_float32_cannot_hold_are_named_by_column_and_row(tmp_path, repo, capsys, bad):
    """Not blamed on --lr (what training diverging on them used to say): the column, the rows."""
    frame = pd.read_csv(SUNSPOTS)
    lines = frame.to_csv(index=False).splitlines()
    header = lines[0].split(",")
    column = header.index("sunactivity")
    for row in (3, 40):  # data rows 3 and 40 (1-based, as the message counts)
        cells = lines[row].split(",")
        cells[column] = bad
        lines[row] = ",".join(cells)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    err = _fails_cleanly(["--data", str(path), "--target", "sunactivity", *TINY], repo, capsys, "float32 cannot hold")
    assert "'sunactivity'" in err and "2 value(s)" in err and "row(s) 3, 40" in err and "--lr" not in err

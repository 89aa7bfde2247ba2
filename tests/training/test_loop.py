"""Progress bars appear on a terminal only: a log file or a pipe gets no redraw lines."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from seqserve.cli import main
from training.loop import bars_wanted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bars_wanted(True)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert bars_wanted(True)
    assert not bars_wanted(False)  # --quiet


@pytest.mark.slow
def test_a_training_into_a_pipe_draws_no_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--preset", "vowels", "--hidden", "4", "--epochs", "2", "--allow-worse"]
    assert main([*argv, "--repository", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "epoch/s" not in err and "\r" not in err and "%|" not in err, err

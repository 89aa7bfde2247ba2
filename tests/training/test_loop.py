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


def _vowels_subset() -> tuple[object, object]:
    """Two classes of the vowels, a few sequences each: enough to see what noise changes."""
    import pandas as pd

    from training.data import prepare_classify
    from training.presets import preset

    frame = pd.read_csv(preset("vowels")["data"])
    frame = frame[frame["speaker"].isin([1, 2]) & (frame["series_id"] % 4 == 0)]
    data = prepare_classify(
        frame, "speaker", "series_id", preset("vowels")["features"], split_column="split", report=lambda m: None
    )
    return data, preset("vowels")


def _train_once(noise: float, lr: float) -> tuple[list[float], list[float]]:
    import torch

    from models.recurrent import RecurrentModel
    from training import loop
    from training.configs import model_config
    from training.settings import RunSettings

    data, _ = _vowels_subset()
    settings = RunSettings(task="classify", label="speaker", sequence_id="series_id", cell="gru", hidden=8)
    loop.seed_everything(0)
    model = RecurrentModel(model_config(settings, data, "gru"))  # type: ignore[arg-type]
    train = loop.TrainSettings(epochs=2, batch_size=4, lr=lr, patience=10, noise=noise, progress=False)
    try:
        history = loop.train_classify(model, data, train)  # type: ignore[arg-type]
    finally:
        torch.set_flush_denormal(False)  # seed_everything turned it on; leave the next test IEEE floats
    return history.train_loss, history.val_loss


def test_input_noise_perturbs_training_inputs_only() -> None:
    """With the weights frozen (lr 0) noise changes the training loss but not the validation
    loss: validation (hence epoch selection) and test see the inputs as they are."""
    clean, noisy = _train_once(0.0, 0.0), _train_once(0.5, 0.0)
    assert noisy[0] != clean[0]
    assert noisy[1] == clean[1]


def test_input_noise_is_seeded() -> None:
    assert _train_once(0.5, 3e-3) == _train_once(0.5, 3e-3)

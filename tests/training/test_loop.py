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


def _train_once(noise: float, lr: float, average: float = 0.0) -> tuple[list[float], list[float], object]:
    import torch

    from models.recurrent import RecurrentModel
    from training import loop
    from training.configs import model_config
    from training.settings import RunSettings

    data, _ = _vowels_subset()
    settings = RunSettings(task="classify", label="speaker", sequence_id="series_id", cell="gru", hidden=8)
    loop.seed_everything(0)
    model = RecurrentModel(model_config(settings, data, "gru"))  # type: ignore[arg-type]
    train = loop.TrainSettings(epochs=2, batch_size=4, lr=lr, patience=10, noise=noise, average=average, progress=False)
    try:
        history = loop.train_classify(model, data, train)  # type: ignore[arg-type]
    finally:
        torch.set_flush_denormal(False)  # seed_everything turned it on; leave the next test IEEE floats
    return history.train_loss, history.val_loss, model


def test_input_noise_perturbs_training_inputs_only() -> None:
    """With the weights frozen (lr 0) noise changes the training loss but not the validation
    loss: validation (hence epoch selection) and test see the inputs as they are."""
    clean, noisy = _train_once(0.0, 0.0), _train_once(0.5, 0.0)
    assert noisy[0] != clean[0]
    assert noisy[1] == clean[1]


def test_input_noise_is_seeded() -> None:
    assert _train_once(0.5, 3e-3)[:2] == _train_once(0.5, 3e-3)[:2]


def test_weight_average_is_what_is_validated_and_kept() -> None:
    """The same optimiser steps as without the average (same training losses in the first
    epoch, whose weights start equal), but the kept model is the average: it differs from the
    raw run's and its validation loss is the best one recorded."""
    import torch

    from training import loop

    raw_train, _, raw_model = _train_once(0.0, 3e-3)
    train, val, model = _train_once(0.0, 3e-3, average=0.9)
    assert train[0] == raw_train[0]
    raw_weights, kept = raw_model.state_dict(), model.state_dict()  # type: ignore[attr-defined]
    assert any(not torch.equal(raw_weights[k], kept[k]) for k in kept)
    data, _ = _vowels_subset()
    z, lengths, _, labels = loop._tensors(data.val, model, torch.device("cpu"))  # type: ignore[arg-type,attr-defined]
    with torch.no_grad():
        out, _ = model.forward_normalized(z)  # type: ignore[attr-defined]
    kept_loss = float(torch.nn.functional.cross_entropy(loop._last_step(out, lengths), labels))
    assert abs(kept_loss - min(val)) < 1e-6

"""The seed example: a small LSTM learns to add to, reset and read out a memory.

Inputs per step are (x1, x2, x3): x2 = 1 adds x1 to the memory, x2 = -1 resets it to 0, and
x3 = 1 asks for the memory as the output. Solving it needs the input gate (add), the forget
gate (reset) and the output gate (read) to do their jobs, so learning it shows the cell and
its training path work end to end. The learned model is then exported and served through
ONNX Runtime step by step, which must still solve it.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.config import ModelConfig
from models.export import export_onnx, input_names, output_names
from models.recurrent import RecurrentModel


def memory_task(n: int, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x1 = rng.uniform(-1, 1, (n, steps))
    x2 = rng.choice([0.0, 1.0, -1.0], size=(n, steps), p=[0.6, 0.3, 0.1])
    x3 = (rng.random((n, steps)) < 0.3).astype(np.float64)
    memory = np.zeros(n)
    target = np.zeros((n, steps))
    for t in range(steps):
        memory = np.where(x2[:, t] == 1, memory + x1[:, t], memory)
        memory = np.where(x2[:, t] == -1, 0.0, memory)
        target[:, t] = memory
    x = np.stack([x1, x2, x3], axis=-1).astype(np.float32)
    return x, target[..., None].astype(np.float32), x3.astype(bool)


@pytest.mark.slow
def test_lstm_learns_the_memory_task(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = ModelConfig(cell="lstm", input_size=3, hidden_size=24, output_size=1)
    model = RecurrentModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(350):
        x, y, ask = memory_task(64, 20, rng)
        pred, _ = model(torch.from_numpy(x))
        mask = torch.from_numpy(ask)
        loss = ((pred[..., 0] - torch.from_numpy(y[..., 0])) ** 2)[mask].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    model.eval()
    x, y, ask = memory_task(500, 20, np.random.default_rng(123))  # held-out sequences
    with torch.no_grad():
        pred, _ = model(torch.from_numpy(x))
    mae = float(np.abs(pred.numpy()[..., 0] - y[..., 0])[ask].mean())
    trivial = float(np.abs(y[..., 0])[ask].mean())  # always answering 0
    assert mae < 0.08, f"held-out MAE {mae:.3f}"
    assert mae < 0.15 * trivial

    # The learned gates survive export: step-by-step ONNX Runtime gives the same answers.
    path = tmp_path / "memory.onnx"
    export_onnx(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state = [np.zeros(cfg.state_shape(500), np.float32) for _ in cfg.state_names]
    outs = []
    for t in range(x.shape[1]):
        out, *state = sess.run(output_names(cfg), dict(zip(input_names(cfg), [x[:, t : t + 1], *state], strict=True)))
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), pred.numpy(), atol=1e-5)

"""Running a sequence in chunks, carrying h/c between calls, equals one call on the whole."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from models.export import input_names, output_names


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_chunks_equal_whole_sequence(exported, cell, layers, seed):
    model, path = exported[(cell, layers)]
    cfg = model.config
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    batch, steps = 3, 300
    x = (rng.standard_normal((batch, steps, cfg.input_size)) * 3 + 5).astype(np.float32)
    zero = [np.zeros(cfg.state_shape(batch), np.float32) for _ in cfg.state_names]
    whole = sess.run(output_names(cfg), dict(zip(input_names(cfg), [x, *zero], strict=True)))

    state, outputs, t = zero, [], 0
    while t < steps:
        size = int(rng.integers(1, 40))
        chunk = x[:, t : t + size]
        y, *state = sess.run(output_names(cfg), dict(zip(input_names(cfg), [chunk, *state], strict=True)))
        outputs.append(y)
        t += chunk.shape[1]
    streamed = np.concatenate(outputs, axis=1)
    scale = max(1.0, float(np.abs(whole[0]).max()))
    np.testing.assert_allclose(streamed, whole[0], atol=1e-5 * scale, rtol=0)
    for got, want in zip(state, whole[1:], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

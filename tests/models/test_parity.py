"""torch, ONNX Runtime and the NumPy reference compute the same thing."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.export import ExportError, check_parity, input_names, output_names, tolerance
from models.reference import ReferenceModel
from tests.models.conftest import make_model

CASES = [(1, 1), (1, 230), (5, 1), (4, 210)]


def _inputs(model, batch: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    norm = model.config.normalization
    x = rng.standard_normal((batch, steps, 3)) * np.asarray(norm.input_std) + np.asarray(norm.input_mean)
    state = [0.3 * rng.standard_normal(model.config.state_shape(batch)) for _ in model.config.state_names]
    return x.astype(np.float32), [s.astype(np.float32) for s in state]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize(("batch", "steps"), CASES)
def test_torch_onnx_reference_agree(exported, cell, layers, batch, steps):
    model, path = exported[(cell, layers)]
    x, state = _inputs(model, batch, steps, seed=batch * 1000 + steps)
    with torch.no_grad():
        y_t, s_t = model(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(output_names(model.config), dict(zip(input_names(model.config), [x, *state], strict=True)))
    y_r, s_r = ReferenceModel.from_onnx(path).run(x, tuple(state))
    y_r2, _ = ReferenceModel.from_torch(model).run(x, tuple(state))

    assert got[0].shape == (batch, steps, 2)
    tol = tolerance(y_r)
    assert np.max(np.abs(y_t.numpy() - y_r)) < tol
    assert np.max(np.abs(got[0] - y_r)) < tol
    assert np.max(np.abs(y_r2 - y_r)) < tol  # weights read from the ONNX file match torch's
    for want, have_t, have_o in zip(s_r, s_t, got[1:], strict=True):
        assert np.max(np.abs(want - have_t.numpy())) < 1e-5
        assert np.max(np.abs(want - have_o)) < 1e-5


def test_reference_gate_equations_by_hand():
    """A 1-unit LSTM and GRU checked against the equations worked by hand."""
    from models.reference import LayerWeights, gru_cell, lstm_cell, sigmoid

    w = LayerWeights(
        w_ih=np.array([[0.5], [1.0], [-1.0], [2.0]]),
        w_hh=np.zeros((4, 1)),
        b_ih=np.zeros(4),
        b_hh=np.zeros(4),
    )
    h, c = lstm_cell(np.array([[1.0]]), np.zeros((1, 1)), np.array([[0.5]]), w)
    i, f, g, o = sigmoid(0.5), sigmoid(1.0), np.tanh(-1.0), sigmoid(2.0)
    assert c[0, 0] == pytest.approx(f * 0.5 + i * g)
    assert h[0, 0] == pytest.approx(o * np.tanh(f * 0.5 + i * g))

    wg = LayerWeights(
        w_ih=np.array([[1.0], [-1.0], [0.5]]),
        w_hh=np.array([[0.0], [0.0], [2.0]]),
        b_ih=np.zeros(3),
        b_hh=np.array([0.0, 0.0, 1.0]),
    )
    h_prev = np.array([[0.3]])
    h = gru_cell(np.array([[1.0]]), h_prev, wg)
    r, z = sigmoid(1.0), sigmoid(-1.0)
    n = np.tanh(0.5 + r * (2.0 * 0.3 + 1.0))
    assert h[0, 0] == pytest.approx((1 - z) * n + z * 0.3)


def test_parity_check_catches_a_wrong_graph(exported):
    """The check must fail loudly when the file does not compute what torch computes."""
    model, path = exported[("gru", 1)]
    other = make_model("gru", 1, seed=99)
    with pytest.raises(ExportError, match="differs"):
        check_parity(other, path)
    assert check_parity(model, path) < 1e-4


def test_metadata_describes_the_file(exported):
    from models.config import METADATA_KEY, ModelConfig

    model, path = exported[("lstm", 2)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert ModelConfig.from_json(meta[METADATA_KEY]) == model.config
    assert [i.name for i in sess.get_inputs()] == ["input", "h0", "c0"]
    assert [o.name for o in sess.get_outputs()] == ["output", "hn", "cn"]
    assert sess.get_inputs()[0].shape[:2] == ["batch", "time"]

"""Quantiles and anomaly flags of the forecaster graph: torch, ONNX Runtime and the NumPy
reference agree; monotone in level; a stream in random chunks equals the whole sequence for the
quantiles, the anomaly rows and the carried `pending` state; flags and scores mean what the
docstrings say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.config import ANOMALY_LEVELS, DEFAULT_QUANTILES, ConfigError, ModelConfig
from models.export import export_onnx, graph_output_names, input_names
from models.forecast_spec import LAYOUT
from models.forecaster import Forecaster, history_parts, quantile_bias, quantile_tables
from models.reference import load_reference, tolerance
from tests.models.test_forecaster import PERIOD, make_forecaster, series

CASES = [  # cell, transform, horizon, layers, levels, local scale (or "log": forecast in logs)
    ("lstm", "seasonal_diff", 2, 1, DEFAULT_QUANTILES, False),
    ("gru", "smooth", 2, 1, DEFAULT_QUANTILES, "log"),
    ("gru", "diff", 3, 2, DEFAULT_QUANTILES, True),
    ("gru", "revin", 1, 1, (0.05, 0.25, 0.75, 0.95), False),  # no anomaly levels, no 0.5
    ("lstm", "none", 2, 1, (0.1, 0.5), False),
    # the first state layout (a `pending` tensor of its own), as models exported before it was recorded
    ("lstm", "seasonal_diff", 2, 1, DEFAULT_QUANTILES, False, 1),
]


def build(case: tuple) -> Forecaster:
    cell, transform, horizon, layers, levels, flag, *layout = case
    local = flag is True
    return make_forecaster(
        cell,
        transform,
        horizon,
        layers,
        quantiles=levels,
        local_scale=local,
        history=20 if local else 0,
        layout=layout[0] if layout else LAYOUT,
        log=flag == "log",
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, tuple[Forecaster, Path]]:
    root = tmp_path_factory.mktemp("quantiles")
    out = {}
    for i, case in enumerate(CASES):
        model = build(case)
        # a calibration shift that is not monotone: the running maximum must fix it
        model.set_quantile_shift(np.random.default_rng(i).standard_normal(model.quantile_shift.shape))
        path = root / f"{i}.onnx"
        export_onnx(model, path)
        out[case] = (model, path)
    return out


def run_onnx(session: ort.InferenceSession, config: ModelConfig, x: np.ndarray, state: list) -> dict:
    names = graph_output_names(config)
    got = session.run(names, dict(zip(input_names(config), [x.astype(np.float32), *state], strict=True)))
    states = got[1 : 1 + len(config.state_names)]
    extras = dict(zip(config.extra_outputs, got[1 + len(config.state_names) :], strict=True))
    return {"output": got[0], "state": states, **extras}


def ids(case: tuple) -> str:
    return (
        f"{case[0]}-{case[1]}-h{case[2]}-q{len(case[4])}"
        + ("-log" if case[5] == "log" else "")
        + (f"-layout{case[6]}" if len(case) > 6 else "")
    )


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_graph_outputs_and_states_follow_the_levels(exported, case) -> None:
    model, path = exported[case]
    config = model.config
    anomaly = all(q in case[4] for q in ANOMALY_LEVELS)
    assert config.anomaly == anomaly
    assert config.extra_outputs == (("quantiles", "anomaly") if anomaly else ("quantiles",))
    assert ("pending" in history_parts(config, config.initial_state(1))) == anomaly
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == graph_output_names(config)
    again = ModelConfig.from_json(config.to_json())
    assert again.quantiles == case[4] and again.quantile_keys == tuple(repr(q) for q in case[4])


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_torch_onnx_reference_agree_and_are_monotone(exported, case) -> None:
    model, path = exported[case]
    config = model.config
    x = np.concatenate([series(120, seed=s)[None, :, : config.input_size] for s in (1, 2)])
    x[1, 60, 0] *= 10  # an outlier: flagged by every path alike
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = load_reference(path)
    for state in (list(config.initial_state(2)), model.random_state(2, np.random.default_rng(3))):
        with torch.no_grad():
            y, new_state, extras = model.graph_outputs(
                torch.from_numpy(x.astype(np.float32)), tuple(torch.from_numpy(s) for s in state)
            )
        want = {"output": y.numpy(), "state": [s.numpy() for s in new_state]}
        want |= dict(zip(config.extra_outputs, (e.numpy() for e in extras), strict=True))
        for got in (run_onnx(session, config, x, state), reference.run_all(x, tuple(state))):
            for name in ("output", *config.extra_outputs):
                assert got[name].shape == want[name].shape, name
                assert np.abs(got[name] - want[name]).max() <= tolerance(want[name]), name
            for a, b in zip(got["state"], want["state"], strict=True):
                assert np.abs(a - b).max() <= tolerance(b)
        q = want["quantiles"]
        assert q.shape == (2, 120, config.horizon, len(config.quantiles))
        assert (np.diff(q, axis=-1) >= 0).all()
        assert np.abs(q).max() > 1000  # raw units
        if config.anomaly:
            anomaly = want["anomaly"]
            count0 = history_parts(config, state)["count"][0, :, 0]
            assert anomaly[:, 0, 0].tolist() == (count0 >= 1).astype(float).tolist()  # fresh: unseen
            assert (anomaly[:, 1:, 0] == 1.0).all()
            assert anomaly[1, 60, 2] == 1.0 and anomaly[1, 60, 3] > 1.0  # the outlier


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_chunks_equal_whole_sequence(exported, case, seed: int) -> None:
    model, path = exported[case]
    config = model.config
    x = series(150, seed=seed + 5)[None, :, : config.input_size]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    start = list(config.initial_state(1, start_time=PERIOD * 7))
    whole = run_onnx(session, config, x, start)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, 150), size=12, replace=False))
    reference = load_reference(path)
    state, ref_state = start, tuple(start)
    pieces: dict[str, list] = {name: [] for name in config.extra_outputs}
    ref_pieces: dict[str, list] = {name: [] for name in config.extra_outputs}
    for a, b in zip([0, *cuts], [*cuts, 150], strict=True):
        got = run_onnx(session, config, x[:, a:b], state)
        state = got["state"]
        ref = reference.run_all(x[:, a:b], ref_state)
        ref_state = ref["state"]
        for name in config.extra_outputs:
            pieces[name].append(got[name])
            ref_pieces[name].append(ref[name])
    streamed = np.concatenate(pieces["quantiles"], axis=1)
    assert np.abs(streamed - whole["quantiles"]).max() <= 1e-6 * np.abs(whole["quantiles"]).max()
    if config.anomaly:
        # the flags exactly; the score (a difference of raw readings over a half-width, which
        # magnifies float32 rounding of the readings) to the reference's relative tolerance
        streamed = np.concatenate(pieces["anomaly"], axis=1)
        np.testing.assert_array_equal(streamed[..., :3], whole["anomaly"][..., :3])
        assert np.abs(streamed - whole["anomaly"]).max() <= tolerance(whole["anomaly"])
    for name in config.extra_outputs:
        assert np.abs(np.concatenate(ref_pieces[name], axis=1) - whole[name]).max() <= tolerance(whole[name])
    for a, b in zip(state, whole["state"], strict=True):
        assert np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(b).max())


def test_anomaly_flags_compare_each_reading_with_the_previous_steps_interval() -> None:
    """The row of reading t is the reading against the quantiles output at t - 1 for lead 1."""
    model = build(CASES[0])
    x = series(80, seed=11)[None, :, :2].astype(np.float32)
    x[0, 50, 0] += 4000.0
    with torch.no_grad():
        _, _, (q, anomaly) = model.graph_outputs(torch.from_numpy(x), model.init_state(1))
    q, anomaly = q.numpy()[0, :, 0], anomaly.numpy()[0]
    levels = model.config.quantiles
    lo95, lo80, hi80, hi95 = (q[:, levels.index(level)] for level in ANOMALY_LEVELS)
    y = x[0, :, 0]
    assert anomaly[0].tolist() == [0.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(anomaly[1:, 1], ((y[1:] < lo80[:-1]) | (y[1:] > hi80[:-1])).astype(np.float32))
    np.testing.assert_array_equal(anomaly[1:, 2], ((y[1:] < lo95[:-1]) | (y[1:] > hi95[:-1])).astype(np.float32))
    np.testing.assert_allclose(
        anomaly[1:, 3], (y[1:] - (lo95[:-1] + hi95[:-1]) / 2) / ((hi95[:-1] - lo95[:-1]) / 2), rtol=1e-4
    )
    assert anomaly[50, 2] == 1.0 and anomaly[50, 3] > 1.0
    assert ((np.abs(anomaly[1:, 3]) > 1.0) == (anomaly[1:, 2] == 1.0)).all()


def test_untrained_quantile_head_gives_a_gaussian_band_in_residual_units() -> None:
    model = make_forecaster("lstm", "seasonal_diff", 1, quantiles=DEFAULT_QUANTILES, zero_head=True)
    with torch.no_grad():
        model.quantile_head.weight.zero_()
        model.quantile_head.bias.copy_(torch.from_numpy(quantile_bias(DEFAULT_QUANTILES)))
        x = torch.from_numpy(series(40)[None, :, :2].astype(np.float32))
        y, _, (q, _) = model.graph_outputs(x, model.init_state(1))
    offsets = (q[0, :, 0] - y[0, :, :1]).numpy() / model.spec.scale[0]
    normal = [-1.95996, -1.28155, 0.0, 1.28155, 1.95996]
    np.testing.assert_allclose(offsets, np.broadcast_to(normal, offsets.shape), atol=1e-3)


def test_accumulation_tables_offset_outward_from_the_point() -> None:
    assert quantile_tables((0.1, 0.25, 0.5, 0.9)).tolist() == [
        [-1.0, 0.0, 0.0, 0.0],
        [-1.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]


def test_installed_shifts_are_monotone_in_level() -> None:
    model = build(CASES[0])
    model.set_quantile_shift(np.array([[0.5, -1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]]))
    # outward from the median (0): upper ones up to a running maximum, lower ones down to a
    # running minimum, so every change widens an interval
    assert model.spec.quantile_shift[0] == (-1.0, -1.0, 0.0, 2.0, 2.0)
    np.testing.assert_array_equal(model.quantile_shift.numpy()[0], [-1.0, -1.0, 0.0, 2.0, 2.0])
    assert tuple(model.config.extra["forecaster"]["quantile_shift"][0]) == (-1.0, -1.0, 0.0, 2.0, 2.0)


@pytest.mark.parametrize("levels", [(0.5, 0.1), (0.0, 0.5), (0.1, 0.1), (0.2, 1.0)])
def test_bad_levels_are_refused(levels: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="quantile levels"):
        ModelConfig(cell="lstm", input_size=1, hidden_size=4, output_size=1, quantiles=levels)
    with pytest.raises(ConfigError, match="regression"):
        ModelConfig(cell="lstm", input_size=1, hidden_size=4, output_size=2, head="classification", quantiles=(0.5,))

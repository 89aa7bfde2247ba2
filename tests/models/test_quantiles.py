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
    # the packed layout before the robust state update (no run slot; readings enter the state as they are)
    ("gru", "diff", 2, 1, DEFAULT_QUANTILES, False, 2),
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


# ------------------------------------------------------------------ robust state update


def seasonal(n: int, seed: int = 0) -> np.ndarray:
    """[n, 1]: one season of 12 with Gaussian noise, in the thousands: the seasonal_diff formula's
    errors are then Gaussian, so its untrained band is about right."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (5000 + 400 * np.sin(2 * np.pi * t / 12) + 30 * rng.standard_normal(n))[:, None]


def _sane(layout: int = LAYOUT, transform: str = "seasonal_diff") -> Forecaster:
    """A forecaster that answers its formula (zero point head) with the untrained quantile
    head's Gaussian band in residual units: on `seasonal` readings, intervals that cover the
    noise, so ordinary readings are rarely flagged, as a trained model's are."""
    from models.config import ModelConfig
    from models.forecast_spec import make_spec
    from models.forecaster import fit_spec, forecaster_config

    spec = make_spec(
        target_index=0, num_features=1, horizon=1, seasons=(12,), transform=transform, phase=False, layout=layout
    )
    base = ModelConfig(cell="gru", input_size=1, hidden_size=4, output_size=1, quantiles=DEFAULT_QUANTILES)
    return Forecaster(fit_spec(forecaster_config(base, spec, None), seasonal(400), 400)).eval()


def _flags(model: Forecaster, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        _, _, (_, anomaly) = model.graph_outputs(torch.from_numpy(x.astype(np.float32)), model.init_state(1))
    return anomaly.numpy()[0]


@pytest.mark.parametrize("transform", ["seasonal_diff", "diff"])
def test_one_spike_gives_one_alert(transform: str) -> None:
    """A reading ten times too large is flagged; the ordinary readings after it are not (at
    most one of the next 11 at 95 %), where a model whose state takes the spike as it is (the
    layout before the robust update) flags several of them."""
    x = seasonal(300, seed=4)[None]
    robust, old = _sane(transform=transform), _sane(2, transform)
    assert robust.robust and not old.robust
    # the spike where none of the 24 ordinary readings after it (two seasons) is flagged without it
    quiet = _flags(robust, x)[:, 2] == 1.0
    p = next(p for p in range(100, 270) if not quiet[p + 1 : p + 25].any())
    spiked = x.copy()
    spiked[0, p, 0] *= 10
    flags = _flags(robust, spiked)
    assert flags[p, 2] == 1.0 and flags[p, 3] > 100.0  # flagged, and scored from the raw reading
    assert (flags[p + 1 : p + 12, 2] == 1.0).sum() <= 1
    assert (flags[p + 1 : p + 25, 2] == 1.0).sum() <= 1
    if transform == "seasonal_diff":  # the defect this fixes (a last-value formula forgets at once)
        assert (_flags(old, spiked)[p + 1 : p + 25, 2] == 1.0).sum() >= 2
    with torch.no_grad():  # the state took the spike as a plausible reading, the next ones as they are
        taken = robust.cleaned(torch.from_numpy(spiked.astype(np.float32)))[0, :, 0].numpy()
    assert taken[p] < 2 * x[0, p, 0]
    np.testing.assert_array_equal(taken[p + 1 :], spiked[0, p + 1 :, 0].astype(np.float32))


def test_a_level_shift_is_accepted_after_robust_run_readings() -> None:
    """Every reading from 150 on 30 % higher: the first robust_run - 1 are replaced, the next
    are taken as they are, and once the state holds the new level the flags stop."""
    model = _sane(transform="diff")
    k = model.spec.robust_run
    x = seasonal(240, seed=4)[None]
    x[0, 150:, 0] += 3000.0  # about eight 95 % half-widths of the last-value formula
    flags = _flags(model, x)
    assert (flags[150 : 150 + k, 2] == 1.0).all()  # the shift's first readings are all flagged
    assert flags[150 + k + 1 : 200, 2].mean() <= 0.1  # and then it is the level
    with torch.no_grad():
        tensor = torch.from_numpy(x.astype(np.float32))
        taken = model.cleaned(tensor)[0, :, 0].numpy()
        _, state, _ = model.graph_outputs(tensor, model.init_state(1))
    replaced = np.nonzero(taken != x[0, :, 0].astype(np.float32))[0]
    assert replaced.tolist() == list(range(150, 150 + k - 1))
    assert history_parts(model.config, state)["run"].item() == 0.0  # the run ended


def test_robust_update_streams_in_chunks_like_the_whole_sequence(tmp_path: Path) -> None:
    """With readings replaced (spikes, a shift, a run of far readings across chunk cuts): ONNX
    Runtime whole == ONNX Runtime in random chunks (and one reading at a time) == torch == the
    NumPy reference, for outputs, quantiles, anomaly rows and the carried state."""
    model = _sane()
    path = tmp_path / "robust.onnx"
    export_onnx(model, path)
    x = seasonal(200, seed=6)[None]
    x[0, [60, 61, 130], 0] *= 10
    x[0, 95, 0] *= 0.1
    x[0, 160:, 0] *= 1.4
    with torch.no_grad():
        tensor = torch.from_numpy(x.astype(np.float32))
        taken = model.cleaned(tensor)[0, :, 0].numpy()
        y, new_state, extras = model.graph_outputs(tensor, model.init_state(1))
    assert (taken != x[0, :, 0].astype(np.float32)).sum() >= 5  # the robust path is exercised
    torch_out = {"output": y.numpy(), "quantiles": extras[0].numpy(), "anomaly": extras[1].numpy()}
    config = model.config
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    start = list(config.initial_state(1))
    whole = run_onnx(session, config, x, start)
    reference = load_reference(path).run_all(x)
    for name in ("output", "quantiles", "anomaly"):
        assert np.abs(whole[name] - torch_out[name]).max() <= tolerance(torch_out[name]), name
        assert np.abs(reference[name] - whole[name]).max() <= tolerance(whole[name]), name
    np.testing.assert_array_equal(reference["anomaly"][..., :3], whole["anomaly"][..., :3])
    for a, b, c in zip(whole["state"], new_state, reference["state"], strict=True):
        assert np.abs(a - b.numpy()).max() <= tolerance(b.numpy())
        assert np.abs(a - c).max() <= tolerance(c)
    rng = np.random.default_rng(0)
    cuts = sorted({60, 61, 161, *rng.choice(np.arange(1, 200), size=10, replace=False).tolist()})
    for bounds in (list(zip([0, *cuts], [*cuts, 200], strict=True)), [(t, t + 1) for t in range(200)]):
        state, pieces = start, {name: [] for name in ("output", "quantiles", "anomaly")}
        for a, b in bounds:
            got = run_onnx(session, config, x[:, a:b], state)
            state = got["state"]
            for name in pieces:
                pieces[name].append(got[name])
        for name, parts in pieces.items():
            streamed = np.concatenate(parts, axis=1)
            assert np.abs(streamed - whole[name]).max() <= tolerance(whole[name]), name
        np.testing.assert_array_equal(np.concatenate(pieces["anomaly"], axis=1)[..., :3], whole["anomaly"][..., :3])
        for a_, b_ in zip(state, whole["state"], strict=True):
            assert np.abs(a_ - b_).max() <= tolerance(b_)


def test_robust_layout_keeps_a_run_slot_and_other_models_unchanged() -> None:
    """Layout 3 adds the run of far readings to an anomaly model's packed history (after
    pending); a model without the anomaly levels has layout 2's states and computes the same
    numbers bit for bit; a layout-2 anomaly model (a manifest written before) is not robust."""
    robust = _sane()
    slots = robust.spec.history_slots(True)
    assert list(slots) == ["count", "pending", "run", "ring"] and slots["run"] == (5, 6)
    assert "run" in history_parts(robust.config, robust.config.initial_state(1))
    old = _sane(2)
    assert not old.robust and "run" not in old.spec.history_slots(True)
    assert old.config.state_shapes(1)[1][2] == robust.config.state_shapes(1)[1][2] - 1  # (h, history)
    plain = [make_forecaster("gru", "seasonal_diff", 2, layout=layout) for layout in (2, LAYOUT)]
    assert plain[0].config.state_specs == plain[1].config.state_specs
    x = torch.from_numpy(series(120, seed=2)[None].astype(np.float32))
    x[0, 80, 0] *= 10
    with torch.no_grad():
        outs = [m.graph_outputs(x, m.init_state(1)) for m in plain]
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1], strict=True))


def test_robust_models_are_fed_in_bounded_chunks_with_the_same_numbers(tmp_path: Path) -> None:
    """Every third reading ten times too large: in one call the fixed point takes a pass per far
    reading over the whole chunk (cost growing with the square of its length); models/chunks.py
    feeds a robust model at most ROBUST_CHUNK_STEPS readings a call, carrying the state, and gets
    the one call's numbers. Models without the robust update are not limited."""
    from models.chunks import run_in_time_chunks
    from models.forecast_spec import ROBUST_CHUNK_STEPS

    model, old = _sane(), _sane(2)
    assert model.config.max_chunk_steps == ROBUST_CHUNK_STEPS and old.config.max_chunk_steps == 0
    path = tmp_path / "robust.onnx"
    export_onnx(model, path)
    config = model.config
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = seasonal(160, seed=2)[None].astype(np.float32)
    x[0, 40::3, 0] *= 10
    names = graph_output_names(config)
    lengths: list[int] = []

    def call(inputs: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        lengths.append(inputs.shape[1])
        got = session.run(names, dict(zip(input_names(config), [inputs, *state], strict=True)))
        packed = np.concatenate([got[0], got[-1]], axis=-1)  # forecasts and anomaly rows
        return packed, tuple(got[1 : 1 + len(config.state_names)])

    chunked, chunked_state = run_in_time_chunks(call, x, tuple(config.initial_state(1)), 0, config.max_chunk_steps)
    assert max(lengths) == ROBUST_CHUNK_STEPS and len(lengths) == 5
    whole = run_onnx(session, config, x, list(config.initial_state(1)))
    assert (whole["anomaly"][0, 40::3, 2] == 1.0).all()  # the far readings are flagged
    np.testing.assert_array_equal(chunked[..., -4:-1], whole["anomaly"][..., :3])
    assert np.abs(chunked[..., :1] - whole["output"]).max() <= tolerance(whole["output"])
    for a, b in zip(chunked_state, whole["state"], strict=True):
        assert np.abs(a - b).max() <= tolerance(b)

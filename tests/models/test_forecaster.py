"""The history-state forecaster: torch, its ONNX export and the NumPy reference agree; a stream in
random chunks equals the whole sequence; warm-up, phase and count behave as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.config import Clock, ModelConfig
from models.export import check_parity, export_onnx, input_names, output_names
from models.forecast_spec import LAYOUT, TRANSFORMS, ForecastSpec, SpecError, make_spec
from models.forecaster import Forecaster, fit_spec, forecaster_config, history_parts, spec_of
from models.reference import ForecasterReference, load_reference, tolerance

SEASONS = (4, 12)
PERIOD = 3600.0


def series(n: int = 240, seed: int = 0) -> np.ndarray:
    """Trend + two seasons + noise, in the thousands like real loads; column 1 is a covariate."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    seasons = 400 * np.sin(2 * np.pi * t / 4) + 250 * np.cos(2 * np.pi * t / 12)
    y = 5000 + 3.0 * t + seasons + 30 * rng.standard_normal(n)
    other = np.cos(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(n)
    return np.stack([y, other], axis=1)


def make_forecaster(
    cell: str,
    transform: str = "seasonal_diff",
    horizon: int = 2,
    layers: int = 1,
    dropout: float = 0.0,
    phase: bool = True,
    features: int = 2,
    seed: int = 0,
    zero_head: bool = False,
    local_scale: bool = False,
    history: int = 0,
    quantiles: tuple[float, ...] = (),
    layout: int = LAYOUT,
    log: bool = False,
) -> Forecaster:
    spec = make_spec(
        target_index=0,
        num_features=features,
        horizon=horizon,
        seasons=SEASONS,
        transform=transform,
        phase=phase,
        local_scale=local_scale,
        history=history,
        layout=layout,
        log=log,
    )
    base = ModelConfig(
        cell=cell,  # type: ignore[arg-type]
        input_size=features,
        hidden_size=8,
        output_size=horizon,
        num_layers=layers,
        dropout=dropout,
        features=("y", "x")[:features],
        outputs=tuple(f"y@t+{k}" for k in range(1, horizon + 1)),
        horizon=horizon,
        quantiles=quantiles,
    )
    clock = Clock("phase", PERIOD, 0.0, spec.cycle) if spec.cycle else None
    config = fit_spec(forecaster_config(base, spec, clock), series()[:, :features], 160)
    torch.manual_seed(seed)
    model = Forecaster(config)
    if not zero_head:
        with torch.no_grad():  # the head starts at zero; give the analog path something to do
            model.head.weight.normal_(0.0, 0.3)
            model.head.bias.normal_(0.0, 0.3)
            if quantiles:  # and the quantile head, so its levels differ step by step
                model.quantile_head.weight.normal_(0.0, 0.3)
                model.quantile_head.bias.normal_(0.0, 0.5)
    return model.eval()


def run_onnx(session: ort.InferenceSession, config: ModelConfig, x: np.ndarray, state: list[np.ndarray]):
    feeds = dict(zip(input_names(config), [x.astype(np.float32), *state], strict=True))
    y, *new_state = session.run(output_names(config), feeds)
    return y, new_state


CASES = [  # every transform, both cells, 2 layers with dropout (export must run in eval mode)
    ("lstm", "seasonal_diff", 2, 1, 0.0),
    ("gru", "revin", 2, 1, 0.0),
    ("lstm", "none", 1, 2, 0.2),
    ("gru", "seasonal", 2, 2, 0.2),
    ("gru", "diff", 1, 1, 0.0),
    ("lstm", "smooth", 2, 1, 0.0),  # exponential smoothing level from the ring
    ("gru", "trend", 3, 1, 0.0),  # exponential smoothing with a damped trend
    ("lstm", "trend", 2, 1, 0.0, "local"),
    # per-session scale from the ring (global models over many series), with a longer history
    ("lstm", "diff", 3, 1, 0.0, "local"),
    ("gru", "seasonal_diff", 2, 1, 0.0, "local"),
    ("gru", "smooth", 1, 1, 0.0, "local"),
    # Holt-Winters over both seasons, carried in the `smoothed` state (a loop in the graph)
    ("lstm", "holt_winters", 2, 1, 0.0),
    ("gru", "holt_winters_mult", 14, 1, 0.0),  # leads past the longest season
    ("gru", "holt_winters", 2, 1, 0.0, "local"),
    # the first state layout (one tensor per history part), as models exported before it was
    # recorded carry it: still built, exported and served the same way
    ("lstm", "seasonal_diff", 2, 1, 0.0, "layout1"),
    ("gru", "revin", 2, 1, 0.0, "layout1"),
    # forecast in logs (a season whose amplitude grows with the level), exp() back to raw
    ("lstm", "seasonal_diff", 2, 1, 0.0, "log"),
    ("gru", "smooth", 1, 1, 0.0, "log"),
    ("lstm", "holt_winters", 2, 1, 0.0, "log"),
    ("lstm", "holt_winters_mult", 2, 1, 0.0, "layout1"),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, tuple[Forecaster, Path]]:
    root = tmp_path_factory.mktemp("forecaster")
    out = {}
    for case in CASES:
        cell, transform, horizon, layers, dropout, *flags = case
        local = "local" in flags
        model = make_forecaster(
            cell,
            transform,
            horizon,
            layers,
            dropout,
            local_scale=local,
            history=20 if local else 0,
            layout=1 if "layout1" in flags else LAYOUT,
            log="log" in flags,
        )
        model.train()  # export must evaluate in eval mode whatever mode it is given
        path = root / f"{'-'.join(map(str, case))}.onnx"
        export_onnx(model, path)
        assert not model.training
        out[case] = (model, path)
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_torch_onnx_reference_agree(exported, case) -> None:
    model, path = exported[case]
    config = model.config
    x = series(200, seed=1)[None, :, : config.input_size]
    x = np.concatenate([x, series(200, seed=2)[None, :, : config.input_size]])
    rng = np.random.default_rng(3)
    for state in (list(config.initial_state(2)), model.random_state(2, rng)):
        with torch.no_grad():
            y_t, s_t = model(torch.from_numpy(x.astype(np.float32)), tuple(torch.from_numpy(s) for s in state))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        y_o, s_o = run_onnx(session, config, x, state)
        y_r, s_r = load_reference(path).run(x, tuple(state))
        assert isinstance(load_reference(path), ForecasterReference)
        for got in (y_o, y_r):
            assert np.abs(got - y_t.numpy()).max() <= tolerance(y_t.numpy())
        for a, b, c in zip(s_t, s_o, s_r, strict=True):
            assert np.abs(a.numpy() - b).max() <= tolerance(a.numpy())
            assert np.abs(a.numpy() - c).max() <= tolerance(a.numpy())
        assert np.abs(y_t.numpy()).max() > 1000  # raw units


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("seed", [0, 1])
def test_random_chunks_equal_whole_sequence(exported, case, seed: int) -> None:
    model, path = exported[case]
    config = model.config
    x = series(150, seed=seed + 5)[None, :, : config.input_size]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    start = list(config.initial_state(1, start_time=PERIOD * 7))
    whole, whole_state = run_onnx(session, config, x, start)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, 150), size=12, replace=False))
    state, pieces = start, []
    ref = load_reference(path)
    ref_state, ref_pieces = tuple(start), []
    for a, b in zip([0, *cuts], [*cuts, 150], strict=True):
        y, state = run_onnx(session, config, x[:, a:b], state)
        pieces.append(y)
        y_r, ref_state = ref.run(x[:, a:b], ref_state)
        ref_pieces.append(y_r)
    streamed = np.concatenate(pieces, axis=1)
    # The same float32 graph on the same readings: equal up to float32 rounding of reductions.
    assert np.abs(streamed - whole).max() <= 1e-6 * np.abs(whole).max()
    for a, b in zip(state, whole_state, strict=True):
        assert np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(b).max())
    assert np.abs(np.concatenate(ref_pieces, axis=1) - whole).max() <= tolerance(whole)


@pytest.mark.parametrize("transform", ["holt_winters", "holt_winters_mult"])
def test_untrained_holt_winters_model_answers_the_formula(transform: str) -> None:
    """Zero head: seasonal naive until the longest season has been read, then exactly
    models/holt_winters' recursion started from those readings (float64 against float32)."""
    from models import holt_winters as hw

    model = make_forecaster("lstm", transform, horizon=5, zero_head=True)
    smoothing = model.spec.smoothing
    assert smoothing is not None and smoothing.multiplicative == (transform == "holt_winters_mult")
    assert 0.0 <= smoothing.alpha <= 1.0 and len(smoothing.gamma) == 2 and abs(smoothing.phi) < 1.0
    y = series(60, seed=4)[:, :2]
    with torch.no_grad():
        out, _ = model(torch.from_numpy(y[None].astype(np.float32)), model.init_state(1))
    v = y[:, 0]
    span = smoothing.span
    assert span == 12
    for t in range(span - 1):  # seasonal naive of the seasons available (lead 1)
        want = v[t + 1 - 12] if t >= 12 else v[t + 1 - 4] if t >= 4 else v[t]
        np.testing.assert_allclose(float(out[0, t, 0]), want, rtol=1e-6)
    state = hw.initial(v[:span], smoothing.seasons, smoothing.multiplicative, smoothing.unit)
    np.testing.assert_allclose(out[0, span - 1].numpy(), hw.forecast(state, 0.0, 5, smoothing), rtol=1e-5)
    for t in range(span, len(v)):
        state, error = hw.step(state, float(v[t]), smoothing)
        np.testing.assert_allclose(out[0, t].numpy(), hw.forecast(state, error, 5, smoothing), rtol=1e-5)


def test_holt_winters_without_seasons_is_smoothing_with_an_ar_adjustment() -> None:
    """No season: the state is the level alone, set by the first reading; the forecast of lead
    k is the level plus phi^k times the last one-step error."""
    spec = make_spec(target_index=0, num_features=1, horizon=3, seasons=(), transform="holt_winters", phase=True)
    base = ModelConfig(cell="gru", input_size=1, hidden_size=4, output_size=3, num_layers=1, horizon=3)
    rng = np.random.default_rng(0)
    level = 100 + np.cumsum(rng.standard_normal(300))
    y = (level + 0.5 * rng.standard_normal(300))[:, None]
    model = Forecaster(fit_spec(forecaster_config(base, spec, None), y, 200)).eval()
    assert [s.name for s in model.config.extra_states][-1] == "smoothed"
    assert model.config.extra_states[-1].width == 1
    fitted = model.spec.smoothing
    assert fitted is not None and 0.05 < fitted.alpha < 1.0  # noisy random walk: between mean and naive
    with torch.no_grad():
        out, state = model(torch.from_numpy(y[None].astype(np.float32)))
    smoothed, error = np.array([y[0, 0]]), 0.0
    np.testing.assert_allclose(out[0, 0].numpy(), np.full(3, y[0, 0]), rtol=1e-6)
    for t in range(1, 300):
        prev = smoothed[0]
        smoothed, error = np.array([fitted.alpha * y[t, 0] + (1 - fitted.alpha) * prev]), y[t, 0] - prev
        want = smoothed[0] + fitted.phi ** np.arange(1, 4) * error
        np.testing.assert_allclose(out[0, t].numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(state[-1][0, 0, 0].item(), smoothed[0], rtol=1e-5)
    with pytest.raises(SpecError, match="needs --season"):
        make_spec(target_index=0, num_features=1, horizon=1, seasons=(), transform="holt_winters_mult", phase=False)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_untrained_model_answers_its_baseline_during_warm_up(cell: str) -> None:
    """Zero head: forecasts are the baseline, which falls back from the longest season to the
    shorter one to the last value while the ring fills."""
    model = make_forecaster(cell, "seasonal_diff", horizon=1, zero_head=True)
    y = series(40, seed=9)[:, :2]
    with torch.no_grad():
        out, state = model(torch.from_numpy(y[None].astype(np.float32)), model.init_state(1))
    v = y[:, 0]
    want = []
    for t in range(len(v)):
        if t >= 12:
            want.append(v[t + 1 - 12] + v[t] - v[t - 12])
        elif t >= 4:
            want.append(v[t + 1 - 4] + v[t] - v[t - 4])
        else:
            want.append(v[t])
    np.testing.assert_allclose(out[0, :, 0].numpy(), want, rtol=1e-6)
    parts = history_parts(model.config, state)
    np.testing.assert_allclose(parts["ring"][0, 0].numpy(), v[-12:], rtol=1e-6)
    assert float(parts["count"]) == 13.0  # capped at K + 1
    assert float(parts["phase"]) == -1.0  # no start_time: unknown stays unknown


def test_phase_comes_from_start_time_and_advances() -> None:
    model = make_forecaster("lstm")
    config = model.config
    assert config.clock is not None and config.clock.cycle == 12
    state = config.initial_state(1, start_time=PERIOD * 30)  # 30 mod 12 = 6
    assert float(history_parts(config, state)["phase"][0, 0, 0]) == 6.0
    x = torch.from_numpy(series(17)[None].astype(np.float32))
    with torch.no_grad():
        _, new_state = model(x, tuple(torch.from_numpy(s) for s in state))
    assert float(history_parts(config, new_state)["phase"]) == (6 + 17) % 12
    # Known and unknown phase give different forecasts: the phase reaches the network.
    with torch.no_grad():
        known, _ = model(x, tuple(torch.from_numpy(s) for s in state))
        unknown, _ = model(x, model.init_state(1))
    assert not torch.allclose(known, unknown)


def test_without_a_clock_there_is_no_phase_state() -> None:
    model = make_forecaster("gru", phase=False, features=1)
    assert model.config.state_names == ("h", "history")
    assert model.config.clock is None
    assert make_forecaster("gru", phase=False, features=1, layout=1).config.state_names == ("h", "ring", "count")


def test_state_specs_describe_every_tensor() -> None:
    config = make_forecaster("lstm").config
    assert config.state_names == ("h", "c", "history", "phase")
    shapes = config.state_shapes(3)
    assert shapes[2] == (1, 3, 1 + 12) and shapes[3] == (1, 3, 1)
    assert [s.fill for s in config.extra_states] == [0.0, -1.0]  # a fresh history is all zeros
    again = ModelConfig.from_json(config.to_json())
    assert again.to_json() == config.to_json() and spec_of(again) == spec_of(config)
    old = make_forecaster("lstm", layout=1).config
    assert old.state_names == ("h", "c", "ring", "count", "phase")
    shapes = old.state_shapes(3)
    assert shapes[2] == (1, 3, 12) and shapes[3] == (1, 3, 1) and shapes[4] == (1, 3, 1)


def test_a_manifest_without_a_layout_is_the_first_layout() -> None:
    """Models exported before the layout was recorded keep their one-tensor-per-part states;
    a layout this code does not know is refused by name."""
    spec = make_forecaster("lstm", layout=1).spec
    data = spec.to_dict()
    del data["layout"]
    assert ForecastSpec.from_dict(data) == spec
    with pytest.raises(SpecError, match="layout"):
        ForecastSpec.from_dict({**data, "layout": 4})


@pytest.mark.parametrize("layout", [1, LAYOUT])
def test_history_parts_are_views_of_the_state(layout: int) -> None:
    """history_parts names the ring, count and phase of either layout; writing into them writes
    the state (the training loop restarts streams so)."""
    model = make_forecaster("gru", layout=layout)
    state = [s.copy() for s in model.config.initial_state(2)]
    parts = history_parts(model.config, state)
    assert parts["ring"].shape == (1, 2, 12) and parts["count"].shape == parts["phase"].shape == (1, 2, 1)
    parts["ring"][0, 1] = np.arange(12)
    parts["count"][0, 1] = 12.0
    again = history_parts(model.config, state)
    assert again["ring"][0, 1].tolist() == list(range(12)) and float(again["count"][0, 1, 0]) == 12.0
    assert float(again["phase"][0, 1, 0]) == -1.0 and float(again["count"][0, 0, 0]) == 0.0


def test_bad_transform_is_refused() -> None:
    assert "seasonal_diff" in TRANSFORMS
    with pytest.raises(SpecError, match="transform"):
        make_spec(target_index=0, num_features=1, horizon=1, seasons=(4,), transform="log", phase=False)
    with pytest.raises(SpecError, match="season"):
        make_spec(target_index=0, num_features=1, horizon=1, seasons=(), transform="seasonal_diff", phase=False)


def test_parity_check_catches_a_wrong_forecaster(exported) -> None:
    from models.export import ExportError

    model, path = exported[CASES[0]]
    other = make_forecaster("lstm", seed=1)
    with pytest.raises(ExportError):
        check_parity(other, path)
    check_parity(model, path)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_local_scale_makes_forecasts_follow_the_series_scale(cell: str) -> None:
    """With local_scale a series multiplied by c and shifted by d gets forecasts multiplied by c
    and shifted by d (up to the tiny scale floor): no per-series parameters needed. Without it
    the same weights do not scale (the control)."""
    x = series(120, seed=4)[None, :, :1]
    for local, should_follow in ((True, True), (False, False)):
        model = make_forecaster(cell, "diff", 2, features=1, local_scale=local, history=16 if local else 0)
        with torch.no_grad():
            base, _ = model(torch.from_numpy(x.astype(np.float32)))
            c, d = 0.5, 300.0
            moved, _ = model(torch.from_numpy((c * x + d).astype(np.float32)))
        # from the second reading on (the very first has no change yet: its scale is the floor)
        error = float(np.abs(moved.numpy() - (c * base.numpy() + d))[:, 1:].max())
        assert (error < 1e-4 * np.abs(base.numpy()).max()) == should_follow, (local, error)


def test_local_scale_needs_a_history_baseline() -> None:
    with pytest.raises(SpecError, match="per-series scale"):
        make_spec(
            target_index=0, num_features=1, horizon=1, seasons=(), transform="revin", phase=False, local_scale=True
        )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_phase_inputs_computed_in_the_graph_agree_with_the_table(
    cell: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle too long for the phase table computes the phase inputs in the graph instead;
    both ways answer what the reference answers, known and unknown phase alike."""
    import models.forecaster as forecaster_module

    with_table = make_forecaster(cell, "seasonal_diff", 2, 1, 0.0)
    monkeypatch.setattr(forecaster_module, "PHASE_TABLE_MAX", 0)
    computed = make_forecaster(cell, "seasonal_diff", 2, 1, 0.0)
    assert with_table.phase_lookup and not computed.phase_lookup
    computed.load_state_dict(with_table.state_dict())
    path = tmp_path / "computed.onnx"
    export_onnx(computed, path)
    x = series(60, seed=4)[None, :, :2].astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for start in (list(computed.config.initial_state(1, start_time=PERIOD * 5)), computed.config.initial_state(1)):
        y_o, _ = run_onnx(session, computed.config, x, list(start))
        y_r, _ = load_reference(path).run(x, tuple(start))
        with torch.no_grad():
            y_t, _ = with_table(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in start))
        for got in (y_o, y_r):
            assert np.abs(got - y_t.numpy()).max() <= tolerance(y_t.numpy())


def _local_level(n: int, seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1000 + np.cumsum(rng.normal(0, 1.0, n)) + rng.normal(0, noise, n)


def _fitted_one_series(transform: str, cell: str, horizon: int, values: np.ndarray) -> ModelConfig:
    """A tiny one-feature forecaster config without seasons or phase, its formula fitted on `values`."""
    spec = make_spec(target_index=0, num_features=1, horizon=horizon, seasons=(), transform=transform, phase=False)
    base = ModelConfig(
        cell=cell,
        input_size=1,
        hidden_size=4,
        output_size=horizon,
        features=("y",),
        outputs=tuple(f"y@t+{k}" for k in range(1, horizon + 1)),
        horizon=horizon,
    )
    return fit_spec(forecaster_config(base, spec, None), values[:, None], len(values))


def _smoother(alpha: float, horizon: int = 1, ring_rows: int = 300, y: np.ndarray | None = None) -> Forecaster:
    values = _local_level(ring_rows, 0, 3.0) if y is None else y
    config = _fitted_one_series("smooth", "gru", horizon, values)
    if alpha > 0:  # a given constant instead of the fitted one
        from dataclasses import replace

        config = forecaster_config(config, replace(spec_of(config), smooth_alpha=alpha), None)
    return Forecaster(config).eval()


def test_untrained_smoothing_model_answers_exponential_smoothing() -> None:
    """Zero head: every lead is the SES level, which after the ring fills equals the textbook
    recursion l = alpha y + (1 - alpha) l up to the weights cut off beyond the ring, and while
    it fills is the weighted mean of the readings seen (the first answer is the first reading)."""
    model = _smoother(0.3, horizon=3)
    assert model.spec.ring == 48 and model.spec.transform == "smooth"
    y = _local_level(120, 1, 3.0)
    with torch.no_grad():
        out, _ = model(torch.from_numpy(y[None, :, None].astype(np.float32)), model.init_state(1))
    out = out[0].numpy()
    assert np.all(out[:, 0] == out[:, 2])  # flat over the leads
    weights = 0.3 * 0.7 ** np.arange(49)
    for t in (0, 5, 47, 48, 100, 119):
        seen = y[max(0, t - 48) : t + 1][::-1]  # newest first
        want = (weights[: len(seen)] * seen).sum() / weights[: len(seen)].sum()
        assert out[t, 0] == pytest.approx(want, rel=1e-6)
    assert out[0, 0] == pytest.approx(y[0], rel=1e-6)
    level = y[0]
    for t in range(1, 120):
        level = 0.3 * y[t] + 0.7 * level
    assert out[-1, 0] == pytest.approx(level, abs=1e-5 * abs(level))  # 0.7^49 of the level is cut off
    naive = _smoother(1.0)  # alpha 1: the last value exactly
    with torch.no_grad():
        last, _ = naive(torch.from_numpy(y[None, :, None].astype(np.float32)), naive.init_state(1))
    np.testing.assert_allclose(last[0, :, 0].numpy(), y, rtol=1e-6)


@pytest.mark.parametrize(("noise", "low", "high"), [(0.0, 0.9, 1.0), (3.0, 0.15, 0.45), (10.0, 0.05, 0.15)])
def test_smoothing_constant_is_fitted_to_the_noise(noise: float, low: float, high: float) -> None:
    """Fitted on the training block: a pure random walk keeps the last value (alpha near 1);
    the noisier the readings around the level, the smaller alpha (optimal (-q + sqrt(q^2 + 4q)) / 2
    for a signal-to-noise ratio q: 0.28 at q = 1/9, 0.10 at q = 1/100)."""
    model = _smoother(0.0, y=_local_level(600, 2, noise))
    assert low <= model.spec.smooth_alpha <= high, model.spec.smooth_alpha


def test_old_spec_without_smoothing_constant_loads() -> None:
    """Manifests written before the smoothing, trend, log and Holt-Winters fields have none of
    them: they load with the defaults and build the same graph."""
    model = make_forecaster("gru", "seasonal_diff", zero_head=True)
    data = model.spec.to_dict()
    keys = ("smooth_alpha", "trend_beta", "trend_phi", "smooth_window", "log", "log_floor")
    for key in (*keys, "hw_alpha", "hw_gamma", "hw_phi"):
        del data[key]
    old = Forecaster(forecaster_config(model.config, type(model.spec).from_dict(data), model.config.clock))
    x = torch.from_numpy(series(30)[None].astype(np.float32))
    with torch.no_grad():
        np.testing.assert_array_equal(old(x)[0].numpy(), model(x)[0].numpy())


def _trender(horizon: int = 3) -> Forecaster:
    rng = np.random.default_rng(3)
    values = 500 + np.cumsum(rng.normal(0.5, 1.0, 300))
    return Forecaster(_fitted_one_series("trend", "lstm", horizon, values)).eval()


@pytest.mark.parametrize(("alpha", "beta", "phi"), [(0.3, 0.1, 0.9), (1.0, 0.5, 0.7), (0.1, 0.02, 0.98)])
def test_damped_trend_weights_read_constants_and_lines_exactly(alpha: float, beta: float, phi: float) -> None:
    """Whatever the readings seen (1..W): a constant is that level with no trend; a line
    a - s x age is level a and trend s; and with the whole window the level and trend stay
    near the textbook recursion run from far back (within a fraction of a typical step: the
    window cuts off the response beyond W readings and corrects the rest to read lines)."""
    from models.forecast_spec import holt_kernels

    width = 49
    level, trend = holt_kernels(alpha, beta, phi, width)
    for c in range(1, width + 1):
        ages = np.arange(c)
        assert level[c - 1, c:].sum() == 0 and trend[c - 1, c:].sum() == 0  # unseen ages weigh nothing
        assert level[c - 1, :c].sum() == pytest.approx(1.0) and trend[c - 1, :c].sum() == pytest.approx(0.0, abs=1e-9)
        if c >= 2:
            assert (level[c - 1, :c] * -ages).sum() == pytest.approx(0.0, abs=1e-9)
            assert (trend[c - 1, :c] * -ages).sum() == pytest.approx(1.0)
    # the textbook recursion from far back, on a noisy series: the window's level is close to it
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(0.2, 1.0, 400))
    l_, b_ = y[0], 0.0
    for value in y[1:]:
        new = alpha * value + (1 - alpha) * (l_ + phi * b_)
        b_ = beta * (new - l_) + (1 - beta) * phi * b_
        l_ = new
    window, step = y[::-1][:width], np.abs(np.diff(y)).mean()
    assert window @ level[-1] == pytest.approx(l_, abs=0.6 * step)
    assert window @ trend[-1] == pytest.approx(b_, abs=0.1 * step)


def test_untrained_damped_trend_model_forecasts_a_line_along_it() -> None:
    """Zero head on a straight line: from the second reading on, lead k is y_t + slope x
    (phi + ... + phi^k), the damped continuation of the line, during warm-up and after."""
    model = _trender(horizon=3)
    spec = model.spec
    assert spec.transform == "trend" and spec.smooth_window == 49
    assert spec.trend_phi in (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    t = np.arange(80, dtype=np.float64)
    y = 1000 + 2.5 * t
    with torch.no_grad():
        out, _ = model(torch.from_numpy(y[None, :, None].astype(np.float32)), model.init_state(1))
    damp = np.cumsum(spec.trend_phi ** np.arange(1, 4))
    want = y[:, None] + 2.5 * damp[None, :]
    want[0] = y[0]  # one reading: no trend yet
    np.testing.assert_allclose(out[0].numpy(), want, rtol=2e-6)


@pytest.mark.parametrize("lookup", [True, False])
def test_any_negative_phase_is_unknown_and_carried_on_as_minus_one(
    lookup: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An imported state may hold any negative phase: the graph (table lookup or computed
    phase inputs) and the reference answer it as unknown and return -1, as for -1 itself."""
    import models.forecaster as forecaster_module

    if not lookup:
        monkeypatch.setattr(forecaster_module, "PHASE_TABLE_MAX", 0)
    model = make_forecaster("lstm")
    assert model.phase_lookup == lookup
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = series(30, seed=8)[None].astype(np.float32)
    answers = []
    for value in (-1.0, -7.0, -1000.0):
        state = [s.copy() for s in model.config.initial_state(1)]
        history_parts(model.config, state)["phase"][...] = value
        y_o, s_o = run_onnx(session, model.config, x, state)
        y_r, s_r = load_reference(path).run(x, tuple(state))
        assert np.abs(y_r - y_o).max() <= tolerance(y_o)
        for after in (s_o, s_r):
            assert history_parts(model.config, after)["phase"].item() == -1.0
        answers.append(y_o)
    assert np.array_equal(answers[0], answers[1]) and np.array_equal(answers[0], answers[2])


@pytest.mark.parametrize(
    ("transform", "log", "reason"),
    [
        ("holt_winters", True, "forecasts in logs"),
        ("holt_winters_mult", False, "forecasts with multiplicative seasons"),
        ("holt_winters", False, None),
        ("seasonal_diff", False, None),
    ],
)
def test_the_config_says_when_only_positive_target_readings_are_accepted(
    transform: str, log: bool, reason: str | None
) -> None:
    """A forecaster in logs or with multiplicative seasons writes `positive_target` into its
    config (the service refuses 0 and negatives of that column); the same is derived from the
    spec of a config written before (the key removed), so older manifests are checked too."""
    spec = make_spec(target_index=1, num_features=2, horizon=1, seasons=(4,), transform=transform, phase=False, log=log)
    base = ModelConfig(cell="gru", input_size=2, hidden_size=4, output_size=1, features=("x", "sales"))
    config = forecaster_config(base, spec, None)
    if reason is None:
        assert "positive_target" not in config.extra and config.positive_target is None
        return
    assert config.extra["positive_target"] == {"index": 1, "name": "sales", "reason": reason}
    older = ModelConfig.from_dict(
        {**config.to_dict(), "extra": {k: v for k, v in config.extra.items() if k != "positive_target"}}
    )
    assert older.positive_target == config.positive_target
    assert (older.positive_target.index, older.positive_target.name, older.positive_target.reason) == (
        1,
        "sales",
        reason,
    )

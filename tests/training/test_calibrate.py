"""Calibrated quantiles (training/calibrate.py): on a synthetic series whose noise is known,
test coverage of the 80 % and 95 % intervals is within a few points of nominal and their width
is close to the noise's own; the pieces (levels, conformal order statistics, scores) on their
own; `--quantiles none` leaves the point model as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.config import ModelConfig
from models.forecaster import history_parts
from tests.support.tier import starts
from training.calibrate import Readout, calibration_scores, conformal_shift, interval_scores, parse_levels
from training.data import TrainingError

from .conftest import settings_from

NOISE = 5.0  # std of the Gaussian noise on top of a clean daily shape
SEASON = 24


def synthetic(path: Path, n: int = 3000, seed: int = 0, calm: float = 1.0) -> Path:
    """A daily shape plus Gaussian noise of std NOISE, times `calm` in the first half of each day."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    noise = NOISE * np.where(t % SEASON < SEASON // 2, calm, 1.0) * rng.standard_normal(n)
    y = 100 + 20 * np.sin(2 * np.pi * t / SEASON) + 8 * np.cos(2 * np.pi * t / 6) + noise
    pd.DataFrame({"y": y}).to_csv(path, index=False)
    return path


def train(tmp_path: Path, *extra: str, calm: float = 1.0) -> dict:
    from training.pipeline import train_and_publish

    data = synthetic(tmp_path / "noise.csv", calm=calm)
    argv = ["--data", str(data), "--target", "y", "--season", str(SEASON), "--epochs", "6", "--hidden", "16"]
    argv += ["--baselines", "naive", "--quiet", "--repository", str(tmp_path / "repo"), "--name", "m", *extra]
    train_and_publish(settings_from(argv))
    return json.loads((tmp_path / "repo" / "m" / "1" / "manifest.json").read_text())


@pytest.fixture(scope="module")
@starts("a training run to quality")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # the formula --transform auto picks on this series, given (the same model, metrics and
    # intervals): choosing it is tested elsewhere and took a fifth of this training
    return train(tmp_path_factory.mktemp("noisy"), "--horizon", "2", "--transform", "holt_winters_mult")


@pytest.mark.slow
def test_coverage_is_near_nominal_on_a_series_with_known_noise(noisy: dict) -> None:
    intervals = noisy["metrics"]["intervals"]
    assert abs(intervals["coverage"]["80"] - 0.80) <= 0.04, intervals["coverage"]
    assert abs(intervals["coverage"]["95"] - 0.95) <= 0.03, intervals["coverage"]
    for lead in range(2):
        assert abs(intervals["by_lead"]["coverage_80"][lead] - 0.80) <= 0.05
        assert abs(intervals["by_lead"]["coverage_95"][lead] - 0.95) <= 0.035
    for level, below in intervals["below"].items():
        assert abs(below - float(level)) <= 0.05, (level, below)
    assert noisy["metrics"]["intervals"]["flagged"]["outside_95"] <= 0.10
    assert noisy["quantiles"] == [0.025, 0.1, 0.5, 0.9, 0.975]
    assert noisy["anomaly"] == ["outside_80", "outside_95", "score"]
    config = ModelConfig.from_dict(noisy["config"])
    assert config.quantiles == (0.025, 0.1, 0.5, 0.9, 0.975)
    assert "pending" in history_parts(config, config.initial_state(1))
    shift = noisy["config"]["extra"]["forecaster"]["quantile_shift"]
    assert np.asarray(shift).shape == (2, 5)
    np.testing.assert_allclose(shift, noisy["metrics"]["calibration"]["shift"], atol=1e-5)
    # the head, fitted on the training origins, covers them about nominally before calibration
    in_sample = noisy["metrics"]["calibration"]["training_coverage_before"]
    assert abs(in_sample["80"] - 0.80) <= 0.05 and abs(in_sample["95"] - 0.95) <= 0.03, in_sample


@pytest.mark.slow
def test_the_interval_width_matches_the_error_spread(noisy: dict, tmp_path: Path) -> None:
    """Served quantiles one step ahead span about +-1.28 and +-1.96 standard deviations of the
    model's own test errors (the noise plus what a briefly trained model still misses), and
    never less than the noise itself."""
    import onnxruntime as ort

    from models.export import graph_output_names, input_names

    config = ModelConfig.from_dict(noisy["config"])
    path = Path(noisy["data"]["path"]).parent / "repo" / "m" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = pd.read_csv(noisy["data"]["path"])["y"].to_numpy(np.float32)
    feeds = dict(zip(input_names(config), [y[None, :, None], *config.initial_state(1)], strict=True))
    q = session.run(graph_output_names(config), feeds)[-2][0, 500:, 0]  # [T, Q] one step ahead
    width80 = float(np.median(q[:, 3] - q[:, 1]))
    width95 = float(np.median(q[:, 4] - q[:, 0]))
    spread = noisy["metrics"]["streaming"]["rmse"]
    assert spread > NOISE
    assert max(2 * 1.2816 * NOISE, 2 * 1.2816 * spread * 0.8) < width80 < 2 * 1.2816 * spread * 1.2, width80
    assert max(2 * 1.96 * NOISE, 2 * 1.96 * spread * 0.8) < width95 < 2 * 1.96 * spread * 1.2, width95


@pytest.mark.slow  # trains a model
def test_widths_follow_the_state_where_the_noise_does(tmp_path: Path) -> None:
    """Noise 5x calmer in the first half of each day: the head's state-dependent widths beat
    constant ones on validation and are kept; served one-step intervals are much narrower
    for the calm readings, and coverage holds in both halves."""
    import onnxruntime as ort

    from models.export import graph_output_names, input_names

    # the network's own widths: a fixed formula under it, not one chosen among the smoothing ones
    manifest = train(tmp_path, "--epochs", "8", "--transform", "seasonal_diff", calm=0.2)
    calibration = manifest["metrics"]["calibration"]
    assert calibration["widths"] == "state", calibration["validation_pinball"]
    config = ModelConfig.from_dict(manifest["config"])
    session = ort.InferenceSession(
        str(tmp_path / "repo" / "m" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    y = pd.read_csv(tmp_path / "noise.csv")["y"].to_numpy(np.float32)
    feeds = dict(zip(input_names(config), [y[None, :, None], *config.initial_state(1)], strict=True))
    q = session.run(graph_output_names(config), feeds)[-2][0, :, 0]  # one step ahead, [T, Q]
    t = np.arange(len(y) - 1)
    calm_next = (t + 1) % SEASON < SEASON // 2  # the reading forecast is a calm one
    test = t[-450:]
    width = q[:-1, 4] - q[:-1, 0]
    assert np.median(width[test][calm_next[test]]) < 0.5 * np.median(width[test][~calm_next[test]])
    inside = (y[1:] >= q[:-1, 0]) & (y[1:] <= q[:-1, 4])
    for half in (calm_next, ~calm_next):
        assert abs(inside[test][half[test]].mean() - 0.95) <= 0.05 + 1e-9  # 5 points, float-safe


@pytest.mark.slow  # trains a model
def test_quantiles_none_trains_a_point_model(tmp_path: Path) -> None:
    # the formula given: which one --transform auto would pick is not what this test is about
    manifest = train(tmp_path, "--quantiles", "none", "--epochs", "1", "--transform", "seasonal_diff")
    config = ModelConfig.from_dict(manifest["config"])
    assert config.extra_outputs == () and "pending" not in history_parts(config, config.initial_state(1))
    assert config.quantiles == ()
    assert "intervals" not in manifest["metrics"] and manifest["quantiles"] == []


@pytest.mark.parametrize(
    ("given", "levels"),
    [(None, [0.025, 0.1, 0.5, 0.9, 0.975]), ("0.9, 0.1", [0.1, 0.9]), ("none", []), ([0.5, 0.05], [0.05, 0.5])],
)
def test_levels_parse(given, levels) -> None:
    assert parse_levels(given) == levels


@pytest.mark.parametrize("given", ["0.1,x", "0,0.5", "1.5", "0.1,0.1", "nan"])
def test_bad_levels_are_named(given: str) -> None:
    with pytest.raises(ValueError, match="quantile levels"):
        parse_levels(given)
    with pytest.raises(TrainingError, match="quantile levels"):
        settings_from(["--data", "x.csv", "--target", "y", "--quantiles", given])


def test_conformal_shift_takes_the_finite_sample_order_statistic() -> None:
    scores = np.arange(1.0, 20.0)[:, None, None].repeat(2, axis=2)  # n = 19: scores 1..19
    shift = conformal_shift([0.1, 0.9], scores)
    # upper: ceil(20 * 0.9) = 18th smallest; lower: floor(20 * 0.1) = 2nd smallest
    assert shift.tolist() == [[2.0, 18.0]]
    assert conformal_shift([0.01, 0.99], scores).tolist() == [[1.0, 19.0]]  # clamped to the sample


def test_interval_scores_of_exact_gaussian_quantiles() -> None:
    rng = np.random.default_rng(0)
    target = rng.standard_normal((200_000, 1))
    z = np.array([-1.95996, -1.28155, 0.0, 1.28155, 1.95996])
    q = np.broadcast_to(z, (200_000, 1, 5))
    scores = interval_scores(q, target, [0.025, 0.1, 0.5, 0.9, 0.975], 1.0)
    assert abs(scores["coverage"]["80"] - 0.8) < 0.005 and abs(scores["coverage"]["95"] - 0.95) < 0.003
    # MSIS of the exact 95 % interval of N(0, 1): width 3.92 plus 2/0.05 x the expected miss on
    # both sides, 2 x (phi(1.96) - 1.96 x 0.025) = 2 x 0.009445
    assert abs(scores["msis"] - (3.9199 + 40 * 2 * 0.009445)) < 0.03


def _readout(residual: np.ndarray) -> Readout:
    """Point forecasts 0 and unit 1: the targets are the residuals."""
    n, h = residual.shape
    return Readout(np.zeros((n, 1), np.float32), np.zeros((n, h)), np.ones((n, h)), residual)


def test_calibration_scores_pool_the_training_block_at_validation_level() -> None:
    """Validation residuals twice as wide as the in-sample ones (a network that fits its
    training block): the pooled training scores are rescaled to validation's spread, so the
    shifts are validation's quantiles, from 10x as many origins."""
    rng = np.random.default_rng(0)
    val, train = _readout(2.0 * rng.standard_normal((400, 2))), _readout(rng.standard_normal((4000, 2)))
    offsets = np.array([-1.0, 0.0, 1.0])  # raw quantiles point + offsets (residual units)
    raw_val, raw_train = offsets + val.point[..., None], offsets + train.point[..., None]
    scores, ratio = calibration_scores(raw_val, val, raw_train, train)
    assert scores.shape == (4400, 2, 3) and abs(ratio - 2.0) < 0.1
    shift = conformal_shift([0.1, 0.5, 0.9], scores)
    np.testing.assert_allclose(shift + offsets, np.broadcast_to([-2 * 1.2816, 0.0, 2 * 1.2816], (2, 3)), atol=0.15)
    alone, none = calibration_scores(raw_val, val)
    assert alone.shape == (400, 2, 3) and np.isnan(none)
    # training residuals all zero: no ratio, validation scores alone
    still, ratio = calibration_scores(raw_val, val, raw_train, _readout(np.zeros((4000, 2))))
    assert np.isnan(ratio) and np.array_equal(still, alone)


def test_readouts_stream_the_readings_as_the_served_state_takes_them() -> None:
    """A robust model's calibration streams read a far-off reading as its state would (replaced
    by the robust state update), and the rest as they are; other models' streams are left alone."""
    from tests.models.test_quantiles import _sane, seasonal
    from training.calibrate import served_segments
    from training.forecast_loop import Segment

    x = seasonal(200, seed=1).astype(np.float32)
    x[120, 0] *= 10
    segment = Segment(x, np.zeros((199, 1)), 150, np.arange(150, 199))
    robust, old = _sane(), _sane(2)
    served, replaced = served_segments(robust, [segment])
    assert replaced == 1 and served[0].x[120, 0] < 2 * x[119, 0]
    np.testing.assert_array_equal(np.delete(served[0].x, 120, axis=0), np.delete(x, 120, axis=0))
    same, none = served_segments(old, [segment])
    assert none == 0 and same[0] is segment

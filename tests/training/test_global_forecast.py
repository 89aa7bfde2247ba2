"""One global forecaster over many series (`seqserve train --series-id`), on a small synthetic
long-format Parquet file: series of different lengths, start times and scales (0.5 to 500).
The model trains across all of them, beats per-series naive on mean MASE, reports per-series
metrics against naive and the statsforecast models, and its ONNX file streamed one reading at a
time for one series equals one stateless call over that series (and the trainer's forecasts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from models.config import ModelConfig
from models.export import input_names, output_names
from tests.support.tier import starts

from .conftest import settings_from

SERIES = 8


def fleet(seed: int = 0) -> pd.DataFrame:
    """Smooth trends that bend (like demographic series), in very different units, plus noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(SERIES):
        n = 40 + 6 * i
        start = 1960 + 2 * (i % 4)
        scale = [0.5, 2.0, 10.0, 50.0, 500.0, 1.0, 5.0, 100.0][i]
        t = np.arange(n)
        slope = rng.uniform(-0.03, 0.03)
        bend = rng.uniform(10, n)
        level = 1.0 + slope * t - 0.5 * slope * np.maximum(t - bend, 0)
        value = scale * (level + rng.normal(0, 0.002, n))
        frames.append(pd.DataFrame({"device": f"d{i}", "year": start + t, "reading": value}))
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
@starts("a training run to quality")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, pd.DataFrame]:
    from training.pipeline import train_and_publish

    root = tmp_path_factory.mktemp("global")
    frame = fleet()
    data = root / "fleet.parquet"
    frame.to_parquet(data, index=False)
    argv = ["--data", str(data), "--series-id", "device", "--target", "reading", "--time-column", "year"]
    argv += ["--horizon", "2", "--window", "12", "--hidden", "16", "--epochs", "8", "--batch-size", "16"]
    argv += ["--history", "8", "--lr", "0.003", "--quiet", "--repository", str(root / "repo"), "--name", "fleet"]
    outcomes = train_and_publish(settings_from(argv))
    assert len(outcomes) == 1
    entry = root / "repo" / "fleet" / "1"
    return entry, json.loads((entry / "manifest.json").read_text()), frame


@pytest.mark.slow
def test_the_global_model_beats_per_series_naive(trained: tuple[Path, dict, pd.DataFrame]) -> None:
    entry, manifest, _ = trained
    m = manifest["metrics"]
    assert m["series"] == SERIES and len(m["per_series"]) == SERIES
    assert m["streaming"]["mase"] < m["naive"]["mase"], (m["streaming"], m["naive"])
    assert m["beats"]["naive"] >= 0.5
    assert manifest["gate"]["promoted"] and manifest["gate"]["metric"] == "mase"
    # per series: the model's MASE recomputed from its MAE and the series' own naive scale
    assert all(e["streaming"]["mase"] > 0 for e in m["per_series"].values())
    assert manifest["data"]["split"]["series"] == SERIES
    for name in ("loss.png", "mase_by_series.png", "forecast.png"):
        assert (entry / name).stat().st_size > 1000
    config = ModelConfig.from_dict(manifest["config"])
    spec = config.extra["forecaster"]
    assert spec["local_scale"] and spec["ring"] == 8 and config.extra["series_id"] == "device"


@pytest.mark.slow
def test_statistical_baselines_are_fitted_per_series(trained: tuple[Path, dict, pd.DataFrame]) -> None:
    _, manifest, _ = trained
    m = manifest["metrics"]
    for name in ("autoets", "autoarima"):
        assert m[name]["series"] == SERIES, m.get("baselines_skipped")
        assert 0.0 <= m["beats"][name] <= 1.0
        assert all(name in e for e in m["per_series"].values())
    # a model that is better on every series has a share of 1; on none, 0: the share is counted
    wins = sum(e["streaming"]["mase"] < e["autoets"]["mase"] for e in m["per_series"].values())
    assert m["beats"]["autoets"] == round(wins / SERIES, 4)


def _session(path: Path) -> tuple[ort.InferenceSession, ModelConfig]:
    import onnx

    from models.config import METADATA_KEY

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), ModelConfig.from_json(
        meta[METADATA_KEY]
    )


@pytest.mark.slow
def test_onnx_streaming_one_series_equals_the_stateless_call(trained: tuple[Path, dict, pd.DataFrame]) -> None:
    entry, manifest, frame = trained
    session, config = _session(entry / "model.onnx")
    one = frame[frame["device"] == "d4"].sort_values("year")["reading"].to_numpy(np.float32)  # scale 500
    x = one[None, :, None]
    names_in, names_out = input_names(config), output_names(config)
    whole = session.run(names_out, dict(zip(names_in, [x, *config.initial_state(1)], strict=True)))[0]
    state, steps = list(config.initial_state(1)), []
    for t in range(len(one)):
        y, *state = session.run(names_out, dict(zip(names_in, [x[:, t : t + 1], *state], strict=True)))
        steps.append(y)
    streamed = np.concatenate(steps, axis=1)
    assert np.abs(streamed - whole).max() <= 1e-5 * np.abs(whole).max()
    # raw units of this series, no per-series parameters: a sensible next value
    assert np.abs(whole[0, -2, 0] - one[-1]) < 0.05 * np.abs(one).max()
    # the trainer's test MAE for d4 is what this file produces over d4's test origins
    per = manifest["metrics"]["per_series"]["d4"]["streaming"]["mae"]
    n = len(one)
    n_test = round(n * 0.15)
    origins = np.arange(n - n_test - 1, n - 2)
    actual = np.stack([one[origins + 1], one[origins + 2]], axis=1)
    assert abs(float(np.abs(whole[0, origins] - actual).mean()) - per) <= 1e-4 * max(per, 1e-3) + 1e-4


@pytest.mark.slow
def test_a_new_device_in_other_units_needs_no_parameters(trained: tuple[Path, dict, pd.DataFrame]) -> None:
    """A series the model never saw, 1000x larger than any training series: forecasts follow it
    (the scale comes from the session's own ring)."""
    entry, _, frame = trained
    session, config = _session(entry / "model.onnx")
    one = frame[frame["device"] == "d1"].sort_values("year")["reading"].to_numpy(np.float64)
    names_in, names_out = input_names(config), output_names(config)

    def run(values: np.ndarray) -> np.ndarray:
        x = values.astype(np.float32)[None, :, None]
        return session.run(names_out, dict(zip(names_in, [x, *config.initial_state(1)], strict=True)))[0][0]

    small, big = run(one), run(one * 250_000.0)
    assert np.allclose(big[2:] / 250_000.0, small[2:], rtol=1e-3, atol=1e-3 * np.abs(one).max())


def test_series_id_with_bad_settings_is_refused(tmp_path: Path) -> None:
    from training.data import TrainingError
    from training.pipeline import train_and_publish

    data = tmp_path / "fleet.csv"
    fleet().to_csv(data, index=False)
    base = ["--data", str(data), "--series-id", "device", "--repository", str(tmp_path), "--quiet"]
    with pytest.raises(TrainingError, match="one target"):
        train_and_publish(settings_from([*base, "--target", "reading,year"]))
    with pytest.raises(TrainingError, match="series-id"):
        train_and_publish(settings_from([*base, "--target", "reading", "--series-id", "nope"]))
    with pytest.raises(TrainingError, match="forecasting"):
        settings_from([*base, "--task", "classify", "--label", "device", "--sequence-id", "device"])


def test_the_world_fertility_preset_loads_every_country() -> None:
    """The bundled preset: 194 yearly series split within each (1960-2011 observed: 36 training,
    8 validation, 8 test years each), the empty 2012-2013 trimmed, LUX/SGP gaps filled but not
    scored; at horizon 5 SGP has no fully observed test origin and is left out."""
    from training.global_run import load

    settings = settings_from(["--preset", "world_fertility", "--quiet"])
    assert settings.series_id == "country_code" and settings.time_column == "year" and settings.history == 10
    data = load(settings, report=lambda _: None)
    assert len(data.series) == 194 and data.filled == 4 and not data.dropped
    usa = next(s for s in data.series if s.key == "USA")
    assert (usa.data.train_rows, len(usa.data.val), len(usa.data.test)) == (36, 8, 8)
    five = load(settings_from(["--preset", "world_fertility", "--horizon", "5"]), report=lambda _: None)
    assert list(five.dropped) == ["SGP"] and len(five.series) == 193


def test_streaming_many_series_at_once_equals_one_session_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batched validation/test streaming (series padded to a common length, grouped by size)
    gives every series what one fresh session over that series alone gives."""
    import torch

    from models.forecaster import Forecaster
    from training import forecast_loop
    from training.global_run import build_config, segments
    from training.series import prepare_multiseries

    data = prepare_multiseries(fleet(), "device", "reading", time_column="year", horizon=2, report=lambda _: None)
    settings = settings_from(["--data", "x.csv", "--series-id", "device", "--target", "reading", "--horizon", "2"])
    torch.manual_seed(0)
    model = Forecaster(build_config(settings, data, "gru", "diff")).eval()
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.3)
    segs = segments(data)
    ends = [len(s.x) for s in segs]
    alone = []
    for s in segs:
        with torch.no_grad():
            y, _ = model(torch.from_numpy(s.x)[None], model.init_state(1))
        alone.append(y[0].numpy())
    for budget in (10**9, 3 * 60 * (model.spec.ring + 1)):  # one batch; groups of about 3 series
        monkeypatch.setattr(forecast_loop, "STREAM_BATCH_ELEMENTS", budget)
        together = forecast_loop.stream_many(model, segs, ends)
        for a, b in zip(alone, together, strict=True):
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 * np.abs(a).max()

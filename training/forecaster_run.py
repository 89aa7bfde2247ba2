"""From resolved settings and data to a trained history-state forecaster (models/forecaster.py).

- Which runs use it: forecasting one target that is also an input (the default: features = the
  target). Several targets keep the plain RecurrentModel path.
- Seasons: `--season` (several allowed, e.g. 48,336); none gives a model of recent differences.
- Time: `--time-column`, or else a detected time column (training/seasons.py) with a regular
  spacing. It gives the sampling period and the
  phase of row 0, recorded as the model's Clock so a client's `start_time` sets the phase. Without
  one, the model has no phase state and learns from the history alone.
- Transform (`--transform`): what the network corrects (models/forecast_spec.py). `auto` picks
  the baseline with the lowest validation MAE among those the seasons allow (training mean, last
  value, exponential smoothing without and with a damped trend, their constants fitted on the
  training block, seasonal naive,
  seasonal naive plus this season's change), each streamed over the validation block by the
  untrained model, which answers exactly its baseline.
- Budget: `--epochs` evaluations of STEPS_PER_EPOCH optimiser steps each (training/forecast_loop.py),
  early stopping after `--patience` evaluations without improvement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.config import Clock, ModelConfig
from models.forecast_spec import HOLT_WINTERS as HW_TRANSFORMS
from models.forecast_spec import SpecError, make_spec
from training import choice
from training.configs import model_config
from training.data import ForecastData, TrainingError

if TYPE_CHECKING:
    from training.forecast_loop import ForecastTrainSettings

STEPS_PER_EPOCH = 25


def loop_settings(settings: Any, **overrides: Any) -> ForecastTrainSettings:
    """The TBPTT loop's settings from the CLI's: one mapping for the single-series and the
    many-series paths (which overrides what differs, e.g. `burn_in`)."""
    from training.forecast_loop import ForecastTrainSettings  # torch: imported when training

    fields: dict[str, Any] = dict(
        steps=settings.epochs * STEPS_PER_EPOCH,
        streams=settings.batch_size,
        chunk=settings.window,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        eval_every=STEPS_PER_EPOCH,
        patience=settings.patience,
        seed=settings.seed,
        progress=not settings.quiet,
    )
    return ForecastTrainSettings(**(fields | overrides))


# The baselines `--transform auto` chooses from: the training mean (a series without memory, such
# as white noise, is best forecast by it), the last value, exponential smoothing (a level that
# wanders under noise: the last value would chase the noise), exponential smoothing with a damped
# trend (changes that persist for a while, like unemployment or output), the seasonal ones, and
# Holt-Winters (a level and seasonal components smoothed over many seasons, additive or, for a
# positive series, multiplicative: Taylor's double-seasonal model for half-hourly load).
AUTO_TRANSFORMS = ("none", "diff", "smooth", "trend", "seasonal", "seasonal_diff", "holt_winters", "holt_winters_mult")
# The trained network replaces its formula only when its validation advantage is significant
# (training/choice.py: a material gain, the HLN-corrected Diebold-Mariano test on the per-origin
# loss differences, and a sign test that it is better at most origins); otherwise the formula, the
# simpler candidate, is the honest answer (models/forecaster.py: a zero head answers exactly its
# baseline). The names below are kept for the manifest's `learned` figures.
MIN_VALIDATION_GAIN = choice.MIN_GAIN
MIN_VALIDATION_Z = choice.MIN_DM
FORMULAS = {
    "none": "the training mean",
    "diff": "the last value (naive)",
    "seasonal": "the value one season ago (seasonal naive)",
    "seasonal_diff": "last season's value plus this season's change",
    "revin": "the mean of the recent readings",
    "smooth": "simple exponential smoothing",
    "trend": "exponential smoothing with a damped trend",
    "holt_winters": "Holt-Winters exponential smoothing with additive seasons and an AR(1) error adjustment",
    "holt_winters_mult": "Holt-Winters exponential smoothing with multiplicative seasons and an AR(1) error adjustment",
}


def formula_description(spec: Any) -> str:
    """FORMULAS' words for the spec's transform, with the fitted smoothing constants, and said
    to be in logs for a log spec."""
    words = FORMULAS[spec.transform]
    if spec.transform == "smooth":
        words = f"{words} (alpha {spec.smooth_alpha:g})"
    elif spec.transform == "trend":
        words = f"{words} (alpha {spec.smooth_alpha:g}, beta {spec.trend_beta:g}, phi {spec.trend_phi:g})"
    if spec.transform in HW_TRANSFORMS:
        gammas = "".join(f", season {s} {g:.3g}" for s, g in zip(spec.seasons, spec.hw_gamma, strict=True))
        words = f"{words} (level {spec.hw_alpha:.3g}{gammas}, phi {spec.hw_phi:.3g})"
    return f"{words}, in logs" if spec.log else words


def auto_candidates(seasons: tuple[int, ...], data: ForecastData) -> list[str]:
    """The formulas `--transform auto` compares: the seasonal ones and Holt-Winters need seasons
    (without, Holt-Winters is smoothing with an AR(1) adjustment, which `smooth` already
    covers), multiplicative Holt-Winters a training block above zero."""
    out = [t for t in AUTO_TRANSFORMS if seasons or t in ("none", "diff", "smooth", "trend")]
    target = data.targets[: data.train_rows, 0]
    if "holt_winters_mult" in out and not (len(target) and float(np.min(target)) > 0.0):
        out.remove("holt_winters_mult")
    return out


def smooth_window(train_rows: int, horizon: int) -> int:
    """The ring a smoothing forecaster keeps: SMOOTH_WINDOW, or for a short training block at
    most half of what fitting leaves (models/forecaster.fit_spec needs 9 origins with a full ring)."""
    from models.forecast_spec import SMOOTH_WINDOW

    return max(2, min(SMOOTH_WINDOW, (train_rows - horizon - 9) // 2))


@dataclass
class TimeAxis:
    column: str
    period_seconds: float
    first: float  # unix seconds of row 0


def uses_forecaster(data: ForecastData) -> bool:
    return len(data.target_names) == 1 and data.target_names[0] in data.feature_names


def seasons_of(settings: Any) -> tuple[int, ...]:
    season = settings.season
    if season is None:
        return ()
    values = season if isinstance(season, list | tuple) else [season]
    return tuple(sorted({int(s) for s in values if int(s) >= 2}))


def time_axis(frame: pd.DataFrame, column: str, report: Any = print) -> TimeAxis | None:
    """The sampling period and first time from `column` (or a detected time column,
    training/seasons.py); None when there is none or its spacing is irregular (the phase would
    then be wrong). `frame` is expected in time order (training/seasons.read_time sorts it)."""
    from training.seasons import read_time

    _, info = read_time(frame, column, report=report)
    if info is None or info.period_seconds is None:
        return None
    return TimeAxis(info.column, info.period_seconds, info.first)


def build_config(
    settings: Any, data: ForecastData, cell: str, transform: str, axis: TimeAxis | None, log: bool = False
) -> tuple[ModelConfig, float | None]:
    """The fitted forecaster config and the start time of row 0 (None without a time axis);
    `log`: forecast the target in logs (models/forecast_spec.py)."""
    from models.forecaster import fit_spec, forecaster_config

    seasons = seasons_of(settings)
    try:
        spec = make_spec(
            target_index=data.feature_names.index(data.target_names[0]),
            num_features=len(data.feature_names),
            horizon=data.horizon,
            seasons=seasons,
            transform=transform,
            phase=axis is not None,
            history=int(getattr(settings, "history", 0) or 0),
            smooth_window=smooth_window(data.train_rows, data.horizon),
            log=log,
        )
    except SpecError as exc:
        raise TrainingError(str(exc)) from exc
    if spec.ring + 8 + data.horizon > data.train_rows:
        raise TrainingError(
            f"the longest season ({spec.ring}) needs more than the {data.train_rows} training rows; "
            "give a shorter --season or more data"
        )
    clock = None
    start = None
    if axis is not None and spec.cycle:
        # epoch half a period before row 0: floor() then rounds to the nearest reading.
        clock = Clock("phase", axis.period_seconds, axis.first - axis.period_seconds / 2, spec.cycle)
        start = axis.first
    base = model_config(
        settings,
        data,
        cell,
        extra={
            "seasons": list(seasons),
            "time_column": axis.column if axis else "",
            "period_seconds": axis.period_seconds if axis else None,
        },
    )
    base = with_quantiles(base, settings)
    try:
        return fit_spec(forecaster_config(base, spec, clock), data.features, data.train_rows), start
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def with_quantiles(base: ModelConfig, settings: Any) -> ModelConfig:
    """`base` with the `--quantiles` levels (none when the settings have none)."""
    from dataclasses import replace

    levels = getattr(settings, "quantiles", None) or ()
    return replace(base, quantiles=tuple(float(q) for q in levels))


LOG_SUFFIX = " (log)"  # a log candidate's key among the validation scores


def log_choice(settings: Any, data: ForecastData) -> dict[str, Any]:
    """Whether logs are offered (`--log`; for auto, training/transforms.multiplicative_season
    on the training block), with the evidence."""
    from training.transforms import multiplicative_season

    asked = getattr(settings, "log", "auto") or "auto"
    y = data.features[: data.train_rows, data.feature_names.index(data.target_names[0])]
    if asked == "no":
        return {"setting": asked, "offered": False, "reason": "--log no"}
    if asked == "yes":
        if np.nanmin(y) <= 0:
            raise TrainingError("--log yes needs a positive series; the training block has readings <= 0")
        return {"setting": asked, "offered": True, "reason": "--log yes"}
    return {"setting": asked, **multiplicative_season(y, seasons_of(settings))}


def choose_transform(
    settings: Any,
    data: ForecastData,
    cell: str,
    axis: TimeAxis | None,
    logs: dict[str, Any] | None = None,
    built: dict[tuple[str, bool], tuple[ModelConfig, float | None]] | None = None,
) -> tuple[str, bool, dict[str, float]]:
    """(transform, log, validation MAE of each candidate): `--transform` as given, or for auto
    the baseline with the lowest validation MAE; where logs are offered (`logs`, log_choice)
    each baseline also in logs (its key suffixed LOG_SUFFIX), and with `--log yes` only so.
    `built`, when given, receives each candidate's fitted config and start time keyed by
    (transform, log): the chosen one is then trained as it is instead of being fitted again
    (a Holt-Winters fit of a long series takes seconds)."""
    from models.forecaster import Forecaster
    from training.forecast_loop import stream_forecasts

    logs = logs or {"offered": False, "setting": "no"}
    forms = [True] if logs.get("setting") == "yes" else [False, True] if logs.get("offered") else [False]
    asked = getattr(settings, "transform", "auto") or "auto"
    seasons = seasons_of(settings)
    candidates = [asked] if asked != "auto" else auto_candidates(seasons, data)
    if len(candidates) * len(forms) == 1:
        return candidates[0], forms[0], {}
    scores: dict[str, float] = {}
    val_end = int(data.val[-1]) + 1
    for log in forms:
        for transform in candidates:
            if log and transform == "holt_winters_mult" and asked == "auto":
                continue  # multiplicative seasons in logs: what additive ones in logs already are
            try:
                config, start = build_config(settings, data, cell, transform, axis, log)
                if built is not None:
                    built[(transform, log)] = (config, start)
            except TrainingError:
                if asked != "auto" or transform not in HW_TRANSFORMS:  # Holt-Winters: skipped on too short a block
                    raise
                continue
            model = Forecaster(config).eval()
            pred = stream_forecasts(model, data, val_end, start)[data.val]
            scores[transform + (LOG_SUFFIX if log else "")] = float(np.abs(pred - data.y[data.val]).mean())
    best = min(scores, key=scores.__getitem__)
    return best.removesuffix(LOG_SUFFIX), best.endswith(LOG_SUFFIX), scores


def train(settings: Any, data: ForecastData, frame: pd.DataFrame, cell: str, report: Any = print) -> tuple[Any, Any]:
    """Build, fit and train a forecaster; returns (model, history). The model carries
    `start_time` (row 0) and the transform choice for evaluation and the manifest."""
    import torch

    from models.forecaster import Forecaster
    from training import forecast_loop, loop

    axis = time_axis(frame, getattr(settings, "time_column", "") or "", lambda _: None)
    logs = log_choice(settings, data)
    if logs["setting"] == "auto" and logs.get("season"):
        said = "offered" if logs["offered"] else "not offered"
        report(f"logs {said}: {logs['reason']} over {logs['cycles']} cycles of {logs['season']}")
    built: dict[tuple[str, bool], tuple[ModelConfig, float | None]] = {}
    transform, log, scores = choose_transform(settings, data, cell, axis, logs, built)
    if scores:
        listing = ", ".join(f"{t} {v:.4g}" for t, v in scores.items())
        chosen = transform + (LOG_SUFFIX if log else "")
        report(f"transform {chosen} chosen on validation MAE of the baselines ({listing})")
    config, start = built.get((transform, log)) or build_config(settings, data, cell, transform, axis, log)
    loop.seed_everything(settings.seed, settings.threads)
    model = Forecaster(config)
    history = forecast_loop.train_forecaster(model, data, loop_settings(settings), start)
    model.eval()
    segment = forecast_loop.Segment.of(data, start)
    model_err = forecast_loop.validation_errors(model, [segment])
    formula_err = forecast_loop.validation_errors(Forecaster(config).eval(), [segment])
    evidence = choice.network_choice(
        formula_err, model_err, len(data.val), horizon=int(config.horizon), best_step=int(history.best_step)
    )
    formula_val, best_val = evidence["formula_mae"], evidence["network_mae"]
    gain = float(evidence["gain"])
    z = evidence["dm"]
    serves_formula = not evidence["network"]
    if history.best_step != 0:
        report(f"the network's best checkpoint (step {history.best_step}): {evidence['text']}")
    if serves_formula and history.best_step != 0:
        with torch.no_grad():  # the zero point head: exactly the formula (other heads kept)
            model.head.weight.zero_()
            model.head.bias.zero_()
        report(f"this version serves the formula ({formula_description(model.spec)})")
    model.eval()
    model.start_time = start
    model.calibration = {}
    if config.quantiles:
        from training import calibrate

        segment = forecast_loop.Segment.of(data, start)
        model.calibration = calibrate.calibrate(
            model, [segment], calibrate.QuantileSettings(seed=settings.seed), report
        )
    refit: dict[str, Any] = {}
    if serves_formula and transform in HW_TRANSFORMS:
        model, refit = refit_formula(model, data)
        report(
            f"formula constants refitted on the {refit['rows']} rows before the test block "
            f"(training and validation): {formula_description(model.spec)}"
        )
    model.transform_choice = {
        "setting": getattr(settings, "transform", "auto"),
        "chosen": transform,
        "baseline_validation_mae": scores,
        "log": {**logs, "used": log},
    }
    model.learned = {
        "serves_formula": serves_formula,
        "formula": transform,
        "formula_description": formula_description(model.spec),
        "formula_validation_mae": formula_val,
        "best_validation_mae": best_val,
        "validation_gain": round(gain, 6),
        "validation_gain_z": z,
        "min_validation_gain": MIN_VALIDATION_GAIN,
        "min_validation_z": MIN_VALIDATION_Z,
        "best_step": int(history.best_step),
        "evidence": evidence,
    }
    if refit:
        model.learned["formula_refit"] = refit
    return model, history


def refit_formula(model: Any, data: ForecastData) -> tuple[Any, dict[str, Any]]:
    """A version that serves its Holt-Winters formula, with the formula's constants refitted on
    every row before the test block (training and validation), as Taylor fitted his on all the
    weeks before the ones he tested on: validation has done its part (choosing the formula and
    judging the network), and a statistical model uses all the history it has. The search starts
    from the training block's constants (one polish, not a new grid search). The other
    constants, the heads and the calibration stay as they are (the quantiles are offsets from the
    point forecast, so they follow it). Returns the new model and what changed."""
    from models.forecaster import Forecaster, fit_smoothing, forecaster_config, work_units

    spec = model.spec
    rows = int(data.test[0]) + 1 if len(data.test) else len(data.features)
    target = work_units(spec, data.features[:rows, spec.target_index])
    new_spec = fit_smoothing(spec, [target], warm=True)  # from the training block's constants
    refitted = Forecaster(forecaster_config(model.config, new_spec, model.config.clock))
    refitted.load_state_dict(model.state_dict())
    refitted.eval()
    refitted.start_time = model.start_time
    refitted.calibration = model.calibration

    def constants(s: Any) -> dict[str, Any]:
        return {"alpha": s.hw_alpha, "gamma": list(s.hw_gamma), "phi": s.hw_phi}

    return refitted, {"rows": rows, "before": constants(spec), "after": constants(new_spec)}


def predictions(model: Any, data: ForecastData, pairs: np.ndarray, window: int) -> dict[str, np.ndarray]:
    """Test forecasts two ways: `streaming` (one session from row 0, phase known, as served) and
    `windowed` (a fresh session per origin fed the last ring + window readings, phase unknown)."""
    import torch

    from training.forecast_loop import stream_forecasts

    streaming = stream_forecasts(model, data, int(pairs[-1]) + 1, model.start_time)[pairs]
    span = model.spec.ring + window
    x = torch.from_numpy(data.features.astype(np.float32))
    out = []
    with torch.no_grad():
        for chunk in np.array_split(pairs, max(1, len(pairs) // 128)):
            idx = torch.from_numpy(chunk)[:, None] - span + 1 + torch.arange(span)[None, :]
            y, _ = model(x[idx.clamp(min=0)], model.init_state(len(chunk)))
            out.append(y[:, -1].numpy())
    return {"streaming": streaming, "windowed": np.concatenate(out).astype(np.float64)}

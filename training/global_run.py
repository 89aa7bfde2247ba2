"""One global forecaster over many series (`seqserve train --series-id COL`), end to end.

- **Data** (training/series.py): long format, split within each series, a list of series.
- **Model**: the history-state forecaster of models/forecaster.py with `local_scale`: its
  differences, analog columns and residual scale are divided by the session's own recent mean
  absolute change (from the ring state), and its baseline is the series' own last value or
  season, so one set of weights serves a device of any level and scale and a new session needs
  no per-series parameters. The ring holds `--history` readings (default at least MIN_HISTORY).
- **Training** (training/forecast_loop.py): streams are drawn from every series; each series'
  errors are divided by its training-block naive MAE, so large-valued series do not dominate the
  loss or the validation score that picks the checkpoint.
- **Baselines**, per series on exactly the model's test origins, fitted on that series' training
  block only (training/baselines.py): naive, seasonal naive per `--season`, statsforecast AutoETS
  and AutoARIMA (`--baselines full`).
- **Metrics**: per series MAE and MASE (scale: that series' in-sample one-step naive MAE on its
  training block) for the model and every baseline; aggregate mean MASE over series, pooled MAE,
  and for every baseline the share of series where the model's MASE is strictly lower.
- **Gate**: the model's mean MASE must beat the best naive baseline's (training/gate.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.data import TrainingError, file_sha256
from training.evaluate import MASE_SCALE, forecast_metrics, mase_scale
from training.series import MultiSeriesData, Series, prepare_multiseries
from training.settings import RunSettings

MIN_HISTORY = 8
AUTO_TRANSFORMS = ("diff", "seasonal", "seasonal_diff")


def _log(message: str) -> None:
    from training import distributed

    distributed.context().say(message)


def load(settings: RunSettings, report: Any = None, frame: Any = None) -> MultiSeriesData:
    if len(settings.target) != 1:
        raise TrainingError(f"--series-id trains one target across the series; got {settings.target}")
    from training import distributed

    # Under torchrun a rank reads only its own series; rank 0 reads them all (it evaluates and
    # publishes) and trains on its share like the others.
    if frame is None:  # (a wide file arrives reshaped, training/wide.py)
        frame = distributed.load_shard(
            Path(settings.data), settings.series_id, settings.max_rows, whole=distributed.context().is_main
        )
    return prepare_multiseries(
        frame,
        settings.series_id,
        settings.target[0],
        settings.features or settings.target,
        time_column=settings.time_column,
        horizon=settings.horizon,
        val_fraction=settings.val_fraction,
        test_fraction=settings.test_fraction,
        report=report or (lambda m: _log(f"data: {m}")),
    )


def segments(data: MultiSeriesData) -> list[Any]:
    """The training loop's view: one Segment per series, weighted by its naive MAE."""
    from training.forecast_loop import Segment

    return [Segment.of(s.data, s.start_time, float(mase_scale(s.data)[0]), s.key) for s in data.series]


def owned_segments(data: MultiSeriesData) -> list[Any]:
    """The segments this rank trains and validates on (all of them in one process)."""
    from training import distributed

    ctx = distributed.context()
    owned = [s for s in segments(data) if ctx.owns(s.key)]
    if not owned:
        raise TrainingError(
            f"rank {ctx.rank} of {ctx.world_size} has no usable series (short series were left out): "
            "use fewer processes"
        )
    return owned


def _history(settings: RunSettings) -> int:
    return max(int(settings.history or 0), MIN_HISTORY)


def build_config(settings: RunSettings, data: MultiSeriesData, cell: str, transform: str) -> Any:
    """The forecaster config (local scale, ring of --history readings) fitted on every series'
    training block. Under torchrun rank 0, which holds every series, fits it and the other
    ranks receive it: the same constants as in one process, identical on every rank."""
    from training import distributed

    ctx = distributed.context()
    return ctx.broadcast(_fit_config(settings, data, cell, transform) if ctx.is_main else None)


def _fit_config(settings: RunSettings, data: MultiSeriesData, cell: str, transform: str) -> Any:
    from models.config import Clock
    from models.forecast_spec import SpecError, make_spec
    from models.forecaster import fit_spec_many, forecaster_config
    from training.configs import model_config
    from training.forecaster_run import seasons_of, with_quantiles

    seasons = seasons_of(settings)
    first = data.series[0].data
    try:
        spec = make_spec(
            target_index=first.feature_names.index(first.target_names[0]),
            num_features=len(first.feature_names),
            horizon=data.horizon,
            seasons=seasons,
            transform=transform,
            phase=data.period_seconds is not None,
            history=_history(settings),
            local_scale=True,
        )
    except SpecError as exc:
        raise TrainingError(str(exc)) from exc
    clock = None
    if data.period_seconds is not None and spec.cycle:
        starts = [s.start_time for s in data.series if s.start_time is not None]
        clock = Clock("phase", data.period_seconds, min(starts) - data.period_seconds / 2, spec.cycle)
    base = model_config(
        settings,
        first,
        cell,
        extra={
            "seasons": list(seasons),
            "time_column": settings.time_column,
            "period_seconds": data.period_seconds,
            "series_id": settings.series_id,
            "global_model": {"series": len(data.series), "scale": "per session, from its ring (local_scale)"},
        },
    )
    base = with_quantiles(base, settings)
    try:
        return fit_spec_many(
            forecaster_config(base, spec, clock), [s.data.features[: s.data.train_rows] for s in data.series]
        )
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def choose_transform(settings: RunSettings, data: MultiSeriesData, cell: str) -> tuple[str, dict[str, float]]:
    """`--transform` as given, or for auto the baseline (the untrained model) with the lowest
    weighted validation error over every series."""
    from models.forecaster import Forecaster
    from training.forecast_loop import validation_errors
    from training.forecaster_run import seasons_of

    asked = settings.transform or "auto"
    if asked != "auto":
        return asked, {}
    from training import distributed

    seasons = seasons_of(settings)
    scores: dict[str, float] = {}
    segs = owned_segments(data)
    for transform in [t for t in AUTO_TRANSFORMS if seasons or t == "diff"]:
        model = Forecaster(build_config(settings, data, cell, transform)).eval()
        errors = validation_errors(model, segs)  # this rank's series; summed over ranks below
        scores[transform] = distributed.context().mean(float(errors.sum()), float(errors.size))
    return min(scores, key=scores.__getitem__), scores


def train(settings: RunSettings, data: MultiSeriesData, cell: str) -> tuple[Any, Any]:
    from models.forecaster import Forecaster
    from training import distributed, forecast_loop, loop
    from training.forecaster_run import loop_settings

    transform, scores = choose_transform(settings, data, cell)
    if scores:
        listing = ", ".join(f"{t} {v:.4g}" for t, v in scores.items())
        _log(f"transform {transform} chosen on validation error of the baselines ({listing})")
    config = build_config(settings, data, cell, transform)
    loop.seed_everything(settings.seed, settings.threads)
    model = Forecaster(config)
    # burn_in 0: a restart fills the ring from the series' past; short series cannot spare rows
    train_settings = loop_settings(settings, burn_in=0)
    # Under torchrun each rank trains on (and validates) its share of the series; the loop sums
    # the validation error over ranks, so the decisions are the global ones.
    history = forecast_loop.train_forecaster(model, owned_segments(data), train_settings)
    model.start_time = None
    model.calibration = {}
    if config.quantiles and distributed.context().is_main:  # rank 0 holds every series and publishes
        from training import calibrate

        model.calibration = calibrate.calibrate(
            model, segments(data), calibrate.QuantileSettings(seed=settings.seed), lambda m: _log(m)
        )
    model.transform_choice = {
        "setting": settings.transform,
        "chosen": transform,
        "baseline_validation_error": scores,
        "chosen_by": "mean |error| / series naive MAE over every series' validation origins",
    }
    return model, history


def test_forecasts(model: Any, data: MultiSeriesData) -> list[np.ndarray]:
    """[test pairs, horizon] streamed forecasts per series: one fresh session per series from its
    first row, as served."""
    from training.forecast_loop import stream_many

    model.eval()
    segs = segments(data)
    ends = [int(s.data.test[-1]) + 1 for s in data.series]
    made = stream_many(model, segs, ends)
    return [m[s.data.test] for m, s in zip(made, data.series, strict=True)]


def series_baselines(data: MultiSeriesData, seasons: list[int], statistical: bool) -> list[Any]:
    from training.baselines import compute_baselines

    out = []
    skipped: dict[str, int] = {}
    for s in data.series:
        b = compute_baselines(s.data, s.data.test, seasons, statistical=statistical, report=lambda _: None)
        for name in b.skipped:
            skipped[name] = skipped.get(name, 0) + 1
        out.append(b)
    if skipped:
        _log("baselines: " + ", ".join(f"{n} failed on {c} series" for n, c in skipped.items()))
    return out


def global_report(data: MultiSeriesData, predictions: list[np.ndarray], baselines: list[Any]) -> dict[str, Any]:
    """Per-series and aggregate metrics for the model (`streaming`) and every baseline.

    Each entry (model or baseline) holds `mase` (mean over series of per-series MASE), `mae`
    (pooled over every test origin), `rmse`, `median_mase`, and `series` (how many series it
    covers: a statistical fit that failed on a series leaves that series out of its numbers and
    out of its `beats` share)."""
    h = data.horizon
    names = list(dict.fromkeys(n for b in baselines for n in b.predictions))
    per_series: dict[str, dict[str, dict[str, float]]] = {}
    pooled: dict[str, list[np.ndarray]] = {n: [] for n in ["streaming", *names]}
    for s, pred, b in zip(data.series, predictions, baselines, strict=True):
        actual = s.data.y[s.data.test]
        scale = mase_scale(s.data)
        entry = {}
        for name, values in [("streaming", pred), *b.predictions.items()]:
            one = forecast_metrics(values, actual, scale, h)
            entry[name] = {"mae": round(one["mae"], 6), "mase": round(one["mase"], 6)}
            pooled[name].append(values - actual)
        per_series[s.key] = entry
    report: dict[str, Any] = {}
    for name in ["streaming", *names]:
        keys = [k for k, e in per_series.items() if name in e]
        mase = np.array([per_series[k][name]["mase"] for k in keys])
        err = np.concatenate(pooled[name])
        m: dict[str, Any] = {
            "mase": float(mase.mean()),
            "median_mase": float(np.median(mase)),
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "mape": None,
            "series": len(keys),
        }
        if h > 1:
            m["by_lead"] = {
                "mae": [float(np.abs(err[:, k]).mean()) for k in range(h)],
                "mape": [None] * h,
            }
        report[name] = m
    beats = {}
    for name in names:
        keys = [k for k, e in per_series.items() if name in e]
        wins = sum(per_series[k]["streaming"]["mase"] < per_series[k][name]["mase"] for k in keys)
        beats[name] = round(wins / max(len(keys), 1), 4)
    first = baselines[0]
    naive_names = [n for n in names if n == "naive" or n.startswith("seasonal_naive_")]
    report.update(
        {
            "aggregate": "mase: mean over series of per-series MASE; mae/rmse: pooled over every test origin",
            "beats": beats,
            "beats_meaning": "share of series where the model's test MASE is strictly lower than the baseline's",
            "baselines": {
                n: {
                    "description": first.descriptions.get(n, ""),
                    "seconds": round(sum(b.seconds.get(n, 0.0) for b in baselines), 3),
                }
                for n in names
            },
            "baselines_skipped": _skipped(baselines),
            "best_baseline": min(names, key=lambda n: report[n]["mase"]),
            "best_naive_baseline": min(naive_names, key=lambda n: report[n]["mase"]),
            "gate_metric": "mase",
            "series": len(data.series),
            "test_pairs": sum(len(s.data.test) for s in data.series),
            "test_origins": [0, 0],
            "mase_scale": MASE_SCALE + ", of each series",
            "per_series": per_series,
        }
    )
    return report


def _skipped(baselines: list[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for b in baselines:
        for name, why in b.skipped.items():
            out.setdefault(name, why)
    return out


def headline(metrics: dict[str, Any]) -> str:
    m = metrics["streaming"]
    parts = [f"mean MASE {m['mase']:.3f} over {metrics['series']} series"]
    for name, share in metrics["beats"].items():
        parts.append(f"{name} {metrics[name]['mase']:.3f} (model better on {share:.0%})")
    return "; ".join(parts)


def train_and_publish_global(settings: RunSettings, frame: Any = None, wide: list[str] | None = None) -> list[Any]:
    """The `--series-id` path of `seqserve train`: one outcome per cell, published like any other.
    `frame`/`wide`: a wide file's target columns reshaped to long format (training/wide.py)."""
    import time

    import torch

    from training import distributed, plots
    from training.gate import decide
    from training.publish import Outcome, publish_outcome
    from training.verdict import attach_verdict

    ctx = distributed.context()
    if ctx.enabled and settings.batch_size < ctx.world_size:
        raise TrainingError(f"--batch-size {settings.batch_size} must be at least the {ctx.world_size} processes")
    data = load(settings, frame=frame)  # under torchrun: this rank's series (rank 0: all, see load)
    _log(
        f"data: {len(data.series)} series ({len(data.dropped)} left out), "
        f"{data.pairs('train')} train / {data.pairs('val')} validation / {data.pairs('test')} test pairs, "
        f"split within each series"
    )
    from dataclasses import replace as replaced

    from training.seasons import choose_for_many, choose_seasons, frequency_of

    setting = "given" if settings.season else ("auto" if settings.season_auto else "off")
    if setting == "auto":
        trains = [s.data.targets[: s.data.train_rows, 0] for s in data.series]
        choice = choose_for_many(trains, data.period_seconds)
    else:
        choice = choose_seasons(np.zeros(0), None, setting=setting, given=settings.season)
    choice = ctx.broadcast(choice if ctx.is_main else None)  # rank 0 holds every series
    _log(choice.describe())
    settings = replaced(settings, season=list(choice.seasons))
    record = {
        "time": {
            "column": settings.time_column or None,
            "period_seconds": data.period_seconds,
            "frequency": frequency_of(data.period_seconds) if data.period_seconds else None,
            "day_first": data.day_first,  # the service reads a start_time's slash dates in it
        },
        "seasons": choice.to_dict(),
        "wide": {"columns": wide, "as": "one series per target column, one global model"} if wide else None,
    }
    start = time.perf_counter()
    seasons = list(settings.season)
    statistical = settings.baselines == "full"
    if ctx.enabled:
        # The per-series fits (AutoETS, AutoARIMA: minutes for many series) are shared out like the
        # series: each rank fits its own, rank 0 gathers them all for the report.
        from dataclasses import replace

        mine = replace(data, series=[s for s in data.series if ctx.owns(s.key)])
        fitted = dict(zip(series_keys(mine), series_baselines(mine, seasons, statistical), strict=True))
        _log(f"baselines: fitted here for {len(fitted)} series ({time.perf_counter() - start:.1f}s)")
        gathered = ctx.gather(fitted)
    if not ctx.is_main:  # rank 0 alone evaluates and publishes
        for cell in ["lstm", "gru"] if settings.cell == "both" else [settings.cell]:
            _, history = train(settings, data, cell)
            _log(f"{cell}: trained {history.steps_run} steps in {history.seconds:.1f}s; rank 0 publishes")
        return []
    if ctx.enabled:
        merged = {key: value for part in gathered for key, value in part.items()}
        baselines = [merged[key] for key in series_keys(data)]
    else:
        baselines = series_baselines(data, seasons, statistical)
    _log(f"baselines: {', '.join(baselines[0].predictions)} per series ({time.perf_counter() - start:.1f}s)")
    fingerprint = file_sha256(settings.data)
    cells = ["lstm", "gru"] if settings.cell == "both" else [settings.cell]
    outcomes: list[Outcome] = []
    for cell in cells:
        model, history = train(settings, data, cell)
        if not all(np.isfinite(history.val_loss)):
            raise TrainingError(f"{cell}: training diverged (validation loss not finite); lower --lr")
        predictions = test_forecasts(model, data)
        metrics = global_report(data, predictions, baselines)
        metrics["transform"] = model.transform_choice
        if model.config.quantiles:
            from training import calibrate

            metrics["intervals"] = calibrate.global_interval_report(model, data)
            metrics["calibration"] = model.calibration
        outcome = Outcome(cell, model, history, metrics)
        outcome.record = dict(record)
        outcome.gate = decide("forecast", metrics, settings.allow_worse, settings.gate)
        outcome.plots = {
            "loss.png": lambda p, h=history, c=cell: plots.loss_curves(h, p, f"{c.upper()} loss (weighted MAE)"),
            "mase_by_series.png": lambda p, m=metrics, c=cell: plots.mase_distribution(
                m, p, f"{c.upper()} global model: test MASE per series"
            ),
            "forecast.png": lambda p, pr=predictions, m=metrics, c=cell: plots.series_panels(
                data, pr, baselines, m, p, f"{c.upper()} global model on the test block of six series"
            ),
        }
        outcomes.append(outcome)
        _log(f"{cell}: {history.seconds:.1f}s, best step {history.best_step}, {headline(metrics)}")
        if wide:
            for line in wins_table(metrics):
                _log(f"{cell}: {line}")
        attach_verdict(outcome, None, settings, cell)
    for outcome in outcomes:
        name = f"{settings.name}-{outcome.cell}" if settings.cell == "both" else settings.name
        publish_outcome(outcome, name, settings, data, fingerprint, torch.__version__)
        verdict = "promoted" if outcome.gate["promoted"] else "NOT promoted"
        _log(f"wrote {outcome.path} ({headline(outcome.metrics)}); gate: {verdict}")
    return outcomes


def wins_table(metrics: dict[str, Any]) -> list[str]:
    """Per series (a wide file's columns): the model's test MASE against the best naive baseline's."""
    naive = metrics["best_naive_baseline"]
    rows = []
    wins = 0
    for key, entry in metrics["per_series"].items():
        model, base = entry["streaming"]["mase"], entry.get(naive, {}).get("mase")
        won = base is not None and model < base
        wins += won
        rows.append(f"  {key}: MASE {model:.3f} vs {naive} {base:.3f} -> {'win' if won else 'loss'}")
    return [f"per column (test MASE), wins against {naive}: {wins} of {len(rows)}", *rows]


def series_keys(data: MultiSeriesData) -> list[str]:
    return [s.key for s in data.series]


def find(data: MultiSeriesData, key: str) -> Series:
    return next(s for s in data.series if s.key == key)

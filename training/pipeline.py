"""From resolved settings to published repository entries: load, train, evaluate, export, write.

Everything that can fail on bad input (reading, columns, sizes, training) happens before the
repository is touched; the export and its ONNX-Runtime parity check run inside the temporary
entry directory, so a failed export leaves nothing behind either.

`--cell both` trains an LSTM and a GRU on the same data and split, publishes them as
`<name>-lstm` and `<name>-gru` (separate models, so the service can serve both side by side),
and prints a comparison table. Each cell is published on its own: one whose export fails its
parity check is reported (`Outcome.error`) and the other is still written.

Forecasts are compared with every baseline of training/baselines.py on the same test origins,
and the quality gate (training/gate.py) decides whether each written version is promoted.

Under torchrun (training/distributed.py) every rank loads and trains; only rank 0 computes the
baselines, evaluates, exports and publishes, so one job writes one version per model.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training.configs import model_config
from training.data import (
    ClassifyData,
    ForecastData,
    TrainingError,
    file_sha256,
    load_table,
    prepare_classify,
    prepare_forecast,
    require_columns,
)
from training.gate import decide
from training.publish import Outcome, comparison_table, publish_outcome
from training.settings import RunSettings
from training.verdict import attach_verdict


def _log(settings: RunSettings, message: str) -> None:
    from training import distributed

    distributed.context().say(message)


def _headline(outcome: Outcome, task: str) -> str:
    """One line: the model's test error next to the best baseline's (not just naive)."""
    m = outcome.metrics
    if task == "forecast":
        best = m["best_baseline"]
        text = (
            f"test MAE {m['streaming']['mae']:.4g} (MASE {m['streaming']['mase']:.3f}); "
            f"best baseline {best} MAE {m[best]['mae']:.4g} (MASE {m[best]['mase']:.3f})"
        )
        naive_best = m["best_naive_baseline"]
        if naive_best != best:
            text += f", best naive {naive_best} MAE {m[naive_best]['mae']:.4g}"
        return text
    return f"accuracy {m['model']['accuracy']:.3f} (majority {m['majority']['accuracy']:.3f})"


def _warn_if_still_improving(settings: RunSettings, cell: str, history: Any) -> None:
    if history.val_loss and history.best_epoch == len(history.val_loss) and not history.stopped_early:
        _log(
            settings,
            f"warning: {cell}: the best epoch was the last one ({history.best_epoch}): validation loss was "
            "still falling; more --epochs would probably give a better model",
        )


def train_and_publish(settings: RunSettings) -> list[Outcome]:
    import torch

    from models.recurrent import RecurrentModel
    from training import distributed, loop

    if settings.series_id:  # one global model over many series (training/global_run.py)
        from training.global_run import train_and_publish_global

        return train_and_publish_global(settings)
    ctx = distributed.context()
    path = Path(settings.data)
    frame = load_table(path, settings.max_rows)
    fingerprint = file_sha256(path)

    def report(message: str) -> None:
        _log(settings, f"data: {message}")

    data: ForecastData | ClassifyData
    time_info = None
    season_choice = None
    if settings.task == "forecast":
        from training import seasons as season_finder
        from training.sizing import adapt

        features = settings.features or settings.target
        # Unknown columns first: nothing is sized or reported for a series the file lacks.
        require_columns(frame, list(settings.target), "target")
        require_columns(frame, [f for f in features if f not in settings.target], "feature")
        try:
            frame, time_info = season_finder.read_time(
                frame, settings.time_column, skip={*settings.target, *features}, report=report
            )
        except season_finder.LongFormat as long_format:
            if len(settings.target) != 1 or ctx.enabled:
                raise
            # Several series in the long format given without --series-id: what the data is says
            # which column tells them apart; train them as one global model and say so.
            report(
                f"several series in the long format (one row per {long_format.series_id!r} and "
                f"{long_format.time_column!r}): one global model over them, as --series-id "
                f"{long_format.series_id} would train"
            )
            from training.global_run import train_and_publish_global

            return train_and_publish_global(
                replace(settings, series_id=long_format.series_id, time_column=long_format.time_column)
            )
        if time_info is not None:
            how = "detected" if time_info.detected else "--time-column"
            report(f"time column {time_info.column!r} ({how}): {time_info.frequency}")
        from training import wide

        if wide.is_wide(settings):
            if ctx.enabled:
                raise TrainingError(
                    "several target columns under torchrun: reshape the file to the long format and use --series-id"
                )
            from training.global_run import train_and_publish_global

            long, as_series = wide.to_long(frame, settings, time_info.column if time_info else "", report)
            return train_and_publish_global(as_series, frame=long, wide=list(settings.target))
        settings = adapt(settings, len(frame), report)
        data = prepare_forecast(
            frame,
            settings.target,
            features,
            horizon=settings.horizon,
            window=settings.window,
            val_fraction=settings.val_fraction,
            test_fraction=settings.test_fraction,
            report=report,
            filled_rows=time_info.filled_rows if time_info is not None else (),
        )
        unscored = (
            f" ({data.excluded_test} test origin(s) with a filled reading not scored)" if data.excluded_test else ""
        )
        _log(
            settings,
            f"data: {len(frame)} rows -> {len(data.train)} train / {len(data.val)} validation / "
            f"{len(data.test)} test pairs (chronological){unscored}, {len(features)} feature(s) -> "
            f"{len(data.output_names)} output(s)",
        )
        season_choice = season_finder.choose_seasons(
            data.targets[: data.train_rows, 0],
            time_info,
            setting="given" if settings.season else ("auto" if settings.season_auto else "off"),
            given=settings.season,
        )
        _log(settings, season_choice.describe())
        settings = replace(
            settings,
            season=list(season_choice.seasons),
            time_column=time_info.column if time_info is not None else settings.time_column,
        )
    else:
        data = prepare_classify(
            frame,
            settings.label,
            settings.sequence_id,
            settings.features,
            split_column=settings.split_column or None,
            val_fraction=settings.val_fraction,
            test_fraction=settings.test_fraction,
            seed=settings.seed,
            report=report,
        )
        _log(
            settings,
            f"data: {len(data.train.labels)} train / {len(data.val.labels)} validation / "
            f"{len(data.test.labels)} test sequences, {len(data.feature_names)} feature(s), "
            f"{len(data.classes)} classes",
        )

    if ctx.enabled:
        _check_distributable(settings, data, ctx)
    baselines = None
    times = None if time_info is None else np.round(time_info.seconds * 1e9).astype("int64").astype("datetime64[ns]")
    pending = None
    origins = 0
    if isinstance(data, ForecastData) and ctx.is_main:
        from training import baselines as baseline_models

        started, origins = time.perf_counter(), len(data.test)
        # The statistical baselines of a long series run in a worker process while the network
        # trains (not under torchrun, whose ranks have the cores); collected before evaluation.
        pending = baseline_models.start(
            data,
            data.test,
            settings.season,
            statistical=settings.baselines == "full",
            background=not ctx.enabled,
            report=lambda message: _log(settings, message),
        )

    def collect() -> Any:
        nonlocal baselines, pending
        if pending is not None:
            baselines, pending = pending.result(), None
            assert baselines is not None
            _log(
                settings,
                f"baselines: {', '.join(baselines.predictions)} on {origins} test origins "
                f"({time.perf_counter() - started:.1f}s since they started)",
            )
        return baselines

    device = loop.pick_device()
    cells = ["lstm", "gru"] if settings.cell == "both" else [settings.cell]
    outcomes: list[Outcome] = []
    from training import forecaster_run

    for cell in cells:
        if isinstance(data, ForecastData) and forecaster_run.uses_forecaster(data):
            model, history = forecaster_run.train(settings, data, frame, cell, report)
            if not ctx.is_main:
                _log(settings, f"{cell}: trained {history.steps_run} steps in {history.seconds:.1f}s; rank 0 publishes")
                continue
            outcome = _evaluate_forecast(model, data, settings, history, cell, collect(), times)
            outcome.metrics["transform"] = model.transform_choice
            outcome.record = _time_record(time_info, season_choice)
            _finish(settings, outcomes, outcome, history, model, cell)
            continue
        train_settings = loop.TrainSettings(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            noise=settings.input_noise,
            average=settings.weight_average,
            patience=settings.patience,
            window=settings.window,
            seed=settings.seed,
            progress=not settings.quiet and not ctx.enabled,
        )
        if isinstance(data, ForecastData):
            model, history, shaped, transform, scores = _train_forecast_candidates(
                settings, data, cell, train_settings, device
            )
            if not ctx.is_main:
                _log(settings, f"{cell}: trained in {history.seconds:.1f}s; rank 0 publishes")
                continue
            outcome = _evaluate_forecast(model, shaped, settings, history, cell, collect(), times)
            outcome.metrics["transform"] = {
                "setting": settings.transform,
                "chosen": transform,
                "validation_mae": scores,
                "chosen_by": "lowest validation MAE (streamed, raw units)",
            }
            outcome.record = _time_record(time_info, season_choice)
        else:
            loop.seed_everything(settings.seed, settings.threads)
            model = RecurrentModel(model_config(settings, data, cell)).to(device)
            history = loop.train_classify(model, data, train_settings)
            if not all(np.isfinite(history.val_loss)):
                raise TrainingError(f"{cell}: training diverged (validation loss not finite); lower --lr")
            if not ctx.is_main:
                _log(settings, f"{cell}: trained in {history.seconds:.1f}s; rank 0 publishes")
                continue
            outcome = _evaluate_classify(model, data, history, cell)
        _finish(settings, outcomes, outcome, history, model, cell)

    if not ctx.is_main:
        return outcomes  # nothing: rank 0 publishes
    for outcome in outcomes:
        name = f"{settings.name}-{outcome.cell}" if settings.cell == "both" else settings.name
        try:
            publish_outcome(outcome, name, settings, data, fingerprint, torch.__version__)
        except TrainingError as exc:
            if len(outcomes) == 1:
                raise
            outcome.name, outcome.error = name, str(exc)
            _log(settings, f"{name}: NOT written: {exc}")
            continue
        verdict = "promoted" if outcome.gate["promoted"] else "NOT promoted"
        _log(settings, f"wrote {outcome.path} ({_headline(outcome, settings.task)}); gate: {verdict}")
    if all(o.error for o in outcomes):
        raise TrainingError("; ".join(o.error for o in outcomes))
    if len(outcomes) > 1:
        print(comparison_table(outcomes, settings.task))
    return outcomes


def _check_distributable(settings: RunSettings, data: ForecastData | ClassifyData, ctx: Any) -> None:
    """Refuse, before any training, a batch that cannot give every rank a share."""
    if settings.batch_size < ctx.world_size:
        raise TrainingError(
            f"--batch-size {settings.batch_size} is the global number of streams: it must be at least the "
            f"{ctx.world_size} processes"
        )


def _finish(
    settings: RunSettings, outcomes: list[Outcome], outcome: Outcome, history: Any, model: Any, cell: str
) -> None:
    """Checks and log lines after training one cell, and its quality-gate decision."""
    if not all(np.isfinite(history.val_loss)):
        raise TrainingError(f"{cell}: training diverged (validation loss not finite); lower --lr")
    model.cpu()
    outcome.gate = decide(settings.task, outcome.metrics, settings.allow_worse, settings.gate)
    outcomes.append(outcome)
    best = f"best step {history.best_step}" if hasattr(history, "best_step") else f"best epoch {history.best_epoch}"
    _log(settings, f"{cell}: {history.seconds:.1f}s, {best}, {_headline(outcome, settings.task)}")
    if settings.task == "forecast":
        attach_verdict(outcome, getattr(model, "learned", None), settings, cell)
    if getattr(history, "best_is_last", False):
        _log(settings, f"warning: {cell}: the best checkpoint is the last one: still improving; raise --epochs")
    elif not hasattr(history, "best_step"):
        _warn_if_still_improving(settings, cell, history)


def _time_record(time_info: Any, season_choice: Any) -> dict[str, Any]:
    """The manifest's `time` (column, frequency, period, sorting) and `seasons` (choice, evidence)."""
    return {
        "time": time_info.to_dict() if time_info is not None else None,
        "seasons": season_choice.to_dict() if season_choice is not None else None,
    }


def _train_forecast_candidates(
    settings: RunSettings, data: ForecastData, cell: str, train_settings: Any, device: Any
) -> tuple[Any, Any, ForecastData, str, dict[str, float]]:
    """Train one model per candidate transform; keep the one with the lowest validation MAE."""
    from models.recurrent import RecurrentModel
    from training import loop, transforms

    best: tuple[float, Any, Any, ForecastData, str] | None = None
    scores: dict[str, float] = {}
    for transform in transforms.candidates(settings.transform, data):
        shaped, extra = transforms.prepare(data, transform)
        loop.seed_everything(settings.seed, settings.threads)
        model = RecurrentModel(model_config(settings, shaped, cell, extra)).to(device)
        history = loop.train_forecast(model, shaped, train_settings)
        if not all(np.isfinite(history.val_loss)):
            raise TrainingError(f"{cell}: training diverged (validation loss not finite); lower --lr")
        val_pred = loop.predict_streaming(model, shaped, shaped.val)
        score = float(np.abs(val_pred - shaped.y[shaped.val]).mean())
        scores[transform] = score
        if best is None or score < best[0]:
            best = (score, model, history, shaped, transform)
    assert best is not None
    if len(scores) > 1:
        listing = ", ".join(f"{t} {v:.4g}" for t, v in scores.items())
        chosen = min(scores, key=scores.__getitem__)
        _log(settings, f"{cell}: transform {chosen} chosen on validation MAE ({listing})")
    return best[1], best[2], best[3], best[4], scores


def _evaluate_forecast(
    model: Any,
    data: ForecastData,
    settings: RunSettings,
    history: Any,
    cell: str,
    baselines: Any,
    times: np.ndarray | None,
) -> Outcome:
    from training import evaluate, loop, plots

    if hasattr(model, "spec"):  # history-state forecaster
        from training.forecaster_run import predictions

        made = predictions(model, data, data.test, settings.window)
        windowed, streaming = made["windowed"], made["streaming"]
    else:
        windowed = loop.predict_windowed(model, data, data.test, settings.window)
        streaming = loop.predict_streaming(model, data, data.test)
    metrics = evaluate.forecast_report(data, {"windowed": windowed, "streaming": streaming}, baselines)
    metrics["windowed"]["window"] = settings.window + (model.spec.ring if hasattr(model, "spec") else 0)
    if model.config.quantiles:
        from training import calibrate

        metrics["intervals"] = calibrate.interval_report(model, data, float(evaluate.mase_scale(data)[0]))
        metrics["calibration"] = model.calibration
    if hasattr(model, "spec"):  # the formula the network corrects: the same config, head at zero
        from models.forecaster import Forecaster
        from training.forecast_loop import stream_forecasts

        formula = stream_forecasts(Forecaster(model.config).eval(), data, int(data.test[-1]) + 1, model.start_time)
        metrics["formula"] = evaluate.forecast_metrics(
            formula[data.test], data.y[data.test], evaluate.mase_scale(data), data.horizon
        )
        metrics["formula"]["description"] = model.learned["formula_description"]
    outcome = Outcome(cell, model, history, metrics, data=data)
    shown = plots.baselines_to_draw(metrics)
    outcome.plots = {
        "loss.png": lambda p: plots.loss_curves(history, p, f"{cell.upper()} loss (best epoch {history.best_epoch})"),
        "forecast.png": lambda p: plots.forecast_panels(
            data,
            times,
            {f"{cell} (streaming)": streaming, **{n: baselines.predictions[n] for n in shown}},
            p,
            f"{cell.upper()} on the test split",
        ),
    }
    if data.horizon > 1:
        names = [f"{cell} (streaming)", *shown]
        by_lead = {names[0]: metrics["streaming"]["by_lead"], **{n: metrics[n]["by_lead"] for n in shown}}
        units = "data units, mean over " + ", ".join(data.target_names)
        outcome.plots["error_by_lead.png"] = lambda p: plots.error_by_lead(
            by_lead, p, f"{cell.upper()}: test error by lead time, 1-{data.horizon} steps ahead", units
        )
    return outcome


def _evaluate_classify(model: Any, data: ClassifyData, history: Any, cell: str) -> Outcome:
    from training import evaluate, loop, plots

    pred = loop.predict_classes(model, data.test)
    metrics = evaluate.classify_report(pred, data.test.labels, data.train.labels, data.classes)
    matrix = np.asarray(metrics["confusion_matrix"])
    outcome = Outcome(cell, model, history, metrics)
    outcome.plots = {
        "loss.png": lambda p: plots.loss_curves(history, p, f"{cell.upper()} loss (best epoch {history.best_epoch})"),
        "confusion.png": lambda p: plots.confusion(matrix, data.classes, p, f"{cell.upper()} test confusion matrix"),
    }
    return outcome

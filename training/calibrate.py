"""Probabilistic forecasts: fit the forecaster's quantile head, calibrate it on the validation
block, and score intervals on the test block.

Why in two stages after the point training:
- The point model is trained exactly as without quantiles (training/forecast_loop.py); the
  quantile head (models/forecaster.py) is then fitted on the frozen network's top-layer outputs
  over the training block with the pinball loss. No backpropagation through time, so it takes
  seconds, and asking for quantiles cannot change the point forecasts.
- The network fits its own training block: its in-sample residuals are narrower than its errors
  on new data, so quantiles fitted there under-cover. Split-conformal calibration corrects that
  on data the network never trained on: per lead k and level tau, the shift delta_k,tau is the
  finite-sample tau order statistic of (y - q_tau) / u over the calibration scores (u the lead's
  residual unit, so one shift serves every session's scale), and becomes a graph constant.
  The graph's running maximum keeps the shifted levels monotone.
- The validation block alone is often few origins (30-46 on the short yearly and quarterly
  series: the 2.5 % and 97.5 % order statistics are then the sample's extremes) or one stretch
  of time (a single week in Taylor's day-ahead design, harder than the weeks around it: the
  intervals over-covered the test weeks, 89 % at 80 %). So the scores pool the validation
  origins with every training origin's in-sample score, whose residual around the point is
  first multiplied by the ratio of validation to training mean |residual| (pooled over leads
  and origins: a mean is stable where a tail quantile is not). Validation sets the level
  (in-sample residuals of a network that overfits are narrower, 1.6x on sunspots), the training
  block adds origins and its longer history to the tails. Figures in docs/quality.md.

The robust state update (models/forecast_spec.py: a reading far outside its interval enters the
state as the forecast) is what serving runs, so the readouts the head is fitted and calibrated
on read the readings as the state would take them (`served_segments`), replaced by the model
before calibration (its untrained head's Gaussian band in residual units: a reading beyond
5 x 1.96 = 9.8 training residual units is far); the test scores stream the served graph itself.

Scores (test block, streamed from row 0 as a session sees it): coverage of the central 80 % and
95 % intervals, the mean scaled interval score (MSIS, Gneiting & Raftery 2007 as in M4: width
plus 2/alpha times the miss, divided by the MASE scale of training/evaluate.py), the mean
pinball loss over the levels (scaled the same way) and the share of test readings the anomaly
flags mark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.config import ANOMALY_LEVELS, DEFAULT_QUANTILES

if TYPE_CHECKING:
    from models.forecaster import Forecaster
    from training.data import ForecastData
    from training.forecast_loop import Segment

INTERVALS = {"80": (0.1, 0.9), "95": (0.025, 0.975)}
# Head bias of the constant-width candidate: softplus(-30) is 1e-13, so the offsets vanish and the
# conformal shifts (order statistics, monotone in level) are the quantiles themselves; with
# offsets left in, shifts that fall with the level would be raised (monotone_shift) and widen.
CONSTANT_BIAS = -30.0


def parse_levels(value: str | Sequence[Any] | None) -> list[float]:
    """`--quantiles`: comma-separated levels in (0, 1), or `none` (point forecasts only). Raises
    ValueError naming the problem."""
    if value is None:
        return list(DEFAULT_QUANTILES)
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    parts = [p for p in parts if p]
    if parts in ([], ["none"]):
        return []
    levels = []
    for part in parts:
        try:
            level = float(part)
        except ValueError:
            raise ValueError(f"quantile levels must be numbers in (0, 1) or 'none', got {part!r}") from None
        if not 0.0 < level < 1.0 or not math.isfinite(level):
            raise ValueError(f"quantile levels must be inside (0, 1), got {part}")
        levels.append(level)
    if len(set(levels)) != len(levels):
        raise ValueError(f"quantile levels must be distinct, got {parts}")
    return sorted(levels)


@dataclass
class QuantileSettings:
    steps: int = 400  # full-batch Adam steps on the head
    lr: float = 0.03
    max_origins: int = 20_000  # origins per step (a random subset beyond this)
    seed: int = 0


@dataclass
class Readout:
    """What the heads read at a set of origins, pooled over series: top-layer outputs, point
    forecasts, residual units and targets (raw units)."""

    top: np.ndarray  # [N, hidden]
    point: np.ndarray  # [N, H]
    unit: np.ndarray  # [N, H]
    target: np.ndarray  # [N, H]


def served_segments(model: Forecaster, segments: list[Segment]) -> tuple[list[Segment], int]:
    """The segments with their target readings as the model's state takes them (its robust
    state update, from a fresh session per segment; unchanged for other models), and how many
    readings were replaced."""
    from dataclasses import replace

    import torch

    if not model.robust:
        return segments, 0
    out, replaced = [], 0
    for segment in segments:
        x = torch.from_numpy(segment.x.astype(np.float32))[None]
        with torch.no_grad():
            cleaned = model.cleaned(x, model.init_state(1, start_time=segment.start_time))[0].numpy()
        replaced += int((cleaned != segment.x).any(axis=1).sum())
        out.append(replace(segment, x=cleaned))
    return out, replaced


def readout(model: Forecaster, segments: list[Segment], which: str) -> Readout:
    """Stream every segment from a fresh state (its own phase) up to the end of its `which`
    block ("train": origins from a full ring to the last training origin; "val": the validation
    origins) and keep what the heads read there."""
    import torch

    from models.forecaster import work_units

    tops, points, units, targets = [], [], [], []
    for segment in segments:
        if which == "train":
            origins = np.arange(min(model.spec.ring, segment.last_train), segment.last_train + 1)
        else:
            origins = np.asarray(segment.val)
        if len(origins) == 0:
            continue
        end = int(origins[-1]) + 1
        x = torch.from_numpy(segment.x[:end].astype(np.float32))[None]
        with torch.no_grad():
            point, top, unit, *_ = model.readout(x, model.init_state(1, start_time=segment.start_time))
        unit = unit.expand_as(point)
        tops.append(top[0].numpy()[origins])
        points.append(point[0].numpy()[origins])
        units.append(unit[0].numpy()[origins])
        targets.append(work_units(model.spec, segment.y[origins]))  # the readout's units (logs for a log spec)
    if not tops:
        raise ValueError(f"no {which} origins to fit quantiles on")
    return Readout(
        np.concatenate(tops),
        np.concatenate(points).astype(np.float64),
        np.concatenate(units).astype(np.float64),
        np.concatenate(targets).astype(np.float64),
    )


def quantiles_of(model: Forecaster, data: Readout) -> np.ndarray:
    """[N, H, Q] the graph's quantiles (with its current shifts) from a readout."""
    import torch

    with torch.no_grad():
        q = model.quantiles(
            torch.from_numpy(data.top)[:, None],
            torch.from_numpy(data.point.astype(np.float32))[:, None],
            torch.from_numpy(data.unit.astype(np.float32))[:, None],
        )
    return q[:, 0].numpy().astype(np.float64)


def fit_head(model: Forecaster, data: Readout, settings: QuantileSettings) -> float:
    """Fit the quantile head on a (training) readout with the pinball loss in residual units;
    returns the final loss. Shifts are zero while fitting."""
    import torch

    levels = torch.tensor(model.config.quantiles, dtype=torch.float32)
    top = torch.from_numpy(data.top)[:, None]
    point = torch.from_numpy(data.point.astype(np.float32))[:, None]
    unit = torch.from_numpy(data.unit.astype(np.float32))[:, None]
    target = torch.from_numpy(data.target.astype(np.float32))[:, None]
    head = model.quantile_head
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    n = top.shape[0]
    loss = torch.tensor(float("nan"))
    for _ in range(settings.steps):
        batch = [top, point, unit, target]
        if n > settings.max_origins:
            rows = torch.randperm(n, generator=generator)[: settings.max_origins]
            batch = [t[rows] for t in batch]
        b_top, b_point, b_unit, b_target = batch
        q = model.quantiles(b_top, b_point, b_unit)
        error = (b_target.unsqueeze(-1) - q) / b_unit.unsqueeze(-1)
        loss = torch.maximum(levels * error, (levels - 1.0) * error).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def conformal_shift(levels: Sequence[float], scores: np.ndarray) -> np.ndarray:
    """[H, Q] split-conformal shifts from validation scores [n, H, Q] = (y - q) / u: for an
    upper level the ceil((n + 1) tau)-th smallest score (so at least tau of new readings fall
    below, in exchangeable data), for a lower level the floor((n + 1) tau)-th, clamped to the
    sample's range when n is too small for the level."""
    n = scores.shape[0]
    ordered = np.sort(scores, axis=0)
    shift = np.zeros(scores.shape[1:])
    for j, tau in enumerate(levels):
        rank = math.ceil((n + 1) * tau) if tau >= 0.5 else math.floor((n + 1) * tau)
        shift[:, j] = ordered[min(max(rank, 1), n) - 1, :, j]
    return shift


def _rows(data: Readout, rows: np.ndarray) -> Readout:
    return Readout(data.top[rows], data.point[rows], data.unit[rows], data.target[rows])


def residual_ratio(val: Readout, train: Readout) -> float:
    """Mean |y - point| / u on the validation origins over the same on the training origins
    (every lead pooled); nan when either is empty or the training residuals are all zero."""
    inside = np.abs(train.target - train.point) / train.unit
    outside = np.abs(val.target - val.point) / val.unit
    if inside.size == 0 or outside.size == 0:
        return float("nan")
    below = float(inside.mean())
    return float(outside.mean()) / below if below > 0 and math.isfinite(below) else float("nan")


def calibration_scores(
    raw_val: np.ndarray, val: Readout, raw_train: np.ndarray | None = None, train: Readout | None = None
) -> tuple[np.ndarray, float]:
    """[n, H, Q] conformity scores (y - q) / u for the shifts, and the residual ratio used.

    The validation origins' scores, pooled with the training origins' in-sample ones (given
    `raw_train`, `train`), whose residual around the point is first multiplied by
    `residual_ratio` so the pool has validation's level: score = ratio (y - p) / u - (q - p) / u.
    Without training origins, or without a usable ratio, the validation scores alone."""
    scores = (val.target[..., None] - raw_val) / val.unit[..., None]
    if raw_train is None or train is None:
        return scores, float("nan")
    ratio = residual_ratio(val, train)
    if not math.isfinite(ratio):
        return scores, ratio
    unit = train.unit[..., None]
    inside = ratio * (train.target - train.point)[..., None] / unit - (raw_train - train.point[..., None]) / unit
    return np.concatenate([inside, scores]), ratio


def _cross_fitted_pinball(levels: Sequence[float], raw: np.ndarray, val: Readout) -> float:
    """Mean pinball loss (residual units) of conformally shifted quantiles on the validation
    origins, each half (alternate origins) shifted with the other half's order statistics, so
    no origin scores quantiles calibrated on itself. The training block stays out of this
    comparison: the fitted head is in-sample there, the constant candidate is not."""
    from models.forecaster import monotone_shift  # torch: imported when calibrating

    scores = (val.target[..., None] - raw) / val.unit[..., None]
    tau = np.asarray(levels)
    total, count = 0.0, 0
    for part in (0, 1):
        mine, other = np.arange(part, len(scores), 2), np.arange(1 - part, len(scores), 2)
        if len(mine) == 0 or len(other) == 0:
            continue
        error = scores[mine] - monotone_shift(conformal_shift(levels, scores[other]), levels)  # as installed
        total += float(np.maximum(tau * error, (tau - 1.0) * error).sum())
        count += error.size
    return total / max(count, 1)


def coverage(q: np.ndarray, target: np.ndarray, levels: Sequence[float]) -> dict[str, float]:
    """Share of targets inside each central interval the levels hold (80, 95), and below each
    level, over every origin and lead."""
    out: dict[str, float] = {}
    for name, (lo, hi) in INTERVALS.items():
        if lo in levels and hi in levels:
            inside = (target >= q[..., levels.index(lo)]) & (target <= q[..., levels.index(hi)])
            out[name] = float(inside.mean())
    return out


def _pool(train: Readout, settings: QuantileSettings) -> Readout:
    """The training origins pooled into the calibration scores: all of them, or a seeded random
    `max_origins` of them (many-series models), in their order."""
    n = len(train.target)
    if n <= settings.max_origins:
        return train
    rows = np.sort(np.random.default_rng(settings.seed).choice(n, settings.max_origins, replace=False))
    return _rows(train, rows)


def calibrate(
    model: Forecaster, segments: list[Segment], settings: QuantileSettings | None = None, report: Any = print
) -> dict[str, Any]:
    """Fit the quantile head (training block) and the conformal shifts (validation block, pooled
    with the rescaled training block: `calibration_scores`) of `model` in place; returns what
    the manifest records."""
    settings = settings or QuantileSettings()
    levels = list(model.config.quantiles)
    model.eval()
    model.set_quantile_shift(np.zeros((model.spec.horizon, len(levels))))
    segments, replaced = served_segments(model, segments)
    if model.robust:
        rows = sum(len(s.x) for s in segments)
        report(f"quantiles: the robust state update replaces {replaced} of {rows} readings the readouts stream")
    train = readout(model, segments, "train")
    loss = fit_head(model, train, settings)
    val = readout(model, segments, "val")
    # Two candidates, each calibrated the same way: the fitted head (widths that follow the
    # state), and constant offsets per lead and level (the head's weights zeroed: conformal
    # quantiles of the residual around the point, in residual units). Where the state says
    # nothing about the spread, the varying widths only add noise; the one with the lower
    # cross-fitted validation pinball loss (validation-only shifts) is kept, then calibrated on
    # the pooled scores.
    import torch

    pool = _pool(train, settings)
    fitted = {k: v.detach().clone() for k, v in model.quantile_head.state_dict().items()}
    varying = _cross_fitted_pinball(levels, quantiles_of(model, val), val)
    # The head is fitted on the training origins: uncalibrated, it should cover them about
    # nominally. Much more says it is too wide before calibration (the shifts then start from a
    # biased head); much less, that its fit did not converge.
    in_sample = coverage(quantiles_of(model, pool), pool.target, levels)
    with torch.no_grad():  # no offsets at all: the shifts alone are the residual's quantiles
        model.quantile_head.weight.zero_()
        model.quantile_head.bias.fill_(CONSTANT_BIAS)
    constant = _cross_fitted_pinball(levels, quantiles_of(model, val), val)
    chosen = "constant" if constant < varying else "state"
    if chosen == "state":
        model.quantile_head.load_state_dict(fitted)
    raw, raw_train = quantiles_of(model, val), quantiles_of(model, pool)
    scores, ratio = calibration_scores(raw, val, raw_train, pool)
    shift = conformal_shift(levels, scores)
    model.set_quantile_shift(shift)
    calibrated = quantiles_of(model, val)
    # The reference the quantiles must beat: split-conformal intervals around the point forecast
    # (|y - p| / u order statistics per lead), fitted on the same validation origins.
    spread = np.abs(val.target - val.point) / val.unit
    point_conformal = {
        name: conformal_shift([hi - lo], spread[..., None])[:, 0].round(6).tolist()
        for name, (lo, hi) in INTERVALS.items()
    }
    before, after = coverage(raw, val.target, levels), coverage(calibrated, val.target, levels)
    widths = "widths from the state" if chosen == "state" else "constant widths per lead"
    report(
        f"quantiles: {widths} (cross-fitted validation pinball {varying:.4g} from the state, {constant:.4g} constant)"
    )
    if before:
        text = ", ".join(f"{k} % {before[k]:.3f} -> {after[k]:.3f}" for k in before)
        report(f"quantiles: validation coverage before -> after calibration: {text} ({len(val.target)} origins)")
        text = ", ".join(f"{k} % {in_sample[k]:.3f}" for k in in_sample)
        report(f"quantiles: the fitted head's uncalibrated coverage of its training origins: {text}")
    if math.isfinite(ratio):
        report(
            f"quantiles: shifts from {len(val.target)} validation and {len(scores) - len(val.target)} training "
            f"origins (training residuals x {ratio:.3g}, validation's mean |residual| over training's)"
        )
    return {
        "levels": levels,
        "method": "quantile head fitted with the pinball loss on the training block (network frozen); "
        "split-conformal shift per lead and level on the validation block pooled with the training "
        "block's in-sample scores rescaled to validation's mean |residual|, in residual units",
        "widths": chosen,
        "validation_pinball": {"state": varying, "constant": constant},
        "train_origins": len(train.target),
        "validation_origins": len(val.target),
        # the shifts' scores: the validation origins and (when the ratio is finite) the pooled
        # training origins, their residuals times the validation/training residual ratio
        "calibration_origins": len(scores),
        "residual_ratio": round(ratio, 6) if math.isfinite(ratio) else None,
        "train_pinball": loss,
        "replaced_readings": replaced,  # by the robust state update, in the streams read out
        "shift": np.asarray(model.spec.quantile_shift).round(6).tolist(),  # as installed: monotone in level
        "training_coverage_before": in_sample,  # the fitted head's, whichever widths are kept
        "validation_coverage_before": before,
        "validation_coverage_after": after,
        "point_conformal_half_width": point_conformal,
    }


# ------------------------------------------------------------------------------ test scores


def point_conformal_quantiles(
    point: np.ndarray, unit: np.ndarray, calibration: dict[str, Any], log: bool = False
) -> np.ndarray:
    """[N, H, 4] the 2.5/10/90/97.5 % bounds of split-conformal intervals around the point
    forecasts [N, H] (half-widths from `calibrate`, in residual units [N, H] or [H]); point and
    unit as the readout gives them, so in logs for a log model (`log`: exp() back to raw)."""
    half = calibration["point_conformal_half_width"]
    h95, h80 = (np.asarray(half[name]) * unit for name in ("95", "80"))
    bounds = np.stack([point - h95, point - h80, point + h80, point + h95], axis=-1)
    return np.exp(bounds) if log else bounds


def interval_scores(q: np.ndarray, target: np.ndarray, levels: Sequence[float], scale: float) -> dict[str, Any]:
    """Coverage, MSIS (95 %) and mean pinball (both divided by `scale`) of quantiles [N, H, Q]
    against targets [N, H]; overall and by lead."""
    levels = list(levels)
    tau = np.asarray(levels)
    error = target[..., None] - q
    pinball = np.maximum(tau * error, (tau - 1.0) * error) / scale  # [N, H, Q]
    out: dict[str, Any] = {
        "coverage": coverage(q, target, levels),
        "pinball": float(pinball.mean()),
        "below": {repr(t): float((target <= q[..., j]).mean()) for j, t in enumerate(levels)},
    }
    horizon = target.shape[1]
    by_lead: dict[str, list[float]] = {"pinball": [float(pinball[:, k].mean()) for k in range(horizon)]}
    for name, (lo, hi) in INTERVALS.items():
        if lo in levels and hi in levels:
            low, high = q[..., levels.index(lo)], q[..., levels.index(hi)]
            inside = (target >= low) & (target <= high)
            by_lead[f"coverage_{name}"] = [float(inside[:, k].mean()) for k in range(horizon)]
            if name == "95":
                alpha = 1.0 - (hi - lo)
                msis = (high - low) + 2.0 / alpha * (
                    (low - target) * (target < low) + (target - high) * (target > high)
                )
                out["msis"] = float(msis.mean() / scale)
                by_lead["msis"] = [float(msis[:, k].mean() / scale) for k in range(horizon)]
    out["by_lead"] = by_lead
    return out


def stream_extras(model: Forecaster, data: ForecastData, end: int, start_time: float | None) -> dict[str, np.ndarray]:
    """The graph's extra outputs at origins 0..end-1 from one fresh session (phase known):
    quantiles [end, H, Q] and, with the anomaly levels, anomaly rows [end, 4]; and the point
    forecasts and residual units [end, H] in the readout's units (logs for a log model)."""
    import torch

    x = torch.from_numpy(data.features[:end].astype(np.float32))[None]
    state = model.init_state(1, start_time=start_time)
    with torch.no_grad():
        _, _, extras = model.graph_outputs(x, state)
        point, _, unit, *_ = model.readout(model.cleaned(x, state), state)  # the served state's
    made = {name: e[0].numpy().astype(np.float64) for name, e in zip(model.config.extra_outputs, extras, strict=True)}
    made["point"] = point[0].numpy().astype(np.float64)
    made["unit"] = unit.expand_as(point)[0].numpy().astype(np.float64)
    return made


def interval_report(model: Forecaster, data: ForecastData, scale: float) -> dict[str, Any]:
    """Interval scores on the test origins, and the share of test readings flagged (a reading
    t is flagged against the interval forecast at t - 1, so test readings are rows test+1)."""
    pairs = data.test
    made = stream_extras(model, data, int(pairs[-1]) + 2, model.start_time)
    q = made["quantiles"][pairs]
    report = interval_scores(q, data.y[pairs], model.config.quantiles, scale)
    report["scale"] = "in-sample MAE of the one-step naive forecast on the training block (as MASE)"
    if getattr(model, "calibration", None):
        bounds = point_conformal_quantiles(made["point"][pairs], made["unit"][pairs], model.calibration, model.spec.log)
        reference = interval_scores(bounds, data.y[pairs], ANOMALY_LEVELS, scale)
        report["point_conformal"] = {k: reference[k] for k in ("coverage", "msis")}
    if "anomaly" in made:
        rows = made["anomaly"][pairs + 1]
        report["flagged"] = {"outside_80": float(rows[:, 1].mean()), "outside_95": float(rows[:, 2].mean())}
    return report


def global_interval_report(model: Forecaster, data: Any) -> dict[str, Any]:
    """`interval_report` pooled over every series of a global model (training/series.py), each
    series' quantiles and targets divided by its own MASE scale first."""
    from training.evaluate import mase_scale

    quantiles, targets, flagged = [], [], []
    for series in data.series:
        pairs = series.data.test
        made = stream_extras(model, series.data, int(pairs[-1]) + 2, series.start_time)
        scale = float(mase_scale(series.data)[0])
        quantiles.append(made["quantiles"][pairs] / scale)
        targets.append(series.data.y[pairs] / scale)
        if "anomaly" in made:
            flagged.append(made["anomaly"][pairs + 1])
    report = interval_scores(np.concatenate(quantiles), np.concatenate(targets), model.config.quantiles, 1.0)
    report["scale"] = "each series' in-sample one-step naive MAE on its training block (as MASE); pooled"
    if flagged:
        rows = np.concatenate(flagged)
        report["flagged"] = {"outside_80": float(rows[:, 1].mean()), "outside_95": float(rows[:, 2].mean())}
    return report


__all__ = ["ANOMALY_LEVELS", "DEFAULT_QUANTILES", "calibrate", "interval_report", "parse_levels"]

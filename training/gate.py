"""The quality gate: a version that does not beat the simplest baselines is not promoted.

Forecasting: the model's streaming test MAE (the numbers the service would produce) must be
strictly lower than the best of naive and every seasonal naive on the same test origins (a
global model over many series: its mean per-series MASE, `metrics["gate_metric"]`, and it must
be better on at least half of the series, `metrics["beats"]`); with
`--gate statistical` also lower than the best statistical baseline (AutoETS, AutoARIMA, MSTL).
Classification: test accuracy must be strictly higher than always predicting the training
split's majority class.

The decision is written, identically, into the version's manifest (`gate`) and into the ONNX
file's metadata (`seqserve.gate`), so the service can read it from either. Shape (the shared
contract with the service):

    {"promoted": bool, "reason": str, "metric": str, "model": float,
     "best_baseline": str, "best_baseline_value": float}

A version is still written when it fails the gate (it can be pinned explicitly and inspected);
the service's default version is the highest promoted one. `--allow-worse` promotes it anyway
and says so in `reason`.
"""

from __future__ import annotations

import json
from typing import Any

GATE_KEY = "seqserve.gate"
# `seqserve train` exits with this code when a version was written but not promoted.
EXIT_NOT_PROMOTED = 3
TIE = 1e-5  # relative: errors closer than this are a tie (the graph computes in float32)
MIN_SHARE_BEATEN = 0.5  # many series: the share of series the model must beat the best naive baseline on


def decide(task: str, metrics: dict[str, Any], allow_worse: bool = False, gate: str = "naive") -> dict[str, Any]:
    """The gate record for one trained model from its test metrics. `gate` "statistical"
    (`--gate statistical`, forecasting) also requires beating the best statistical baseline."""
    share: float | None = None
    if task == "forecast":
        # One series: MAE. A global model over many series: mean MASE over the series
        # (`gate_metric`), since MAEs of series in different units do not add up.
        metric = str(metrics.get("gate_metric", "mae"))
        model = float(metrics["streaming"][metric])
        baseline = str(metrics["best_naive_baseline"])
        value = float(metrics[baseline][metric])
        # Strictly better beyond float32 rounding: a version serving a formula equal to the
        # baseline (e.g. the last value) must not pass as beating it.
        better = model < value * (1.0 - TIE)
        label = "MAE" if metric == "mae" else "mean MASE over series"
        comparison = f"streaming test {label} {model:.6g} {'<' if better else '>='} {baseline} {value:.6g}"
        if "beats" in metrics and baseline in metrics["beats"]:
            # Many series: the model must also win on at least MIN_SHARE_BEATEN of them, so a
            # mean carried by a few series cannot hide losses on most of the others.
            share = float(metrics["beats"][baseline])
            wins = share >= MIN_SHARE_BEATEN
            comparison += f"; better than {baseline} on {share:.0%} of series ({'>=' if wins else '<'} "
            comparison += f"{MIN_SHARE_BEATEN:.0%})"
            better = better and wins
        if gate == "statistical":
            statistical = [n for n in metrics.get("baselines", {}) if n != "naive" and not n.startswith("seasonal_")]
            if not statistical:
                better = False
                comparison += "; --gate statistical, but no statistical baseline was fitted"
            else:
                stat = min(statistical, key=lambda n: float(metrics[n][metric]))
                stat_value = float(metrics[stat][metric])
                beats = model < stat_value
                comparison += f"; {label} {model:.6g} {'<' if beats else '>='} {stat} {stat_value:.6g}"
                better = better and beats
                if stat_value < value:  # the record names the stronger of the two
                    baseline, value = stat, stat_value
    else:
        metric = "accuracy"
        model = float(metrics["model"]["accuracy"])
        baseline = "majority"
        value = float(metrics["majority"]["accuracy"])
        better = model > value
        comparison = f"test accuracy {model:.4f} {'>' if better else '<='} majority class {value:.4f}"
    what = "the best naive and statistical baselines" if gate == "statistical" else "the best naive baseline"
    # A tie with the naive baseline it is gated against (one series): the version serves that
    # baseline's forecast (validation chose the last-value formula, the network added nothing),
    # so a retrain with the same data cannot pass; the reason says so instead of "retrain".
    tie = (
        task == "forecast"
        and not better
        and share is None
        and str(metrics["best_naive_baseline"]) == baseline
        and abs(model - value) <= abs(value) * TIE
    )
    if tie:
        comparison += (
            f" (a tie: the network learned nothing beyond {baseline} on this series, the baseline it is gated "
            f"against; serving this version serves the {baseline} forecast)"
        )
    if better:
        reason = f"beats {what}: {comparison}"
    elif allow_worse:
        reason = f"promoted by --allow-worse although it does not beat {what}: {comparison}"
    else:
        reason = f"does not beat {what}: {comparison}"
    return {
        "promoted": bool(better or allow_worse),
        "reason": reason,
        "metric": metric,
        "model": model,
        "best_baseline": baseline,
        "best_baseline_value": value,
        **({"share_beaten": share} if share is not None else {}),
        **({"ties_baseline": True} if tie else {}),
    }


def to_metadata(gate: dict[str, Any]) -> str:
    """The `seqserve.gate` ONNX metadata value: the same JSON object as the manifest's `gate`."""
    return json.dumps(gate, sort_keys=True)

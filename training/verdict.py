"""What a trained forecaster learned, in words and figures: the manifest's `verdict`.

A forecaster starts as a formula (its baseline transform, models/forecast_spec.py: the training
mean, the last value, the seasonal naive, or last season plus this season's change) and the
network corrects it. The verdict says whether the correction is worth anything, so nobody takes
a served formula for a trained network:

- "the network improved on its baseline (<formula>) by X % on test", or
- "the network did not improve on its baseline; this version serves the formula (<formula>)"
  (training/forecaster_run.py restores the zero head when the network's validation advantage is
  not significant, training/choice.py), or
- "the network improved on its baseline on validation but not on test: X % worse than ...".

And how it compares with the baselines fitted next to it: `ratio_to_best_baseline` (model error
over the best baseline's on the same test origins: below 1 is better), the best statistical
model and its ratio, and a `warning` when a statistical baseline beats the model.

Manifest shape (`verdict`, top level; also copied into `gate` as `verdict` (the text),
`ratio_to_best_baseline` and the baseline that ratio is against, `ratio_baseline` and
`ratio_baseline_value`, so `seqserve models` and the ONNX metadata carry them; the gate's own
`best_baseline` is the one it was decided against, often a naive one, so the ratio names its own):

    {"text": str, "learned": bool | None, "serves_formula": bool | None,
     "formula": str | None, "formula_description": str | None,
     "metric": "mae" | "mase", "model": float, "formula_value": float | None,
     "improvement_pct": float | None,
     "best_baseline": str, "best_baseline_value": float, "ratio_to_best_baseline": float,
     "best_statistical": str | None, "best_statistical_value": float | None,
     "ratio_to_best_statistical": float | None, "warning": str | None,
     "validation_choice": dict | None}

`validation_choice` is training/choice.py's evidence for serving the network or the formula
(gain, origins, HLN-DM and sign-test p-values, and its sentence in `text`); None where training
did not compare them (the network never moved, or not a forecaster).
"""

from __future__ import annotations

from typing import Any


def is_naive(name: str) -> bool:
    return name == "naive" or name.startswith("seasonal_naive_")


def _ratio(model: float, baseline: float | None) -> float | None:
    if baseline is None or baseline <= 0:
        return None
    return round(model / baseline, 4)


def forecast_verdict(metrics: dict[str, Any], learned: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict from test metrics (`streaming` and every baseline) and, for a forecaster, what
    training found (`learned`, training/forecaster_run.py) with the formula's test metrics in
    `metrics["formula"]`."""
    metric = str(metrics.get("gate_metric", "mae"))
    model = float(metrics["streaming"][metric])
    names = list(metrics.get("baselines", {}))
    best = min(names, key=lambda n: metrics[n][metric])
    statistical = [n for n in names if not is_naive(n)]
    best_stat = min(statistical, key=lambda n: metrics[n][metric]) if statistical else None
    best_stat_value = float(metrics[best_stat][metric]) if best_stat else None
    label = "MAE" if metric == "mae" else "mean MASE"
    formula = metrics.get("formula")
    out: dict[str, Any] = {
        "learned": None,
        "serves_formula": None,
        "formula": None,
        "formula_description": None,
        "metric": metric,
        "model": model,
        "formula_value": None,
        "improvement_pct": None,
        "validation_choice": (learned or {}).get("evidence"),
    }
    if learned is not None and formula is not None:
        formula_value = float(formula[metric])
        improvement = 100.0 * (1.0 - model / formula_value) if formula_value > 0 else 0.0
        description = str(learned["formula_description"])
        if learned["serves_formula"]:
            text = f"the network did not improve on its baseline; this version serves the formula ({description})"
            learned_flag = False
        elif improvement > 0:
            text = f"the network improved on its baseline ({description}) by {improvement:.1f} % on test"
            learned_flag = True
        else:
            text = (
                f"the network improved on its baseline ({description}) on validation but not on test: "
                f"{-improvement:.1f} % worse"
            )
            learned_flag = False
        out.update(
            learned=learned_flag,
            serves_formula=bool(learned["serves_formula"]),
            formula=learned["formula"],
            formula_description=description,
            formula_value=formula_value,
            improvement_pct=round(improvement, 2),
        )
    else:
        naive = str(metrics["best_naive_baseline"])
        value = float(metrics[naive][metric])
        change = 100.0 * (1.0 - model / value) if value > 0 else 0.0
        better = "better" if change > 0 else "worse"
        text = f"the model is {abs(change):.1f} % {better} than its best naive baseline ({naive}) on test"
    warning = None
    if best_stat is not None and best_stat_value is not None and best_stat_value < model:
        warning = (
            f"the statistical baseline {best_stat} beats the model on test: {label} {best_stat_value:.4g} "
            f"against {model:.4g} (ratio {model / best_stat_value:.3f})"
        )
    out.update(
        text=text,
        best_baseline=best,
        best_baseline_value=float(metrics[best][metric]),
        ratio_to_best_baseline=_ratio(model, float(metrics[best][metric])),
        best_statistical=best_stat,
        best_statistical_value=best_stat_value,
        ratio_to_best_statistical=_ratio(model, best_stat_value),
        warning=warning,
    )
    return out


def lines(verdict: dict[str, Any]) -> list[str]:
    """What the CLI prints: the verdict, the ratio to the best baseline, the warning if any."""
    out = [f"verdict: {verdict['text']}"]
    evidence = verdict.get("validation_choice")
    if evidence:
        out.append(f"validation: {evidence['text']}")
    ratio = verdict.get("ratio_to_best_baseline")
    if ratio is not None:
        out.append(f"ratio to the best baseline ({verdict['best_baseline']}): {ratio:.3f} ({verdict['metric']})")
    if verdict.get("warning"):
        out.append(f"warning: {verdict['warning']}")
    return out


def attach_verdict(outcome: Any, learned: dict[str, Any] | None, settings: Any, cell: str) -> None:
    """The verdict in words (training/verdict.py): printed, in the manifest (`verdict`) and, as
    text and ratio, in the gate record. The ratio is against the best of every baseline, which is
    not the gate's `best_baseline` (the best naive one) when a statistical model is better, so the
    gate record names the ratio's baseline and value next to it: each pair of fields agrees."""
    from training import distributed

    verdict = forecast_verdict(outcome.metrics, learned)
    outcome.record["verdict"] = verdict
    outcome.gate["verdict"] = verdict["text"]
    outcome.gate["ratio_to_best_baseline"] = verdict["ratio_to_best_baseline"]
    outcome.gate["ratio_baseline"] = verdict["best_baseline"]
    outcome.gate["ratio_baseline_value"] = verdict["best_baseline_value"]
    for line in lines(verdict):
        distributed.context().say(f"{cell}: {line}")

"""Whether the trained network replaces the formula it corrects: a choice that stays honest when
the validation block has only a few origins.

A forecaster is its formula (training/forecaster_run.py: the baseline transform chosen on
validation) plus a network correction; with its head at zero it answers exactly the formula. The
network is kept only when its validation advantage is evidence rather than noise. The validation
origins also picked the network's checkpoint (the best of many evaluations), so its validation
gain is optimistic, and on a short series a few origins can carry the whole mean: on a 150-row
heart-rate series, three of 22 origins gave 60 % of a 34 % "gain" that was 30 % worse than naive on
test. So the network must pass, on the per-origin loss differences d_t = |formula error| -
|network error| (averaged over the leads of each origin), all of:

- a material gain: validation MAE lowered by at least MIN_GAIN;
- the mean: the Diebold-Mariano statistic with Harvey, Leybourne and Newbold's small-sample
  correction (autocovariances up to lag h-1 for h-step forecasts, scaled by
  sqrt((n + 1 - 2h + h(h-1)/n) / n), referred to Student's t with n-1 degrees of freedom) at least
  MIN_DM (2.5: above the usual 2, since the checkpoint was the best of many on these origins);
- the typical origin: a one-sided sign test that the network is better at more than half of the
  origins, p < SIGN_LEVEL. It is what a handful of large wins cannot fake, and on hundreds of
  origins a real improvement passes it by a wide margin (electricity, co2 and sunspots keep their
  choice).

Otherwise the simpler candidate, the formula, is served. The evidence is returned in words and
figures for the CLI and the manifest (`learned.evidence`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_GAIN = 0.02  # validation MAE lowered by at least 2 %
MIN_DM = 2.5  # HLN-corrected Diebold-Mariano statistic (the checkpoint was chosen on these origins)
SIGN_LEVEL = 0.05  # one-sided sign test: the network better at more than half of the origins


def per_origin(errors: np.ndarray, origins: int) -> np.ndarray:
    """Absolute errors flattened origin-major ([origins, leads x targets] raveled) -> one mean per origin."""
    errors = np.asarray(errors, dtype=np.float64)
    if origins <= 0 or errors.size % origins:
        return errors.ravel()
    return errors.reshape(origins, -1).mean(axis=1)


def hln_dm(diff: np.ndarray, horizon: int = 1) -> tuple[float, float]:
    """(statistic, one-sided p) of the Diebold-Mariano test that the mean of `diff` is above zero,
    with the Harvey-Leybourne-Newbold small-sample correction; (0, 1) below 2 origins, (inf, 0)
    for a constant positive difference."""
    from scipy import stats

    d = np.asarray(diff, dtype=np.float64)
    n = d.size
    if n < 2:
        return 0.0, 1.0
    mean = float(d.mean())
    centred = d - mean
    h = max(1, min(int(horizon), n - 1))
    var = float(centred @ centred) / n
    for k in range(1, h):
        var += 2.0 * float(centred[k:] @ centred[:-k]) / n
    if var <= 0:  # long-run variance estimate not positive: the plain variance
        var = float(centred @ centred) / n
    if var <= 1e-24:
        return (math.inf, 0.0) if mean > 0 else (0.0, 1.0)
    dm = mean / math.sqrt(var / n)
    stat = dm * math.sqrt(max(n + 1 - 2 * h + h * (h - 1) / n, 1.0) / n)
    return float(stat), float(stats.t.sf(stat, n - 1))


def sign_p(diff: np.ndarray) -> tuple[int, int, float]:
    """(wins, origins that differ, one-sided p) of the sign test that the network is better at
    more than half of the origins; ties are left out."""
    d = np.asarray(diff, dtype=np.float64)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    n = wins + losses
    if n == 0:
        return 0, 0, 1.0
    p = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2.0**n
    return wins, n, float(min(p, 1.0))


def network_choice(
    formula_err: np.ndarray, model_err: np.ndarray, origins: int, horizon: int = 1, best_step: int = 1
) -> dict[str, Any]:
    """Whether the network (errors `model_err`) replaces its formula (`formula_err`), both the
    flattened validation errors of `origins` origins; `best_step` 0 means the network never moved.
    Returns {"network": bool, "text": str, and the figures}."""
    formula = per_origin(formula_err, origins)
    model = per_origin(model_err, origins)
    formula_mae, model_mae = float(formula.mean()), float(model.mean())
    gain = 1.0 - model_mae / formula_mae if formula_mae > 0 else 0.0
    diff = formula - model
    dm, dm_p = hln_dm(diff, horizon)
    wins, differ, sign = sign_p(diff)
    reasons = []
    if best_step == 0:
        reasons.append("its best checkpoint is step 0")
    if gain < MIN_GAIN:
        reasons.append(f"gain below {100 * MIN_GAIN:.0f} %")
    if dm < MIN_DM:
        reasons.append(f"DM below {MIN_DM}")
    if sign >= SIGN_LEVEL:
        reasons.append(f"sign test p >= {SIGN_LEVEL}")
    network = not reasons
    better = f"{100 * gain:.0f} % better" if gain >= 0 else f"{-100 * gain:.0f} % worse"
    outcome = "significant, serving the network"
    if not network:
        outcome = f"not significant ({'; '.join(reasons)}), serving the formula"
    text = (
        f"the network's best checkpoint is step 0: it never improved on the formula on {diff.size} validation "
        "origins, serving the formula"
    )
    if best_step != 0:
        text = (
            f"network {better} than the formula on {diff.size} validation origins (better at {wins} of {differ}; "
            f"HLN-DM {dm:.2f}, p = {dm_p:.2g}; sign test p = {sign:.2g}): {outcome}"
        )
    return {
        "network": network,
        "text": text,
        "origins": int(diff.size),
        "formula_mae": formula_mae,
        "network_mae": model_mae,
        "gain": round(gain, 6),
        "dm": round(dm, 4) if math.isfinite(dm) else None,
        "dm_p": dm_p,
        "wins": wins,
        "differ": differ,
        "sign_p": sign,
        "min_gain": MIN_GAIN,
        "min_dm": MIN_DM,
        "sign_level": SIGN_LEVEL,
    }

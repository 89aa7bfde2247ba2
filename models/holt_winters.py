"""Holt-Winters exponential smoothing with any number of seasons (Taylor 2003), in plain NumPy.

The baseline formula of the "holt_winters" forecaster transforms (models/forecast_spec.py):
a level and one ring of seasonal components per season, carried from reading to reading in a
state, plus Taylor's first-order autoregressive adjustment on the one-step error. With seasons
(48, 336) it is Taylor's double-seasonal Holt-Winters; with one season it is Holt-Winters
without trend; with none it is simple exponential smoothing (with the AR adjustment).

One reading y_t at a time, `old_j` the component season j holds for time t (written one season
ago), additive (`multiplicative` False) or multiplicative seasons:

    forecast   f_t = l_{t-1} + sum_j old_j                  (l_{t-1} x prod_j old_j)
    error      e_t = y_t - f_t
    level      l_t = a (y_t - sum_j old_j) + (1 - a) l_{t-1}        (a y_t / prod_j old_j + ...)
    season j   c_t = g_j (y_t - l_t - sum_{i!=j} old_i) + (1 - g_j) old_j
                                                    (g_j y_t / (l_t prod_{i!=j} old_i) + ...)
    lead k     yhat_{t+k} = l_t + sum_j c_{t+k-m s_j}  (l_t x prod_j ...)  + phi^k e_t

The state is one vector: the level, then each season's ring of s_j components, oldest first
(the last slot is the component just written). Nothing is smoothed until the longest season L
(1 without seasons) has been read: the reading that completes it initialises the state from
those L readings (`initial`: the level is their mean, each season's components are the mean
deviation (ratio) of its phase, shortest season first, the longest taking what is left), with
error 0. Before that the forecaster falls back to its seasonal naive formula.

The smoothing constants a, g_j and phi are fitted on the training block by minimising the
squared one-step error after the AR adjustment, e_t - phi e_{t-1} (`fit`), as Taylor did, and
then run forward without refitting. Divisions (multiplicative seasons) are floored at EPS
(components) and EPS x the training std (levels), so odd readings cannot make them infinite.

This module is the formula's specification and the NumPy reference's implementation; the torch
graph (models/forecaster.py) computes the same with its own code, and tests compare them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPS = 1e-6
PHI_LIMIT = 0.99


@dataclass(frozen=True)
class Smoothing:
    """A fitted Holt-Winters formula: seasons (ascending), the kind of seasons and constants."""

    seasons: tuple[int, ...]
    multiplicative: bool
    alpha: float
    gamma: tuple[float, ...]  # one per season
    phi: float
    unit: float = 1.0  # the training std: floors the level-sized divisors (EPS x unit)

    @property
    def span(self) -> int:
        """Readings the state is initialised from: the longest season (1 without seasons)."""
        return self.seasons[-1] if self.seasons else 1

    @property
    def width(self) -> int:
        """Length of the state vector: the level and every season's ring."""
        return 1 + sum(self.seasons)


def season_slots(seasons: Sequence[int], span: int) -> list[np.ndarray]:
    """For each season, the ring slot of every position i of a `span`-reading window ending at
    the current reading: slot s - 1 holds the current time's component, so position i (time
    t - (span - 1 - i)) maps to slot (i - span) mod s."""
    positions = np.arange(span)
    return [(positions - span) % s for s in seasons]


def initial(window: np.ndarray, seasons: Sequence[int], multiplicative: bool, unit: float = 1.0) -> np.ndarray:
    """The state [width] from the first `span` readings (oldest first): level = their mean;
    shortest season first, each season's component of a slot is the mean deviation (ratio) of
    the readings in that slot from what the level and the shorter seasons explain."""
    window = np.asarray(window, dtype=np.float64)
    level = float(window.mean())
    rest = window / max(level, EPS * unit) if multiplicative else window - level
    parts = [np.array([level])]
    for s, slots in zip(seasons, season_slots(seasons, len(window)), strict=True):
        sums = np.bincount(slots, weights=rest, minlength=s)
        counts = np.bincount(slots, minlength=s)
        comp = sums / np.maximum(counts, 1)
        if multiplicative:
            comp = np.where(counts > 0, comp, 1.0)
            rest = rest / np.maximum(comp[slots], EPS)
        else:
            rest = rest - comp[slots]
        parts.append(comp)
    return np.concatenate(parts)


def step(state: np.ndarray, y: float, model: Smoothing) -> tuple[np.ndarray, float]:
    """(the state after reading y, the one-step error e_t) from an initialised state."""
    seasons = model.seasons
    level = float(state[0])
    offsets = np.cumsum([1, *seasons])[:-1]
    old = np.array([state[o] for o in offsets])  # each ring's oldest slot: this time's component
    if model.multiplicative:
        together = float(np.prod(old))
        e = y - level * together
        new_level = model.alpha * y / max(together, EPS) + (1 - model.alpha) * level
        new = [
            g * y / max(new_level * float(np.prod(np.delete(old, j))), EPS * model.unit) + (1 - g) * old[j]
            for j, g in enumerate(model.gamma)
        ]
    else:
        together = float(old.sum())
        e = y - level - together
        new_level = model.alpha * (y - together) + (1 - model.alpha) * level
        new = [g * (y - new_level - (together - old[j])) + (1 - g) * old[j] for j, g in enumerate(model.gamma)]
    out = np.empty_like(state, dtype=np.float64)
    out[0] = new_level
    for j, (o, s) in enumerate(zip(offsets, seasons, strict=True)):
        out[o : o + s - 1] = state[o + 1 : o + s]
        out[o + s - 1] = new[j]
    return out, float(e)


def forecast(state: np.ndarray, e: float, horizon: int, model: Smoothing) -> np.ndarray:
    """[horizon] forecasts of leads 1..horizon from the state after a reading and its error."""
    leads = np.arange(1, horizon + 1)
    value = np.full(horizon, float(state[0]))
    offset = 1
    for s in model.seasons:
        comp = state[offset + (leads - 1) % s]
        value = value * comp if model.multiplicative else value + comp
        offset += s
    out: np.ndarray = value + model.phi**leads * e
    return out


def one_step_errors(y: np.ndarray, model: Smoothing) -> np.ndarray:
    """The one-step errors e_t of a series read from its first reading, for t >= span
    (before the AR adjustment); empty when the series is not longer than `span`. The same
    recursion as `step`, written with circular Python lists: fitting calls it hundreds of times."""
    y = np.asarray(y, dtype=np.float64)
    span = model.span
    if len(y) <= span:
        return np.zeros(0)
    state = initial(y[:span], model.seasons, model.multiplicative, model.unit)
    level = float(state[0])
    rings: list[list[float]] = []
    offset = 1
    for s in model.seasons:
        rings.append([float(v) for v in state[offset : offset + s]])
        offset += s
    heads = [0] * len(rings)  # index of each ring's oldest slot
    alpha, gamma, mult = model.alpha, model.gamma, model.multiplicative
    floor = EPS * model.unit
    m = len(rings)
    values = y[span:].tolist()
    errors = [0.0] * len(values)
    for i, value in enumerate(values):
        old = [rings[j][heads[j]] for j in range(m)]
        if mult:
            together = 1.0
            for o in old:
                together *= o
            errors[i] = value - level * together
            level = alpha * value / max(together, EPS) + (1 - alpha) * level
            for j in range(m):
                others = 1.0
                for q in range(m):
                    if q != j:
                        others *= old[q]
                rings[j][heads[j]] = gamma[j] * value / max(level * others, floor) + (1 - gamma[j]) * old[j]
        else:
            together = sum(old)
            errors[i] = value - level - together
            level = alpha * (value - together) + (1 - alpha) * level
            for j in range(m):
                rings[j][heads[j]] = gamma[j] * (value - level - (together - old[j])) + (1 - gamma[j]) * old[j]
        for j in range(m):
            heads[j] = heads[j] + 1 if heads[j] + 1 < len(rings[j]) else 0
    return np.asarray(errors)


def _ar_phi(errors: list[np.ndarray]) -> float:
    """Least-squares phi of e_t on e_{t-1}, pooled, within +-PHI_LIMIT."""
    num = sum(float((e[1:] * e[:-1]).sum()) for e in errors)
    den = sum(float((e[:-1] ** 2).sum()) for e in errors)
    return float(np.clip(num / den, -PHI_LIMIT, PHI_LIMIT)) if den > 0 else 0.0


def adjusted_sse(errors: list[np.ndarray], phi: float, weights: Sequence[float]) -> float:
    """Mean of the squared AR-adjusted errors e_t - phi e_{t-1}, each block over its weight^2."""
    total, count = 0.0, 0
    for e, w in zip(errors, weights, strict=True):
        adjusted = e[1:] - phi * e[:-1]
        total += float((adjusted**2).sum()) / (w * w)
        count += len(adjusted)
    return total / max(count, 1)


def fit(blocks: Sequence[np.ndarray], seasons: Sequence[int], multiplicative: bool, unit: float = 1.0) -> Smoothing:
    """The constants minimising the squared AR-adjusted one-step error over the training blocks
    (each read from its own start; several for a global model, each weighted by its mean
    absolute one-step change so every series counts alike). Nelder-Mead over a, g_j in [0, 1]
    from a few starts; phi is the least-squares AR coefficient of the errors for each choice."""
    from scipy.optimize import minimize

    seasons = tuple(sorted(int(s) for s in seasons))
    span = seasons[-1] if seasons else 1
    series = [np.asarray(b, dtype=np.float64) for b in blocks if len(b) > span + 2]
    if not series:
        raise ValueError(f"Holt-Winters needs more than {span + 2} training readings")
    weights = [max(float(np.abs(np.diff(s)).mean()), EPS * unit) for s in series]
    m = len(seasons)

    def smoothing(params: np.ndarray, phi: float = 0.0) -> Smoothing:
        clipped = np.clip(params, 0.0, 1.0)
        return Smoothing(seasons, multiplicative, float(clipped[0]), tuple(float(g) for g in clipped[1:]), phi, unit)

    def objective(params: np.ndarray) -> float:
        if np.any(params < 0.0) or np.any(params > 1.0):
            return math.inf
        errors = [one_step_errors(s, smoothing(params)) for s in series]
        if not all(np.isfinite(e).all() for e in errors):
            return math.inf
        return adjusted_sse(errors, _ar_phi(errors), weights)

    starts = [np.array([0.1] + [0.2] * m), np.array([0.01] + [0.1] * m), np.array([0.5] + [0.5] * m)]
    best: tuple[float, np.ndarray] | None = None
    for start in starts:
        result = minimize(
            objective, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-9, "maxiter": 200 * (1 + m)}
        )
        if best is None or result.fun < best[0]:
            best = (float(result.fun), np.asarray(result.x))
    assert best is not None
    params = np.clip(best[1], 0.0, 1.0)
    phi = _ar_phi([one_step_errors(s, smoothing(params)) for s in series])
    return smoothing(params, phi)


def states_before(y: np.ndarray, model: Smoothing) -> np.ndarray:
    """[len(y) + 1, width]: row p is the state a session holds before reading y[p] (after
    y[0..p-1]), zeros while fewer than `span` readings have been read (not yet set). Training
    restarts its streams mid-series from these rows."""
    y = np.asarray(y, dtype=np.float64)
    out = np.zeros((len(y) + 1, model.width))
    span = model.span
    if len(y) < span:
        return out
    state = initial(y[:span], model.seasons, model.multiplicative, model.unit)
    out[span] = state
    for p in range(span, len(y)):
        state, _ = step(state, float(y[p]), model)
        out[p + 1] = state
    return out

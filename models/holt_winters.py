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
    recursion as `step`, with the same floating-point operations in the same order (so the same
    bits): fitting calls it thousands of times, so each season's ring is a Python list that grows
    by the component just written (the component for time t is the one written s readings
    earlier: index i of the list at the i-th reading), and the common cases of one and two
    seasons are written out."""
    y = np.asarray(y, dtype=np.float64)
    span = model.span
    if len(y) <= span:
        return np.zeros(0)
    state = initial(y[:span], model.seasons, model.multiplicative, model.unit)
    level = float(state[0])
    rings: list[list[float]] = []
    offset = 1
    for s in model.seasons:
        rings.append(state[offset : offset + s].tolist())
        offset += s
    alpha, gamma, mult = model.alpha, model.gamma, model.multiplicative
    keep = 1 - alpha
    floor = EPS * model.unit
    m = len(rings)
    values = y[span:].tolist()
    errors = [0.0] * len(values)
    if m == 2:
        c0, c1 = rings
        g0, g1 = gamma
        k0, k1 = 1 - g0, 1 - g1
        for i, value in enumerate(values):
            o0, o1 = c0[i], c1[i]
            if mult:
                together = o0 * o1
                errors[i] = value - level * together
                level = alpha * value / max(together, EPS) + keep * level
                c0.append(g0 * value / max(level * o1, floor) + k0 * o0)
                c1.append(g1 * value / max(level * o0, floor) + k1 * o1)
            else:
                together = o0 + o1
                errors[i] = value - level - together
                level = alpha * (value - together) + keep * level
                c0.append(g0 * (value - level - (together - o0)) + k0 * o0)
                c1.append(g1 * (value - level - (together - o1)) + k1 * o1)
    elif m == 1:
        (c0,) = rings
        (g0,) = gamma
        k0 = 1 - g0
        for i, value in enumerate(values):
            o0 = c0[i]
            if mult:
                errors[i] = value - level * o0
                level = alpha * value / max(o0, EPS) + keep * level
                c0.append(g0 * value / max(level, floor) + k0 * o0)
            else:
                errors[i] = value - level - o0
                level = alpha * (value - o0) + keep * level
                c0.append(g0 * (value - level) + k0 * o0)
    else:
        for i, value in enumerate(values):
            old = [ring[i] for ring in rings]
            if mult:
                together = 1.0
                for o in old:
                    together *= o
                errors[i] = value - level * together
                level = alpha * value / max(together, EPS) + keep * level
                for j in range(m):
                    others = 1.0
                    for q in range(m):
                        if q != j:
                            others *= old[q]
                    rings[j].append(gamma[j] * value / max(level * others, floor) + (1 - gamma[j]) * old[j])
            else:
                together = sum(old)
                errors[i] = value - level - together
                level = alpha * (value - together) + keep * level
                for j in range(m):
                    rings[j].append(gamma[j] * (value - level - (together - old[j])) + (1 - gamma[j]) * old[j])
    return np.asarray(errors)


def one_step_errors_many(y: np.ndarray, model: Smoothing, alphas: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """[len(y) - span, K]: `one_step_errors` for K sets of constants at once (alphas [K],
    gammas [K, m]; `model` gives the seasons, the kind and the unit). One pass over the series
    with NumPy over the K sets: a grid of a few hundred constants costs about what ten calls of
    `one_step_errors` do. The same recursion; the additive season update is written as
    old_j + g_j (y_t - l_t - sum_i old_i), `step`'s update rearranged."""
    y = np.asarray(y, dtype=np.float64)
    span, seasons, mult = model.span, model.seasons, model.multiplicative
    alphas = np.asarray(alphas, dtype=np.float64)
    k, m = len(alphas), len(seasons)
    gammas = np.asarray(gammas, dtype=np.float64).reshape(k, m)
    if len(y) <= span:
        return np.zeros((0, k))
    state = initial(y[:span], seasons, mult, model.unit)
    level = np.full(k, float(state[0]))
    rings: list[np.ndarray] = []
    offset = 1
    for s in seasons:
        rings.append(np.repeat(state[offset : offset + s, None], k, axis=1))  # [s, K]: one slot is one row
        offset += s
    sizes = [len(r) for r in rings]
    heads = [0] * m
    gam = [gammas[:, j].copy() for j in range(m)]
    keep = 1.0 - alphas
    floor = EPS * model.unit
    values = y[span:].tolist()
    errors = np.empty((len(values), k))
    for i, value in enumerate(values):
        old = [rings[j][heads[j]].copy() for j in range(m)]
        if mult:
            together = np.ones(k)
            for o in old:
                together = together * o
            errors[i] = value - level * together
            level = alphas * value / np.maximum(together, EPS) + keep * level
            for j in range(m):
                others = np.ones(k)
                for q in range(m):
                    if q != j:
                        others = others * old[q]
                rings[j][heads[j]] = gam[j] * value / np.maximum(level * others, floor) + (1.0 - gam[j]) * old[j]
        else:
            together = np.zeros(k)
            for o in old:
                together = together + o
            errors[i] = value - level - together
            level = alphas * (value - together) + keep * level
            rest = value - level - together
            for j in range(m):
                rings[j][heads[j]] = old[j] + gam[j] * rest
        for j in range(m):
            heads[j] = heads[j] + 1 if heads[j] + 1 < sizes[j] else 0
    return errors


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


# The grid `fit` starts from: every level constant with every season constant (per season).
GRID_ALPHA = (0.003, 0.01, 0.03, 0.1, 0.2, 0.4, 0.7, 0.95)
GRID_GAMMA = (0.0, 0.003, 0.02, 0.1, 0.3, 0.6, 1.0)
# Nelder-Mead polishes the grid's best local minimum, and another whose grid score is within this
# factor of it (an objective with two basins of nearly equal depth), at most POLISH_STARTS in all.
SECOND_BASIN = 1.02
POLISH_STARTS = 2


def fit(
    blocks: Sequence[np.ndarray],
    seasons: Sequence[int],
    multiplicative: bool,
    unit: float = 1.0,
    start: Smoothing | None = None,
) -> Smoothing:
    """The constants minimising the squared AR-adjusted one-step error over the training blocks
    (each read from its own start; several for a global model, each weighted by its mean
    absolute one-step change so every series counts alike); phi is the least-squares AR
    coefficient of the errors for each choice of a and g_j.

    Nelder-Mead over a, g_j in [0, 1] from the best point of a grid (GRID_ALPHA x GRID_GAMMA per
    season, evaluated in one vectorised pass, `one_step_errors_many`) rather than from several
    fixed starts: one polish from a good start costs a third of three polishes, and the grid
    sees basins a fixed start would miss. `start` (constants fitted before, e.g. on a shorter
    block) replaces the grid: a refit on more rows starts from where the first fit ended."""
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

    if start is not None and start.seasons == seasons and start.multiplicative == multiplicative:
        starts = [np.array([start.alpha, *start.gamma], dtype=np.float64)]
    else:
        starts = _grid_starts(series, weights, smoothing(np.zeros(1 + m)))
    best: tuple[float, np.ndarray] | None = None
    for first in starts:
        result = minimize(
            objective, first, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-9, "maxiter": 200 * (1 + m)}
        )
        for value, params in ((float(result.fun), np.asarray(result.x)), (objective(first), first)):
            if best is None or value < best[0]:
                best = (value, params)
    assert best is not None
    params = np.clip(best[1], 0.0, 1.0)
    phi = _ar_phi([one_step_errors(s, smoothing(params)) for s in series])
    return smoothing(params, phi)


def _grid_starts(series: list[np.ndarray], weights: list[float], model: Smoothing) -> list[np.ndarray]:
    """Where to polish from: the grid's local minima (no neighbour along an axis lower), the
    lowest first, and of the others only those within SECOND_BASIN of it (at most POLISH_STARTS
    in all). Each point is scored as `fit`'s objective scores it (phi fitted per point), all in
    one pass over the series."""
    m = len(model.seasons)
    shape = (len(GRID_ALPHA), *([len(GRID_GAMMA)] * m))
    axes = np.meshgrid(np.asarray(GRID_ALPHA), *([np.asarray(GRID_GAMMA)] * m), indexing="ij")
    points = np.stack([a.ravel() for a in axes], axis=1)  # [K, 1 + m]
    runs = []
    num = np.zeros(len(points))
    den = np.zeros(len(points))
    with np.errstate(all="ignore"):
        for s in series:
            e = one_step_errors_many(s, model, points[:, 0], points[:, 1:])
            runs.append(e)
            num += (e[1:] * e[:-1]).sum(axis=0)
            den += (e[:-1] ** 2).sum(axis=0)
        phi = np.clip(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0), -PHI_LIMIT, PHI_LIMIT)
        total = np.zeros(len(points))
        for e, w in zip(runs, weights, strict=True):
            total += ((e[1:] - phi * e[:-1]) ** 2).sum(axis=0) / (w * w)
    score = np.where(np.isfinite(total), total, np.inf).reshape(shape)
    padded = np.pad(score, 1, constant_values=np.inf)
    centre = tuple(slice(1, -1) for _ in shape)
    minimum = np.ones(shape, dtype=bool)
    for axis in range(len(shape)):
        for shift in (-1, 1):
            index = list(centre)
            index[axis] = slice(1 + shift, shape[axis] + 1 + shift)
            minimum &= score <= padded[tuple(index)]
    flat = score.ravel()
    order = [int(i) for i in np.argsort(flat) if minimum.ravel()[i] and np.isfinite(flat[i])]
    if not order:
        return [np.asarray(points[int(np.argmin(flat))], dtype=np.float64)]
    best = flat[order[0]]
    kept = [i for i in order if flat[i] <= best * SECOND_BASIN][:POLISH_STARTS]
    return [np.asarray(points[i], dtype=np.float64) for i in kept]


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

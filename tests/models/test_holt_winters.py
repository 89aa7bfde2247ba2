"""models/holt_winters: the formula Taylor fitted, as the reference and the fitting run it: the start
from the first longest season recovers exact seasonal patterns, the fast error loop equals the
step-by-step recursion, fitting finds the least-squares constants, and the states a training
restart reads are the recursion's."""

from __future__ import annotations

import numpy as np
import pytest

from models import holt_winters as hw

SEASONS = (4, 12)


def pattern(n: int, multiplicative: bool) -> np.ndarray:
    """A constant level with two exact seasonal patterns (the weekly one not a copy of the daily)."""
    t = np.arange(n)
    daily = np.array([0.0, 3.0, -1.0, -2.0])[t % 4]
    weekly = np.array([0, 1, 2, 1, 0, -1, -2, -1, 0, 0.5, 0, -0.5])[t % 12]
    if multiplicative:
        return 100.0 * (1 + 0.1 * daily) * (1 + 0.05 * weekly)
    return 100.0 + 10 * daily + 5 * weekly


@pytest.mark.parametrize("multiplicative", [False, True])
def test_exact_seasonal_pattern_is_forecast_exactly_whatever_the_constants(multiplicative: bool) -> None:
    y = pattern(60, multiplicative)
    model = hw.Smoothing(SEASONS, multiplicative, 0.3, (0.2, 0.4), 0.8, float(y.std()))
    state = hw.initial(y[:12], SEASONS, multiplicative, model.unit)
    assert state.shape == (model.width,) == (1 + 4 + 12,)
    np.testing.assert_allclose(hw.forecast(state, 0.0, 24, model), y[12:36], rtol=1e-12)
    for t in range(12, 48):
        state, error = hw.step(state, float(y[t]), model)
        assert abs(error) < 1e-9
        np.testing.assert_allclose(hw.forecast(state, error, 12, model), y[t + 1 : t + 13], rtol=1e-12)
    assert np.abs(hw.one_step_errors(y, model)).max() < 1e-9


@pytest.mark.parametrize("seasons", [SEASONS, (12,), (3, 4, 12), ()])
@pytest.mark.parametrize("multiplicative", [False, True])
def test_fast_errors_and_restart_states_equal_the_step_recursion(
    multiplicative: bool, seasons: tuple[int, ...]
) -> None:
    """one_step_errors writes out one and two seasons and loops over more: each equals `step`."""
    rng = np.random.default_rng(0)
    y = pattern(200, multiplicative) + rng.normal(0, 2.0, 200) + np.linspace(0, 20, 200)
    model = hw.Smoothing(seasons, multiplicative, 0.2, (0.1, 0.3, 0.05)[: len(seasons)], 0.5, float(y.std()))
    span = model.span
    state = hw.initial(y[:span], seasons, multiplicative, model.unit)
    errors = []
    before = hw.states_before(y, model)
    assert before.shape == (201, model.width) and not before[:span].any()
    np.testing.assert_array_equal(before[span], state)
    for t in range(span, 200):
        state, error = hw.step(state, float(y[t]), model)
        errors.append(error)
        np.testing.assert_allclose(before[t + 1], state, rtol=1e-12)
    np.testing.assert_allclose(hw.one_step_errors(y, model), errors, rtol=1e-9, atol=1e-9)


def test_fit_finds_the_least_squares_constants() -> None:
    """The fitted constants give a lower AR-adjusted one-step error than any on a coarse grid,
    and the AR coefficient picks up autocorrelated noise."""
    rng = np.random.default_rng(1)
    n = 600
    noise = np.zeros(n)
    for t in range(1, n):  # AR(1) noise, phi 0.7
        noise[t] = 0.7 * noise[t - 1] + rng.normal(0, 1.0)
    y = pattern(n, False) + np.cumsum(rng.normal(0, 0.3, n)) + noise
    fitted = hw.fit([y], SEASONS, False, float(y.std()))
    weights = [float(np.abs(np.diff(y)).mean())]

    def sse(model: hw.Smoothing) -> float:
        return hw.adjusted_sse([hw.one_step_errors(y, model)], model.phi, weights)

    best = sse(fitted)
    for a in (0.05, 0.2, 0.5):
        for g in (0.05, 0.2, 0.5):
            grid = hw.Smoothing(SEASONS, False, a, (g, g), fitted.phi, fitted.unit)
            assert best <= sse(grid) + 1e-12
    assert 0.4 < fitted.phi < 0.95


def test_too_short_a_block_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 14 training readings"):
        hw.fit([np.arange(14.0)], SEASONS, False)


@pytest.mark.parametrize("multiplicative", [False, True])
def test_many_constants_in_one_pass_equal_one_set_at_a_time(multiplicative: bool) -> None:
    """The fit's grid pass (K sets of constants over the series at once) gives each set's own
    one-step errors."""
    rng = np.random.default_rng(2)
    y = pattern(150, multiplicative) + rng.normal(0, 2.0, 150) + np.linspace(0, 10, 150)
    model = hw.Smoothing(SEASONS, multiplicative, 0.0, (0.0, 0.0), 0.0, float(y.std()))
    alphas = np.array([0.0, 0.05, 0.3, 1.0])
    gammas = np.array([[0.0, 0.0], [0.1, 0.6], [0.5, 0.02], [1.0, 1.0]])
    many = hw.one_step_errors_many(y, model, alphas, gammas)
    assert many.shape == (150 - 12, 4)
    for k in range(4):
        one = hw.Smoothing(SEASONS, multiplicative, float(alphas[k]), tuple(gammas[k]), 0.0, model.unit)
        np.testing.assert_allclose(many[:, k], hw.one_step_errors(y, one), rtol=1e-9, atol=1e-9)


def test_a_refit_starts_from_the_constants_it_is_given() -> None:
    """`start` replaces the grid: fitted again from its own result, the fit stays there."""
    rng = np.random.default_rng(4)
    y = pattern(300, False) + np.cumsum(rng.normal(0, 0.3, 300)) + rng.normal(0, 1.0, 300)
    first = hw.fit([y], SEASONS, False, float(y.std()))
    again = hw.fit([y], SEASONS, False, float(y.std()), start=first)
    weights = [float(np.abs(np.diff(y)).mean())]
    sse = [hw.adjusted_sse([hw.one_step_errors(y, f)], f.phi, weights) for f in (first, again)]
    assert sse[1] <= sse[0] + 1e-12
    np.testing.assert_allclose([again.alpha, *again.gamma], [first.alpha, *first.gamma], atol=0.01)

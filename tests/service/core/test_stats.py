"""The dashboard's digest of Prometheus histograms: percentiles as histogram_quantile gives
them (interpolated within buckets), or bucket bounds for whole counts."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram

from service.api.ui import _histograms, _quantile


def test_quantile_interpolates_within_the_bucket():
    bounds = [0.001, 0.01, 0.1, math.inf]
    cumulative = {0.001: 10.0, 0.01: 90.0, 0.1: 100.0, math.inf: 100.0}
    assert _quantile(0.05, bounds, cumulative, 100.0, False) == pytest.approx(0.0005)
    assert _quantile(0.5, bounds, cumulative, 100.0, False) == pytest.approx(0.001 + 0.009 * 0.5)
    assert _quantile(0.95, bounds, cumulative, 100.0, False) == pytest.approx(0.01 + 0.09 * 0.5)
    assert _quantile(0.5, bounds, cumulative, 100.0, True) == 0.01


def test_beyond_the_largest_bucket_reports_its_bound():
    bounds = [1.0, math.inf]
    assert _quantile(0.99, bounds, {1.0: 1.0, math.inf: 10.0}, 10.0, False) == 1.0


def test_histograms_sum_over_other_labels():
    registry = CollectorRegistry()
    h = Histogram("lat", "x", ["route", "model"], buckets=(0.01, 0.1), registry=registry)
    for model in ("a", "b"):
        for _ in range(5):
            h.labels("/steps", model).observe(0.005)
    h.labels("/steps", "a").observe(0.05)
    families = {f.name: f for f in registry.collect()}
    digest = _histograms(families, "lat", "route")
    assert digest["/steps"]["count"] == 11
    assert digest["/steps"]["mean"] == pytest.approx((10 * 0.005 + 0.05) / 11)
    assert digest["/steps"]["p50"] < 0.01 < digest["/steps"]["p99"] <= 0.1

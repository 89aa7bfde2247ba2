"""Long work runs in time chunks carrying the state: same outputs as one call, bounded calls."""

from __future__ import annotations

import numpy as np
import pytest

from models.chunks import run_in_time_chunks
from service.core.registry import ModelRegistry
from service.core.settings import Settings
from tests.support.models import raw_inputs


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("batch,steps,limit", [(3, 100, 30), (1, 257, 16), (7, 50, 5), (2, 9, 1)])
def test_chunked_run_equals_one_call(registry, name, batch, steps, limit):
    model = registry.get(name)
    x = raw_inputs(np.random.default_rng(steps), steps, batch=batch).astype(np.float32)
    state = tuple(s + 0.1 for s in model.zero_state(batch))
    whole, whole_state = model._call(x, state)
    calls: list[tuple[int, int]] = []

    def counting(inputs, st):
        calls.append(inputs.shape[:2])
        return model._call(inputs, st)

    chunked, chunked_state = run_in_time_chunks(counting, x, state, limit)
    assert len(calls) == -(-steps // max(1, limit // batch))
    assert all(b * t <= max(limit, b) for b, t in calls)
    np.testing.assert_array_equal(chunked, whole)  # same per-step arithmetic: bitwise equal
    for a, b in zip(chunked_state, whole_state, strict=True):
        np.testing.assert_array_equal(a, b)


def test_models_chunk_by_the_setting(repository):
    registry = ModelRegistry(Settings(model_repository=repository, max_chunk_elements=64))
    registry.load_all()
    model = registry.get("lstm")
    assert model.max_chunk_elements == 64
    x = raw_inputs(np.random.default_rng(0), 200, batch=4).astype(np.float32)
    out, _ = model.run(x, model.zero_state(4))
    whole, _ = model._call(x, model.zero_state(4))
    assert out.shape == whole.shape == (4, 200, 2)
    np.testing.assert_array_equal(out, whole)

"""Batched results equal unbatched ones, row for row."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.core.batching import Batcher


async def test_concurrent_requests_are_stacked_and_exact(registry):
    model = registry.get("lstm")
    calls: list[int] = []
    executor = ThreadPoolExecutor(1)
    batcher = Batcher(model, executor, max_size=64, observe=lambda rows, s: calls.append(rows))
    rng = np.random.default_rng(0)
    n = 40
    inputs = [(rng.standard_normal((1, 1, 3)) * 5 + 20).astype(np.float32) for _ in range(n)]
    states = [tuple((0.1 * rng.standard_normal((2, 1, 16))).astype(np.float32) for _ in range(2)) for _ in range(n)]
    results = await asyncio.gather(*(batcher.run(x, s) for x, s in zip(inputs, states, strict=True)))
    assert sum(calls) == n and len(calls) < n  # fewer ORT calls than requests
    for x, s, (y, new) in zip(inputs, states, results, strict=True):
        y1, new1 = model.run(x, s)
        np.testing.assert_allclose(y, y1, atol=1e-5)
        for a, b in zip(new, new1, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    executor.shutdown()


async def test_mixed_lengths_and_batch_limit(registry):
    model = registry.get("gru")
    calls: list[int] = []
    executor = ThreadPoolExecutor(1)
    batcher = Batcher(model, executor, max_size=4, observe=lambda rows, s: calls.append(rows))
    rng = np.random.default_rng(1)
    reqs = [
        (rng.standard_normal((b, t, 3)).astype(np.float32) + 20, b) for b, t in [(1, 1), (2, 5), (3, 1), (1, 5)] * 3
    ]
    results = await asyncio.gather(*(batcher.run(x, model.zero_state(b)) for x, b in reqs))
    assert max(calls) <= 4 and sum(calls) == sum(b for _, b in reqs)
    for (x, b), (y, _) in zip(reqs, results, strict=True):
        np.testing.assert_allclose(y, model.run(x, model.zero_state(b))[0], atol=1e-5)
    executor.shutdown()


async def test_disabled_batcher_runs_each_request_alone(registry):
    model = registry.get("gru")
    calls: list[int] = []
    executor = ThreadPoolExecutor(1)
    batcher = Batcher(model, executor, enabled=False, observe=lambda rows, s: calls.append(rows))
    xs = [np.full((1, 1, 3), float(i), np.float32) for i in range(5)]
    await asyncio.gather(*(batcher.run(x, model.zero_state(1)) for x in xs))
    assert calls == [1] * 5
    executor.shutdown()


class Poisonable:
    """A model whose call fails when any input row holds the poison reading, and which records
    the state shapes of every call."""

    POISON = -999.0

    def __init__(self, model) -> None:
        self.model = model
        self.calls: list[list[tuple[int, ...]]] = []

    def run(self, inputs, state):
        self.calls.append([s.shape for s in state])
        if (inputs == self.POISON).any():
            raise ValueError("poisoned call")
        if state[0].shape[2] != self.model.config.hidden_size:  # a state of another layout
            return np.zeros((*inputs.shape[:2], 2), np.float32), state
        return self.model.run(inputs, state)


async def test_a_failing_request_does_not_fail_its_neighbours(registry):
    model = registry.get("lstm")
    poisonable = Poisonable(model)
    executor = ThreadPoolExecutor(1)
    batcher = Batcher(poisonable, executor, max_size=64)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    inputs = [(rng.standard_normal((1, 1, 3)) * 5 + 20).astype(np.float32) for _ in range(6)]
    inputs[3][0, 0, 0] = Poisonable.POISON
    state = model.zero_state(1)
    results = await asyncio.gather(*(batcher.run(x, state) for x in inputs), return_exceptions=True)
    assert isinstance(results[3], ValueError)
    for k, result in enumerate(results):
        if k != 3:
            y, _ = model.run(inputs[k], state)
            np.testing.assert_allclose(result[0], y, atol=1e-6)
    assert len(poisonable.calls[0]) == 2 and poisonable.calls[0][0][1] == 6  # they were stacked, at first
    executor.shutdown()


async def test_states_of_different_shapes_are_never_stacked(registry):
    model = registry.get("lstm")
    poisonable = Poisonable(model)
    executor = ThreadPoolExecutor(1)
    batcher = Batcher(poisonable, executor, max_size=64)  # type: ignore[arg-type]
    x = np.full((1, 1, 3), 20.0, np.float32)
    wide = tuple(np.zeros((2, 1, 32), np.float32) for _ in range(2))
    runs = [batcher.run(x, model.zero_state(1)) if k % 2 else batcher.run(x, wide) for k in range(8)]
    results = await asyncio.gather(*runs)
    assert all(len({shape for shape in call}) == 1 for call in poisonable.calls), poisonable.calls
    assert {call[0][2] for call in poisonable.calls} == {16, 32}
    assert len(poisonable.calls) == 2  # one call per shape
    assert all(r[1][0].shape[2] == (16 if k % 2 else 32) for k, r in enumerate(results))
    executor.shutdown()


def test_all_finite_agrees_with_isfinite_for_every_kind_of_value() -> None:
    from service.core.batching import all_finite

    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 2, 64)).astype(np.float32)
    assert all_finite(base)
    assert all_finite(np.zeros((0, 4), np.float32))
    # the largest finite float32 values: their float64 sum must not overflow into a refusal
    assert all_finite(np.full((8, 64), np.finfo(np.float32).max, np.float32))
    for bad in (np.inf, -np.inf, np.nan):
        for dtype in (np.float32, np.float64):
            array = base.astype(dtype)
            array[2, 1, 63] = bad
            assert not all_finite(array)
    # float64 outputs fall back to the element-wise check (their sum could overflow)
    assert all_finite(np.full(4, np.finfo(np.float64).max))


def test_the_server_freezes_its_startup_heap_out_of_the_collector() -> None:
    import gc

    from service.server import _freeze_startup_heap

    before = gc.get_freeze_count()
    try:
        _freeze_startup_heap()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()

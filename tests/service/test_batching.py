"""Batched results equal unbatched ones, row for row."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.batching import Batcher


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

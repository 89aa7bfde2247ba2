"""Long work in time chunks, carrying the state: the recurrence is the same, so the result is
the one-call result, while each call stays bounded (ONNX Runtime's buffers by rows x steps; a
robust forecaster's fixed point by its chunk length, models/config.py `max_chunk_steps`). Used
by the service for every model call and by the evaluations that stream a whole series."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Runner = Callable[[np.ndarray, tuple[np.ndarray, ...]], tuple[np.ndarray, tuple[np.ndarray, ...]]]


def run_in_time_chunks(
    run: Runner, inputs: np.ndarray, state: tuple[np.ndarray, ...], max_elements: int, max_steps: int = 0
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """`run` over [B, T, F] in chunks of at most max_elements // B steps (0: any) and at most
    max_steps steps (0: any), each starting from the state the previous one ended in."""
    batch, steps = inputs.shape[0], inputs.shape[1]
    chunk = max(1, max_elements // max(batch, 1)) if max_elements > 0 else steps
    if max_steps > 0:
        chunk = min(chunk, max_steps)
    if steps <= chunk:
        return run(inputs, state)
    outputs: np.ndarray | None = None
    for start in range(0, steps, chunk):
        part, state = run(np.ascontiguousarray(inputs[:, start : start + chunk]), state)
        if outputs is None:
            outputs = np.empty((batch, steps, *part.shape[2:]), part.dtype)
        outputs[:, start : start + part.shape[1]] = part
    assert outputs is not None
    return outputs, state

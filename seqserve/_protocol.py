"""What every transport of the client shares: the retry budget, array conversions, and
reading an answer into a value or a typed error."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from seqserve.errors import SeqserveError, TransportFailure, error_from_body

# Statuses that say "not now" rather than "no": a busy or restarting replica, a proxy that
# could not reach one, a store briefly away. A step refused with one of them was not applied
# (or, for 502/504 from a proxy, may have been: the resend carries the same position, so the
# server answers it from its record instead of applying it twice).
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter.

    Attempt k (from 0) waits a uniformly random time in [0, min(cap, base * 2**k)] seconds;
    at most `attempts` tries in all and never past `deadline` seconds after the first one.
    Full jitter keeps many clients that failed together from retrying together.

    Example: ``Client(url, retry=RetryPolicy(attempts=20, deadline=120))``."""

    attempts: int = 10
    base: float = 0.05
    cap: float = 2.0
    deadline: float = 60.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap, self.base * (2**attempt)))


class Attempts:
    """One operation's use of a RetryPolicy. `wait(why)` sleeps before the next try, or
    raises TransportFailure (chained to `why`) when the budget is spent. `reset()` after
    progress, so a long stream gets a fresh budget after each success."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.started = time.monotonic()

    async def wait(self, why: BaseException | str) -> None:
        self.count += 1
        elapsed = time.monotonic() - self.started
        if self.count >= self.policy.attempts or elapsed >= self.policy.deadline:
            message = f"gave up after {self.count} attempt(s) in {elapsed:.1f}s: {why}"
            status = why.status if isinstance(why, SeqserveError) else 0
            raise TransportFailure(message, status=status, code="retries_exhausted") from (
                why if isinstance(why, BaseException) else None
            )
        delay = min(self.policy.delay(self.count - 1), max(0.0, self.policy.deadline - elapsed))
        await asyncio.sleep(delay)


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": response.text[:200] or f"HTTP {response.status_code}"}


def error_of(response: httpx.Response) -> SeqserveError:
    return error_from_body(response.status_code, body_of(response))


def as_steps(readings: Any, features: int | None = None) -> np.ndarray:
    """One session request's readings as float32 [time, features].

    Accepts [time][features] (list, array, DataFrame), one reading [features] (1-D), or a
    bare number for a one-feature model; a 1-D array is one reading when `features` says the
    model takes that many, or `features` == 1 and it is a column of readings."""
    try:
        import pandas as pd

        if isinstance(readings, pd.DataFrame | pd.Series):
            readings = readings.to_numpy()
    except ImportError:  # pandas is optional
        pass
    array = np.asarray(readings, dtype=np.float32)
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array.reshape(-1, 1) if features == 1 else array.reshape(1, -1)
    if array.ndim != 2:
        raise ValueError(f"readings must be [time][features], one reading, or a number; got shape {array.shape}")
    return array


def as_batch(inputs: Any) -> tuple[list[np.ndarray], str]:
    """Stateless predict inputs -> list of [time, features] sequences, and the shape to give back:
    'batch' ([B][T][F] in, [B][T][O] out), 'one' ([T][F] in, [T][O] out), 'ragged' (a list of
    sequences of different lengths in, a list out)."""
    try:
        import pandas as pd

        if isinstance(inputs, pd.DataFrame):
            return [inputs.to_numpy(dtype=np.float32)], "one"
    except ImportError:
        pass
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 3:
            return list(inputs.astype(np.float32)), "batch"
        return [as_steps(inputs)], "one"
    if isinstance(inputs, list | tuple) and inputs and isinstance(inputs[0], np.ndarray | list | tuple):
        first = np.asarray(inputs[0], dtype=np.float32)
        if first.ndim == 2:
            sequences = [np.asarray(s, dtype=np.float32) for s in inputs]
            same = len({s.shape for s in sequences}) == 1
            return sequences, "batch" if same else "ragged"
    return [as_steps(inputs)], "one"


@dataclass(frozen=True)
class Intervals:
    """What a model with quantile levels adds to a reply, as arrays: `quantiles` by level
    ("0.1", ...), each shaped like the outputs ([time][outputs]); `anomaly` per reading, an
    {"outside_80", "outside_95", "score"} dict or None (no earlier forecast: a session's first
    reading)."""

    quantiles: dict[str, np.ndarray]
    anomaly: list[dict[str, Any] | None]

    @classmethod
    def of(cls, reply: Any, sequence: int | None = None) -> Intervals | None:
        """From a step reply (`sequence` None) or one sequence of a predict reply; None when
        the model has no levels."""
        levels = reply.get("quantiles") if isinstance(reply, dict) else None
        if levels is None:
            return None

        def pick(value: Any) -> Any:
            return value if sequence is None else value[sequence]

        quantiles = {k: np.asarray(pick(v), dtype=np.float32) for k, v in levels.items()}
        anomaly = reply.get("anomaly")
        anomaly = pick(anomaly) if anomaly is not None else []
        return cls(quantiles, anomaly if isinstance(anomaly, list) else [anomaly])

    def columns(self, outputs: list[str]) -> dict[str, np.ndarray]:
        """DataFrame columns: `<output>:q<level>` per output and level (e.g. ``y@t+1:q0.1``),
        then `outside_80`, `outside_95` (True/False, None where a reading has no flag: object
        arrays) and `anomaly_score` (NaN where a reading has none)."""
        out: dict[str, np.ndarray] = {}
        for j, name in enumerate(outputs):
            for level, values in self.quantiles.items():
                out[f"{name}:q{level}"] = values[:, j]
        if self.anomaly:
            for key in ("outside_80", "outside_95"):
                out[key] = np.array([None if a is None else bool(a[key]) for a in self.anomaly], dtype=object)
            out["anomaly_score"] = np.array([np.nan if a is None else float(a["score"]) for a in self.anomaly])
        return out

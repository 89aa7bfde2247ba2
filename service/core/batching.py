"""Dynamic batching: concurrent requests for one model version become one ONNX Runtime call.

A recurrent step for one stream is tiny (tens of microseconds), so the fixed cost of a call
dominates; stacking the states of many streams into one call multiplies throughput. Requests
are grouped by sequence length (the exported graph takes no per-row lengths) and state shapes
(states of different shapes are never stacked). While one call
runs in the worker thread, new requests queue and go out together in the next call, so at low
load nothing waits and at high load batches grow by themselves; `max_delay` adds an optional
wait for more company. Results are exact: each row of a batched call is independent.

A failure is isolated: when a stacked call fails, its requests are run again one by one, so
only the request that causes the failure gets the error, never its neighbours.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from service.core.errors import NonFiniteResult
from service.core.registry import LoadedModel
from service.core.stats import ModelStatistics

Result = tuple[np.ndarray, tuple[np.ndarray, ...]]


@dataclass(slots=True)
class _Item:
    inputs: np.ndarray  # [B, T, F]
    state: tuple[np.ndarray, ...]  # [L, B, H] each
    future: asyncio.Future[Result]
    queued_ns: int = 0


def run_stacked(model: LoadedModel, items: list[_Item]) -> list[Result]:
    """One ORT call for several requests of equal length; blocking, runs in the worker thread."""
    if len(items) == 1:
        return [model.run(items[0].inputs, items[0].state)]
    inputs = np.concatenate([it.inputs for it in items], axis=0)
    states = tuple(np.concatenate([it.state[k] for it in items], axis=1) for k in range(len(items[0].state)))
    outputs, new_state = model.run(inputs, states)
    results: list[Result] = []
    row = 0
    for it in items:
        rows = slice(row, row + it.inputs.shape[0])
        results.append((outputs[rows], tuple(s[:, rows] for s in new_state)))
        row = rows.stop
    return results


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of `array` is finite, in one reduction: a float32 array's sum in
    float64 cannot overflow, so it is finite exactly when every element is (NaN and inf
    propagate through the sum). This runs for every output and state of every step, where
    isfinite + all (two calls and a temporary) showed in the profile of the step path."""
    if array.dtype == np.float32:
        return math.isfinite(np.add.reduce(array, axis=None, dtype=np.float64))
    return bool(np.isfinite(array).all())


def finite(result: Result) -> Result:
    """The result if every output and state value is finite. Inputs are checked finite on the
    way in, so inf or NaN here come from a state whose values are finite but far outside what
    the graph ever produces (a tampered import): answering them (as JSON null) or storing them
    would poison the session, so the request is refused instead."""
    outputs, state = result
    if all_finite(outputs) and all(all_finite(s) for s in state):
        return result
    raise NonFiniteResult(
        "the model produced non-finite values (inf or NaN) from this state and these inputs; nothing was applied. "
        "The state holds values the model never produces (was it edited?) or the inputs are far outside the "
        "training range",
        field="state",
    )


class Batcher:
    def __init__(
        self,
        model: LoadedModel,
        executor: Executor,
        *,
        enabled: bool = True,
        max_size: int = 256,
        max_delay_s: float = 0.0,
        inline_max_cost: int = 0,
        observe: Callable[[int, float], None] | None = None,
        stats: ModelStatistics | None = None,
    ) -> None:
        self.model = model
        self.executor = executor
        self.enabled = enabled
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self.inline_max_cost = inline_max_cost  # rows x steps run on the event loop itself
        self.observe = observe  # (rows in call, seconds) -> metrics
        self.stats = stats  # Triton-style per-version statistics (V2 statistics extension)
        self._pending: dict[tuple[int, ...], list[_Item]] = {}  # (steps, *state shapes) -> queue
        self._rows = 0
        self._draining = False
        self._task: asyncio.Task[None] | None = None  # referenced so it is not collected mid-drain

    async def run(self, inputs: np.ndarray, state: tuple[np.ndarray, ...]) -> Result:
        """This caller's outputs and new state; NonFiniteResult (422) when either holds inf or
        NaN (checked per caller, so a stacked neighbour is never blamed)."""
        if self.stats is None:
            return finite(await self._run(inputs, state))
        start = time.perf_counter_ns()
        try:
            result = finite(await self._run(inputs, state))
        except Exception:
            self.stats.request(inputs.shape[0], time.perf_counter_ns() - start, False)
            raise
        self.stats.request(inputs.shape[0], time.perf_counter_ns() - start, True)
        return result

    async def _run(self, inputs: np.ndarray, state: tuple[np.ndarray, ...]) -> Result:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            items = [_Item(inputs, state, None, time.perf_counter_ns())]  # type: ignore[arg-type]
            if self._inline(items):
                return self._execute(items)[0]
            return (await loop.run_in_executor(self.executor, self._execute, items))[0]
        future: asyncio.Future[Result] = loop.create_future()
        group = (inputs.shape[1], *(d for s in state for d in s.shape[::2]))  # T, then [L, H] of each state
        self._pending.setdefault(group, []).append(_Item(inputs, state, future, time.perf_counter_ns()))
        self._rows += inputs.shape[0]
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain())
        return await future

    def _inline(self, items: list[_Item]) -> bool:
        """A call this small costs less than the hop to a worker thread and back (tens of
        microseconds), so it runs right here; anything larger goes to the worker thread so
        the event loop keeps serving while ONNX Runtime works."""
        cost = sum(it.inputs.shape[0] * it.inputs.shape[1] for it in items)
        return bool(cost <= self.inline_max_cost)

    def _execute(self, items: list[_Item]) -> list[Result]:
        start = time.perf_counter_ns()
        results = run_stacked(self.model, items)
        took = time.perf_counter_ns() - start
        rows = sum(it.inputs.shape[0] for it in items)
        if self.observe is not None:
            self.observe(rows, took / 1e9)
        if self.stats is not None:
            self.stats.execution(rows, took, sum(start - it.queued_ns for it in items), len(items))
        return results

    def _take(self) -> list[_Item]:
        """The oldest group, up to max_size rows (a single larger request goes alone)."""
        key = next(iter(self._pending))
        group = self._pending[key]
        taken: list[_Item] = []
        rows = 0
        while group and (not taken or rows + group[0].inputs.shape[0] <= self.max_size):
            item = group.pop(0)
            taken.append(item)
            rows += item.inputs.shape[0]
        if not group:
            del self._pending[key]
        self._rows -= rows
        return taken

    async def _call(self, loop: asyncio.AbstractEventLoop, items: list[_Item]) -> list[Result]:
        if self._inline(items):
            return self._execute(items)
        return await loop.run_in_executor(self.executor, self._execute, items)

    async def _alone(self, loop: asyncio.AbstractEventLoop, item: _Item) -> Result | Exception:
        try:
            return (await self._call(loop, [item]))[0]
        except Exception as exc:
            return exc

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self.max_delay_s > 0 and self._rows < self.max_size:
                    await asyncio.sleep(self.max_delay_s)
                items = self._take()
                try:
                    results: list[Result | Exception] = list(await self._call(loop, items))
                except Exception as exc:  # when several share the call, run each alone: only the culprit fails
                    results = [exc] if len(items) == 1 else [await self._alone(loop, it) for it in items]
                for it, result in zip(items, results, strict=True):
                    if it.future.done():  # a cancelled request no longer wants it
                        continue
                    if isinstance(result, Exception):
                        it.future.set_exception(result)
                    else:
                        it.future.set_result(result)
        finally:
            self._draining = False

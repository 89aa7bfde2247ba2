"""Per model version inference statistics in Triton's shape (`ModelStatistics`), for the V2
statistics extension over HTTP and gRPC, so Triton's tooling (perf_analyzer, dashboards that
read `get_inference_statistics`) can be pointed at the service.

Counted where every transport meets, the batcher: a request is one call of `Batcher.run` (a v1
step, a WebSocket run, a bulk group, a V2 request), an execution is one ONNX Runtime call
(possibly many requests stacked). Durations are nanoseconds: `success`/`fail` from entering the
batcher to the result, `queue` until the request's ONNX Runtime call started, `compute_infer`
the call itself; `batch_stats` counts executions per stacked batch size. Requests refused
before they reach a model (validation, conflicts) are not inferences and are not counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class ModelStatistics:
    """The counters of one model version; updated from the event loop and the worker thread."""

    name: str
    version: int
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, _Duration] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self, rows: int, ns: int, ok: bool) -> None:
        with self._lock:
            (self.success if ok else self.fail).add(ns)
            if ok:
                self.inference_count += rows
                self.last_inference_ms = int(time.time() * 1000)

    def execution(self, rows: int, ns: int, queued_ns: int, requests: int) -> None:
        with self._lock:
            self.execution_count += 1
            self.compute_infer.add(ns)
            self.queue.add(queued_ns, requests)
            self.batches.setdefault(rows, _Duration()).add(ns)

    def as_dict(self) -> dict[str, Any]:
        """Triton's JSON form (field names of the protobuf message)."""
        with self._lock:
            zero = {"count": 0, "ns": 0}
            return {
                "name": self.name,
                "version": str(self.version),
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.as_dict(),
                    "fail": self.fail.as_dict(),
                    "queue": self.queue.as_dict(),
                    "compute_input": zero,
                    "compute_infer": self.compute_infer.as_dict(),
                    "compute_output": zero,
                    "cache_hit": zero,
                    "cache_miss": zero,
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": zero,
                        "compute_infer": d.as_dict(),
                        "compute_output": zero,
                    }
                    for size, d in sorted(self.batches.items())
                ],
                "memory_usage": [],
            }


class StatsBook:
    """Every model version's statistics, created on first use, kept across reloads (a
    reloaded version keeps counting where it was)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], ModelStatistics] = {}

    def of(self, name: str, version: int) -> ModelStatistics:
        stats = self._by_key.get((name, version))
        if stats is None:
            stats = self._by_key[(name, version)] = ModelStatistics(name, version)
        return stats

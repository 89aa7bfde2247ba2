"""Prometheus metrics, one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from service.core.errors import REFUSALS
from service.core.stats import StatsBook

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _RefusalCollector(Collector):
    """seqserve_refusals_total{limit}: every refusal by a configured limit (service.core.errors
    counts them where they happen, in any transport)."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "seqserve_refusals", "Requests, messages or connections refused by a limit", labels=["limit"]
        )
        for limit, n in sorted(REFUSALS.items()):
            family.add_metric([limit], n)
        yield family


class _SessionCollector(Collector):
    """Reads the store's counters at scrape time instead of updating gauges on every request."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        stats = self.read()
        yield GaugeMetricFamily("seqserve_sessions_active", "Sessions held by this process's store", stats["active"])
        yield CounterMetricFamily("seqserve_sessions_evicted", "Sessions evicted (LRU)", stats["evicted"])
        yield CounterMetricFamily("seqserve_sessions_expired", "Sessions expired (idle TTL)", stats["expired"])
        yield GaugeMetricFamily(
            "seqserve_session_store_up",
            "1 when the session store answered the last operation, 0 when it was unavailable",
            stats.get("available", 1),
        )
        if "cache_hits" in stats:  # a shared store's replica-local record cache (service.sessions.cache)
            lookups = CounterMetricFamily(
                "seqserve_session_cache_lookups",
                "Steps that looked for this replica's copy of their session record: found (hit; no load) or not",
                labels=["result"],
            )
            lookups.add_metric(["hit"], stats["cache_hits"])
            lookups.add_metric(["miss"], stats["cache_misses"])
            yield lookups
            yield GaugeMetricFamily("seqserve_session_cache_entries", "Session records cached", stats["cache_entries"])
            yield GaugeMetricFamily(
                "seqserve_session_cache_bytes", "Bytes the cached records hold", stats["cache_bytes"]
            )
            yield CounterMetricFamily(
                "seqserve_session_cache_evicted", "Cached records dropped for room (LRU)", stats["cache_evicted"]
            )
            yield CounterMetricFamily(
                "seqserve_session_saves_superseded",
                "Saves refused because another replica wrote first; the step was planned again from the record "
                "the store answered (a stale cached copy costs one of these)",
                stats["superseded"],
            )
        nodes = {k.removeprefix("node_up:"): v for k, v in stats.items() if k.startswith("node_up:")}
        if nodes:  # a clustered store: one gauge per master, from its last health check
            up = GaugeMetricFamily(
                "seqserve_session_store_node_up", "Session store master answering PING (1) or not (0)", labels=["node"]
            )
            for node, value in sorted(nodes.items()):
                up.add_metric([node], value)
            yield up
        replicas = {k.removeprefix("node_replicas:"): v for k, v in stats.items() if k.startswith("node_replicas:")}
        if replicas:  # a clustered store with wait_replicas: connected replicas per master (ROLE)
            family = GaugeMetricFamily(
                "seqserve_session_store_node_replicas",
                "Replicas connected to a session store master (from its last health check or write)",
                labels=["node"],
            )
            for node, value in sorted(replicas.items()):
                family.add_metric([node], value)
            yield family
        if "wait_replicas" in stats:  # a clustered store whose writes wait for replicas
            wait = GaugeMetricFamily(
                "seqserve_session_store_wait_replicas",
                "Replicas a session write waits for (wait_replicas); degrade=true: at most those its shard has",
                labels=["degrade"],
            )
            wait.add_metric(["true" if stats.get("degrade") else "false"], stats["wait_replicas"])
            yield wait
            yield CounterMetricFamily(
                "seqserve_session_store_wait_refused",
                "Session writes answered 503 because fewer replicas confirmed them than wait_replicas asks",
                stats.get("wait_refused", 0),
            )
            yield CounterMetricFamily(
                "seqserve_session_store_degraded_writes",
                "Session writes acknowledged with fewer than wait_replicas replicas (degrade=true, a shard short)",
                stats.get("degraded_writes", 0),
            )
        ops = {k.removeprefix("node_ops:"): v for k, v in stats.items() if k.startswith("node_ops:")}
        if ops:  # a clustered store: per node address (bounded by the store), operations by their key's master
            calls = CounterMetricFamily(
                "seqserve_session_store_node_operations", "Session store operations per node", labels=["node"]
            )
            errors = CounterMetricFamily(
                "seqserve_session_store_node_errors",
                "Session store operations per node that failed (answered 503)",
                labels=["node"],
            )
            latency = SummaryMetricFamily(
                "seqserve_session_store_node_latency_seconds",
                "Session store operation time per node (with retries)",
                labels=["node"],
            )
            for node, n in sorted(ops.items()):
                calls.add_metric([node], n)
                errors.add_metric([node], stats.get(f"node_errors:{node}", 0))
                latency.add_metric([node], count_value=int(n), sum_value=stats.get(f"node_seconds:{node}", 0.0))
            yield from (calls, errors, latency)


OTHER = "_other"  # the one label for every model name that is not loaded (404s, typos, scans)
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


class Metrics:
    """Label values come only from bounded sets: route templates, known methods, status codes,
    and the names of loaded models; anything a client can vary freely (a model name in a URL
    that is not loaded, an invented method) counts under one fixed label, so no request can
    add series. `/metrics` is rendered off the event loop, one render shared by concurrent
    scrapes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.is_loaded: Callable[[str], bool] = lambda name: False
        self._rendering: asyncio.Future[bytes] | None = None
        self.requests = Counter(
            "seqserve_requests", "HTTP requests", ["route", "method", "status", "model"], registry=self.registry
        )
        self.latency = Histogram(
            "seqserve_request_seconds",
            "HTTP request latency",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ort_seconds = Histogram(
            "seqserve_onnxruntime_seconds",
            "Time in ONNX Runtime per call",
            ["model"],
            buckets=(0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "seqserve_batch_rows",
            "Sequences per ONNX Runtime call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.steps = Counter("seqserve_steps", "Time steps applied to sessions", ["model"], registry=self.registry)
        self.anomalies = Counter(
            "seqserve_anomalies",
            "Session readings outside the interval (80 or 95 %) the session forecast for them one step earlier",
            ["model", "interval"],
            registry=self.registry,
        )
        self.scored = Counter(
            "seqserve_anomaly_readings",
            "Session readings checked against an earlier forecast interval (models with quantile levels)",
            ["model"],
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "seqserve_grpc_requests",
            "KServe V2 gRPC requests (each ModelStreamInfer message counts as one)",
            ["method", "code"],
            registry=self.registry,
        )
        self.grpc_latency = Histogram(
            "seqserve_grpc_request_seconds",
            "KServe V2 gRPC request latency (per stream message for ModelStreamInfer)",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_stats = StatsBook()  # Triton-style statistics (V2 statistics extension)
        self.registry.register(_RefusalCollector())

    def count_anomalies(self, model: Any, rows: np.ndarray) -> None:
        """Count the flags in the packed outputs [T, width] of steps applied to a session of
        `model` (a LoadedModel that flags readings)."""
        _, _, anomaly = model.unpack(rows)
        if anomaly is None:
            return
        seen, outside_80, outside_95 = (float(v) for v in anomaly[:, :3].sum(axis=0))
        if seen:
            self.scored.labels(model.key).inc(seen)
        if outside_80:
            self.anomalies.labels(model.key, "80").inc(outside_80)
        if outside_95:
            self.anomalies.labels(model.key, "95").inc(outside_95)

    def watch_sessions(self, read: Callable[[], dict[str, float]]) -> None:
        self.registry.register(_SessionCollector(read))

    def observer(self, model_key: str) -> Callable[[int, float], None]:
        ort = self.ort_seconds.labels(model_key)
        rows = self.batch_rows.labels(model_key)

        def observe(batch_rows: int, seconds: float) -> None:
            ort.observe(seconds)
            rows.observe(batch_rows)

        return observe

    def track_models(self, is_loaded: Callable[[str], bool]) -> None:
        self.is_loaded = is_loaded

    def model_label(self, name: str) -> str:
        return name if not name or self.is_loaded(name) else OTHER

    @staticmethod
    def method_label(method: str) -> str:
        return method if method in METHODS else "OTHER"

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """render() in a thread; a scrape arriving meanwhile shares the render in progress."""
        if self._rendering is None:
            self._rendering = asyncio.ensure_future(asyncio.to_thread(self.render))
            self._rendering.add_done_callback(self._rendered)
        return await asyncio.shield(self._rendering)

    def _rendered(self, _: asyncio.Future[bytes]) -> None:
        self._rendering = None

"""The composition root: settings -> model registry, session store, batcher pool, step engine
and session lifecycle, built once at start-up and shared by every transport (HTTP, WebSocket,
gRPC) and by the reloader and the admin API."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.core.auth import KeyRing, Security
from service.core.batching import Batcher
from service.core.engine import Engine, ReplyCodec
from service.core.lifecycle import Sessions
from service.core.locks import KeyedLocks
from service.core.metrics import Metrics
from service.core.registry import LoadedModel, ModelRegistry
from service.core.settings import Settings
from service.sessions.base import SessionStore


def cache_bytes(settings: Settings) -> int:
    """The replica-local record cache of a shared store (service.sessions.cache), in bytes."""
    return int(settings.session_cache_mb * 1024 * 1024)


def make_store(settings: Settings, security: Security | None = None) -> SessionStore:
    """The session store SEQSERVE_SESSION_STORE names: memory, Redis, or a Redis cluster."""
    if settings.session_store == "memory":
        from service.sessions.memory import MemorySessionStore

        return MemorySessionStore(settings.max_sessions)
    password = security.redis_password if security is not None else None
    if settings.session_store.startswith(("redis://", "rediss://", "unix://")):
        from service.sessions.redis import RedisSessionStore

        return RedisSessionStore(settings.session_store, password=password, cache_bytes=cache_bytes(settings))
    if settings.session_store.startswith("redis+cluster://"):
        from service.sessions.redis_cluster import RedisClusterSessionStore

        return RedisClusterSessionStore(settings.session_store, password=password, cache_bytes=cache_bytes(settings))
    raise ValueError(
        f"SEQSERVE_SESSION_STORE must be 'memory', a redis:// or a redis+cluster:// URL, got {settings.session_store!r}"
    )


class BatcherPool:
    """One batcher per loaded model version. Loading and unloading a version (the reloader,
    the admin API) goes through here, so the registry and the batchers never disagree."""

    def __init__(self, settings: Settings, metrics: Metrics, registry: ModelRegistry, executor: ThreadPoolExecutor):
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self.executor = executor
        self.batchers: dict[str, Batcher] = {}

    def for_model(self, model: LoadedModel) -> Batcher:
        batcher = self.batchers.get(model.key)
        if batcher is None or batcher.model is not model:
            s = self.settings
            batcher = self.batchers[model.key] = Batcher(
                model,
                self.executor,
                enabled=s.batching,
                max_size=s.batch_max_size,
                max_delay_s=s.batch_max_delay_us / 1e6,
                inline_max_cost=s.inline_max_cost,
                observe=self.metrics.observer(model.key),
                stats=self.metrics.model_stats.of(model.name, model.version),
            )
        return batcher

    def load(self, model: LoadedModel) -> None:
        """Serve a loaded model version (new requests see it complete, with its batcher)."""
        self.registry.register(model)
        self.for_model(model)

    def unload(self, model: LoadedModel) -> None:
        """Stop serving a version; requests already holding it finish on it."""
        self.registry.remove(model.name, model.version)
        self.batchers.pop(model.key, None)


@dataclass
class Services:
    """Everything a request needs, built once at start-up."""

    settings: Settings
    metrics: Metrics
    registry: ModelRegistry
    store: SessionStore
    executor: ThreadPoolExecutor
    replies: ReplyCodec  # encodes the reply recorded with each step (the transports' wire format)
    pool: BatcherPool = field(init=False)
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    engine: Engine = field(init=False)
    sessions: Sessions = field(init=False)
    started_at: float = field(default_factory=time.time)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Decoding and encoding large bodies (seconds of GIL-bound work for an 8 MB predict) runs
    # here, not on the event loop; one thread, so such transient memory is held once at a time.
    codec: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="codec"))
    keys: KeyRing = field(default_factory=lambda: KeyRing(frozenset()))  # data-plane API keys (gRPC checks them)

    def __post_init__(self) -> None:
        self.pool = BatcherPool(self.settings, self.metrics, self.registry, self.executor)
        steps = self.metrics.steps
        self.engine = Engine(
            self.settings,
            self.registry,
            self.store,
            self.pool.for_model,
            self.replies,
            self.locks,
            on_steps=lambda key, n: steps.labels(key).inc(n),
            on_outputs=self.metrics.count_anomalies,
        )
        self.sessions = Sessions(
            self.settings, self.registry, self.store, self.locks, tenants=lambda: len(self.keys.digests)
        )

    def batcher_for(self, model: LoadedModel) -> Batcher:
        return self.pool.for_model(model)


def build_services(
    settings: Settings, metrics: Metrics, replies: ReplyCodec, security: Security | None = None
) -> Services:
    registry = ModelRegistry(settings)
    registry.load_all()
    store = make_store(settings, security)
    metrics.watch_sessions(store.stats)
    metrics.track_models(registry.has_name)
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ort")
    svc = Services(settings, metrics, registry, store, executor, replies)
    if security is not None:
        svc.keys = security.keys
    for model in registry:
        svc.pool.for_model(model)
    return svc

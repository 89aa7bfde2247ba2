"""One settings object for the whole service, read once from SEQSERVE_* and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", extra="ignore")

    # Network
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    grpc_port: int = Field(8001, ge=0, le=65535, description="KServe V2 gRPC port (same process); 0 disables")
    workers: int = Field(1, ge=1, description="uvicorn worker processes; >1 needs a shared session store")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Models
    model_repository: Path = Path("model_repository")
    version_policy: Literal["all", "latest"] = "all"
    latest_versions: int = Field(1, ge=1, description="how many newest versions to load when policy is latest")
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(1, ge=0, description="ONNX Runtime intra-op threads (0: ORT default)")
    inter_op_threads: int = Field(1, ge=0)
    reload_interval_seconds: float = Field(0.0, ge=0, description="poll the repository; 0 disables")
    repository_read_timeout_seconds: float = Field(
        10.0, gt=0, description="a repository scan or file read slower than this is given up (hung volume)"
    )

    # Sessions
    session_store: str = Field(
        "memory",
        description="'memory', a redis:// URL or redis+cluster://host:port[,host:port...][?wait_replicas=N"
        "&degrade=true]. wait_replicas=N: a write is acknowledged once N replicas hold it; after a failover the "
        "promoted master has no replica, and its shard refuses every write (503) until one rejoins. degrade=true "
        "waits instead for the replicas the shard has (at least zero), counted in "
        "seqserve_session_store_degraded_writes_total (docs/deployment.md, Redis Cluster)",
    )
    session_ttl_seconds: float = Field(3600.0, gt=0)
    max_session_ttl_seconds: float = Field(7 * 24 * 3600.0, gt=0)
    max_sessions: int = Field(100_000, ge=1, description="per process, memory store; LRU eviction beyond")
    replay_window: int = Field(
        4, ge=1, description="recent positioned steps per session whose reply a retry (same position and inputs) gets"
    )
    replay_max_bytes: int = Field(
        4096,
        ge=0,
        description="bytes of recorded outputs per session for retries; a step whose outputs do not fit records "
        "the state it started from instead (a retry recomputes its reply), older records are dropped first",
    )
    apply_attempts: int = Field(
        64,
        ge=1,
        description="rounds a position-less step is recomputed after losing the check-and-set to another replica "
        "(apply next); 409 after the last",
    )
    session_cache_mb: float = Field(
        64.0,
        ge=0,
        description="Redis stores: memory for this replica's cache of the session records it served (a step "
        "whose cached record is current costs one round trip instead of two); 0: off",
    )
    max_sessions_per_model: int = Field(0, ge=0, description="sessions one model may hold; 0: no limit; 429 beyond")

    # Request limits
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_steps_per_request: int = Field(10_000, ge=1)
    max_batch_size: int = Field(256, ge=1)
    max_bulk_sessions: int = Field(1024, ge=1)
    max_response_values: int = Field(
        2 * 1024 * 1024,
        ge=1,
        description="output values one reply may hold (sequences x steps x outputs; ~15 bytes each as JSON), "
        "checked before anything runs: 413 with the figures beyond",
    )
    stream_min_values: int = Field(
        16_384,
        ge=0,
        description="a reply holding at least this many output values (v1 predict, a session step, bulk, V2 over "
        "HTTP) is encoded a slice at a time from the result's arrays and written as the client reads it "
        "(chunked, with back-pressure), instead of as one body; 0: never",
    )

    # Bounded work per request and per connection (safe defaults; docs/deployment.md)
    max_chunk_elements: int = Field(
        32_768,
        ge=1,
        description="rows x steps per ONNX Runtime call; longer work runs in time chunks carrying the state, "
        "so peak memory follows this setting, not the request",
    )
    ort_cache_dir: Path | None = Field(
        None,
        description="a directory for ONNX Runtime's optimised graphs (CPU): the first load of a model file "
        "writes it, later loads (restarts, reloads, workers) skip the optimisation; none: optimise at every load",
    )
    ort_cpu_arena: bool = Field(
        False, description="ONNX Runtime's CPU memory arena keeps its peak for the process's life; off: freed"
    )
    http_protocol: Literal["coalescing", "uvicorn"] = Field(
        "coalescing",
        description="coalescing: our subclass of uvicorn's httptools protocol (one send per response, the header "
        "size/time and connection limits below); uvicorn: uvicorn's own, if an upgrade breaks the subclass "
        "(max_connections then maps to uvicorn's limit_concurrency; header limits are uvicorn's)",
    )
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="request header block; 431 beyond")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="a connection must finish a request's headers within this; closed otherwise"
    )
    keep_alive_timeout_seconds: float = Field(5.0, gt=0, description="idle keep-alive connections are closed")
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="a request's body must arrive within this after its headers; the connection is closed"
    )
    send_timeout_seconds: float = Field(
        60.0,
        ge=0,
        description="a client that reads nothing of its reply (the server's write buffer stays full) for this long "
        "has its connection closed, and what the reply held let go; 0: wait for as long as it stays connected",
    )
    max_connections_per_client: int | None = Field(
        None,
        ge=0,
        description="open connections from one client address; 503 beyond; unset: a quarter of max_connections; "
        "0: no per-client limit (behind a proxy, which is then the one client)",
    )
    ws_idle_timeout_seconds: float = Field(
        300.0, gt=0, description="a WebSocket that sends no message for this long is closed (1001)"
    )
    max_connections: int = Field(2048, ge=1, description="open connections (HTTP + WebSocket); 503 beyond")
    ws_max_message_bytes: int = Field(1024 * 1024, ge=1024, description="WebSocket message size; closed 1009 beyond")
    ws_max_queue: int = Field(16, ge=1, description="WebSocket messages read ahead of the application")
    grpc_stream_max_pending: int = Field(
        256,
        ge=1,
        description="ModelStreamInfer requests of one stream being worked on or whose replies are not yet written; "
        "the server stops reading the stream beyond (a client that never reads holds bounded memory)",
    )
    grpc_stream_idle_timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="a ModelStreamInfer stream with no request and nothing pending for this long is "
        "ended (DEADLINE_EXCEEDED)",
    )
    grpc_max_streams_per_peer: int | None = Field(
        None,
        ge=0,
        description="ModelStreamInfer streams one client address may hold open (RESOURCE_EXHAUSTED beyond); "
        "unset: a quarter of max_connections; 0: no per-client limit (behind a proxy, which is then the one client)",
    )

    # Dynamic batching
    batching: bool = True
    batch_max_delay_us: int = Field(
        0, ge=0, description="extra wait for company before a call; 0: batch whatever queued meanwhile"
    )
    batch_max_size: int = Field(256, ge=1)
    fast_path: bool = Field(True, description="answer session steps before FastAPI routing (same handler)")
    inline_max_cost: int = Field(
        128, ge=0, description="calls of at most this many rows x steps run on the event loop, not a thread"
    )

    max_sessions_per_key: int | None = Field(
        None,
        ge=0,
        description="sessions one API key may hold; 429 beyond; 0: no limit; unset: a quarter of max_sessions when "
        "two or more API keys are configured (no key can take every slot), else no limit",
    )

    # Security (docs/deployment.md). Keys may come inline or from files (container secrets).
    api_keys: str | None = Field(
        None, description="data-plane API keys, comma/whitespace separated: plaintext or sha256:<hex>"
    )
    api_keys_file: Path | None = None
    allow_anonymous: bool = Field(
        False, description="serve the data plane without API keys on a non-loopback address (not recommended)"
    )
    admin: Literal["on", "off"] = Field("on", description="off: no admin routes at all (metrics stay)")
    admin_host: str | None = Field(None, description="admin listener address; default: SEQSERVE_HOST")
    admin_port: int = Field(8082, ge=0, le=65535, description="admin API and /metrics; never the data port")
    admin_key: str | None = Field(None, description="the admin API's key: plaintext or sha256:<hex>")
    admin_key_file: Path | None = None
    redis_password: str | None = Field(None, description="password for a redis:// session store")
    redis_password_file: Path | None = None
    ready_requires_store: bool = Field(
        False, description="/v2/health/ready also needs the session store (default: models only)"
    )
    cors_origins: list[str] = Field(default_factory=list)

    # Benchmarking
    noop_route: bool = Field(False, description="expose POST /v1/noop, the benchmark floor")

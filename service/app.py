"""create_app(settings): the FastAPI application around the services (service/core/services.py).

Start-up (lifespan) loads every model in the repository, warms each ONNX Runtime session,
opens the session store, and builds one batcher per model version. Shutdown stops taking
work, lets in-flight requests finish (uvicorn), then closes the store and the worker threads.

Two listeners, one process: the data plane (create_asgi: predictions, sessions, V2, health)
and the admin API (create_admin_app: /v1/admin/*, /metrics), which shares the data app's
services and runs on its own port (service/server.py) so that neither nginx nor a
Kubernetes Service ever exposes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from service.api import admin, codecs, health, models, openapi, sessions, stream, ui, v2
from service.api import docs as api_docs
from service.api import errors as api_errors
from service.api.fastpath import FastPath
from service.api.gate import PUBLIC as PUBLIC_PATHS
from service.api.gate import KeyGate
from service.api.middleware import RequestMiddleware, TrailingSlash
from service.core.auth import Security
from service.core.metrics import Metrics
from service.core.reloader import poll_forever
from service.core.services import build_services
from service.core.settings import Settings

log = logging.getLogger("seqserve.app")

GRPC_GRACE_SECONDS = 10.0


def create_app(settings: Settings | None = None, security: Security | None = None) -> FastAPI:
    settings = settings or Settings()
    security = security or Security.from_settings(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = build_services(settings, metrics, codecs.STEP_REPLY, security)
        app.state.services = svc
        await svc.store.start()
        grpc_server = None
        if settings.grpc_port:
            from service.grpc.service import start as start_grpc
            from service.grpc.service import stop as stop_grpc

            grpc_server = await start_grpc(svc, app.version)
        poller = None
        if settings.reload_interval_seconds > 0:
            poller = asyncio.create_task(poll_forever(svc, settings.reload_interval_seconds))
        log.info(
            "ready: %d model version(s) from %s, session store %s",
            len(svc.registry),
            settings.model_repository,
            svc.store.kind,
        )
        try:
            yield
        finally:
            # uvicorn has stopped accepting and finished in-flight requests (their store writes
            # are awaited inside them); now close the store and the worker threads.
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            if grpc_server is not None:  # in-flight gRPC calls finish (within the grace period)
                await stop_grpc(grpc_server, GRPC_GRACE_SECONDS)
            await svc.store.close()
            svc.executor.shutdown(wait=True)
            svc.codec.shutdown(wait=True)
            log.info("stopped")

    app = FastAPI(
        title="seqserve",
        version="0.1.0",
        description="Stateful serving of LSTM/GRU sequence models: stateless predictions, streaming "
        "sessions that carry h/c between requests, and the KServe V2 / Triton protocol.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from api/docs.py, with the assets in the package
        redoc_url=None,
    )
    api_errors.install(app)
    for router in (
        health.router,
        models.router,
        sessions.router,
        stream.router,
        v2.router,
        ui.router,
        api_docs.router,
    ):
        app.include_router(router)
    ui.mount_static(app)
    api_docs.mount_assets(app)
    if settings.noop_route:
        app.include_router(health.noop_router)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"])
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    app.state.metrics = metrics
    app.state.security = security
    openapi.install(app, PUBLIC_PATHS, keys=bool(security.keys))
    return app


def create_asgi(settings: Settings | None = None, app: FastAPI | None = None) -> ASGIApp:
    """What uvicorn serves on the data port: the app, with the step fast path in front of
    everything (even Starlette's own middleware) unless SEQSERVE_FAST_PATH=false, and the
    API-key check in front of that when keys are configured."""
    settings = settings or Settings()
    app = app or create_app(settings)
    asgi: ASGIApp = app
    # CORS headers come from Starlette's middleware, which the fast path skips: with CORS
    # configured, browsers' requests take the ordinary (slightly slower) route.
    if settings.fast_path and not settings.cors_origins:
        asgi = FastPath(app, app.state.metrics, settings.max_body_bytes)
    security: Security = app.state.security
    if security.keys:
        asgi = KeyGate(asgi, security.keys, app.state.metrics, allow_preflight=bool(settings.cors_origins))
    return TrailingSlash(asgi, app)


def create_admin_app(data_app: FastAPI) -> ASGIApp:
    """The admin listener's app: /v1/admin/* (behind the admin key; absent with
    SEQSERVE_ADMIN=off), /metrics and liveness, sharing `data_app`'s services and metrics."""
    security: Security = data_app.state.security
    app = FastAPI(title="seqserve admin", version=data_app.version, docs_url=None, redoc_url=None, openapi_url=None)
    app.state = data_app.state  # services appear here when the data app has started
    api_errors.install(app)
    app.include_router(health.metrics_router)
    app.add_api_route("/v2/health/live", health.live, methods=["GET"])
    if security.admin_enabled:
        app.include_router(admin.router)
    return TrailingSlash(admin.AdminGate(app, security.admin_key), app)

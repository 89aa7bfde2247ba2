"""Liveness, readiness, session-store health and metrics.

Readiness (`/v2/health/ready`, in the V2 protocol's form) means "predictions can be served":
at least one model is loaded. The session store is reported on its own
(`/v1/health/sessions`, and the `seqserve_session_store_up` metric), so an outage of Redis
takes down sessions but not stateless prediction, and Kubernetes does not pull every pod out
of the Service for it. Operators who want the store to gate readiness set
SEQSERVE_READY_REQUIRES_STORE=true.

`/metrics` is served by the admin listener only (service/app.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api.body import json_response_bytes, read_json
from service.api.deps import services
from service.api.schemas import ErrorBody
from service.core import v2
from service.core.errors import NotReady, ServiceError

router = APIRouter(tags=["health"])


@router.get("/v2/health/live")
async def live() -> Response:
    return Response(b'{"live":true}', media_type="application/json")


@router.get("/v2/health/ready", responses={503: {"model": ErrorBody, "description": "no model loaded (not_ready)"}})
async def ready(request: Request) -> Response:
    reason = await v2.not_ready(services(request))  # the same answer as gRPC's ServerReady
    if reason is not None:
        raise NotReady(reason)
    return Response(b'{"ready":true}', media_type="application/json")


@router.get("/v1/health/sessions", responses={503: {"model": ErrorBody, "description": "session store unavailable"}})
async def sessions_health(request: Request) -> Response:
    """200 when the session store answers, 503 (session_store_unavailable) when it does not."""
    store = services(request).store
    try:
        await store.ping()
    except ServiceError as exc:
        body = {**exc.body(), "store": store.kind, "available": False, **store.detail()}
        return Response(json_response_bytes(body), status_code=exc.status, media_type="application/json")
    body = {"store": store.kind, "available": True, **store.detail()}
    return Response(json_response_bytes(body), media_type="application/json")


metrics_router = APIRouter(tags=["admin"])


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(await services(request).metrics.render_async(), media_type="text/plain; version=0.0.4")


noop_router = APIRouter(tags=["bench"])


@noop_router.post("/v1/noop", include_in_schema=False)
async def noop(request: Request) -> Response:
    """The benchmark floor: read and parse the body, answer fixed JSON (SEQSERVE_NOOP_ROUTE)."""
    await read_json(request)
    return Response(json_response_bytes({"ok": True}), media_type="application/json")

"""Liveness, readiness and metrics (readiness in the V2 protocol's form, for Triton clients
and load balancers alike)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api.body import json_response_bytes, read_json
from service.api.deps import services
from service.errors import NotReady, ServiceError

router = APIRouter(tags=["health"])


@router.get("/v2/health/live")
async def live() -> Response:
    return Response(b'{"live":true}', media_type="application/json")


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    svc = services(request)
    if len(svc.registry) == 0:
        raise NotReady("no model is loaded")
    try:
        await svc.store.ping()
    except ServiceError as exc:
        raise NotReady(f"session store unavailable: {exc.message}") from None
    return Response(b'{"ready":true}', media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(await services(request).metrics.render_async(), media_type="text/plain; version=0.0.4")


noop_router = APIRouter(tags=["bench"])


@noop_router.post("/v1/noop", include_in_schema=False)
async def noop(request: Request) -> Response:
    """The benchmark floor: read and parse the body, answer fixed JSON (SEQSERVE_NOOP_ROUTE)."""
    await read_json(request)
    return Response(json_response_bytes({"ok": True}), media_type="application/json")

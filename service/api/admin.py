"""Operator endpoints: reload the model repository, unload a version, list sessions.

When SEQSERVE_API_KEY is set they require it (`X-API-Key: <key>` or `Authorization: Bearer
<key>`), compared in constant time. Session ids are listed only here: clients cannot
enumerate them.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Query, Request, Response

from service.api.body import json_response_bytes
from service.api.deps import services
from service.api.schemas import ErrorBody
from service.errors import ServiceError, Unauthorized
from service.reloader import reload

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}}


class VersionInUse(ServiceError):
    status, code = 409, "version_in_use"


def require_key(request: Request) -> None:
    key = services(request).settings.api_key
    if not key:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if given is None or not secrets.compare_digest(given.encode(), key.encode()):
        raise Unauthorized("admin endpoints need a valid API key (X-API-Key or Authorization: Bearer)")


def _json(data: dict) -> Response:
    return Response(json_response_bytes(data), media_type="application/json")


@router.post("/reload", responses=ERRORS)
async def reload_models(request: Request) -> Response:
    """Rescan the repository: load new versions, unload unwanted ones no session uses."""
    require_key(request)
    report = await reload(services(request))
    return _json(report.as_dict())


@router.post("/models/{name}/versions/{version}/unload", responses=ERRORS)
async def unload_version(name: str, version: int, request: Request) -> Response:
    """Unload one version now (refused while sessions are pinned to it). It comes back on
    the next reload if the repository still offers it under the version policy."""
    require_key(request)
    svc = services(request)
    model = svc.registry.get(name, version)
    async with svc.reload_lock:
        pinned = (await svc.store.usage()).get((name, version), 0)
        if pinned:
            raise VersionInUse(f"{model.key} is used by {pinned} session(s)", sessions=pinned)
        svc.registry.remove(name, version)
        svc.batchers.pop(model.key, None)
    return _json({"unloaded": [model.key]})


@router.get("/sessions", responses=ERRORS)
async def list_sessions(request: Request, limit: int = Query(1000, ge=1, le=100_000)) -> Response:
    require_key(request)
    store = services(request).store
    ids = await store.list_ids(limit)
    return _json({"sessions": ids, "count": await store.count()})

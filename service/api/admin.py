"""Operator endpoints: reload the model repository, unload a version, list sessions.

They are served only by the admin listener (SEQSERVE_ADMIN_PORT, see service/server.py), never
on the data port, and every one of them needs the admin key (`X-API-Key: <key>` or
`Authorization: Bearer <key>`; service/core/auth.py), checked by `AdminGate` before routing.
Session ids are listed only here: clients cannot enumerate them.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.body import json_response_bytes
from service.api.deps import services
from service.api.schemas import ErrorBody
from service.core.auth import AdminKey
from service.core.errors import ServiceError, Unauthorized
from service.core.reloader import reload

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


class VersionInUse(ServiceError):
    code = "version_in_use"


class AdminGate:
    """Refuses every request under /v1/admin without the admin key (401 JSON)."""

    def __init__(self, app: ASGIApp, key: AdminKey) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(router.prefix):
            try:
                self.key.check(scope["headers"])
            except Unauthorized as exc:
                body = orjson.dumps(exc.body())
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b'Bearer realm="admin"')]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _json(data: dict) -> Response:
    return Response(json_response_bytes(data), media_type="application/json")


@router.post("/reload", responses=ERRORS)
async def reload_models(request: Request) -> Response:
    """Rescan the repository: load new versions, unload unwanted ones no session uses."""
    report = await reload(services(request))
    return _json(report.as_dict())


@router.post("/models/{name}/versions/{version}/unload", responses=ERRORS)
async def unload_version(name: str, version: int, request: Request) -> Response:
    """Unload one version now (refused while sessions are pinned to it). It comes back on
    the next reload if the repository still offers it under the version policy."""
    svc = services(request)
    model = svc.registry.get(name, version)
    async with svc.reload_lock:
        pinned = (await svc.store.usage()).get((name, version), 0)
        if pinned:
            raise VersionInUse(f"{model.key} is used by {pinned} session(s)", sessions=pinned)
        svc.pool.unload(model)
    return _json({"unloaded": [model.key]})


@router.get("/sessions", responses=ERRORS)
async def list_sessions(request: Request, limit: int = Query(1000, ge=1, le=100_000)) -> Response:
    store = services(request).store
    ids = await store.list_ids(limit)
    return _json({"sessions": ids, "count": await store.count()})

"""The hot paths: `POST /v1/sessions/{id}/steps` and `POST /v1/models/{name}/predict`
answered straight from ASGI.

A streaming client sends one small request per reading, so per-request framework work is
what limits a server (measured: a FastAPI route that only parses its body and returns fixed
JSON tops out near 9,000 requests/s on 2 cores). This wrapper recognises those two routes by
their paths before any routing, dependency or response machinery runs, and calls the very same
handlers the FastAPI routes use (service.api.sessions.apply_steps, service.api.models.run_predict),
so behaviour, validation and errors are identical; the routes stay declared for the OpenAPI
document.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from service.api.gate import owner_of
from service.api.middleware import Recorder, begin, declared_too_large, read_body, send_error, send_json, too_large
from service.api.models import run_predict
from service.api.sessions import apply_steps
from service.api.streamed import Streamed
from service.core.errors import NotReady
from service.core.metrics import Metrics

SESSIONS, STEPS = "/v1/sessions/", "/steps"
MODELS, PREDICT = "/v1/models/", "/predict"
STEP_ROUTE = "/v1/sessions/{session_id}/steps"
PREDICT_ROUTE = "/v1/models/{name}/predict"


def _middle(path: str, prefix: str, suffix: str) -> str | None:
    """The one path segment between prefix and suffix, or None."""
    if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
        segment = path[len(prefix) : -len(suffix)]
        if "/" not in segment:
            return segment
    return None


class FastPath:
    """Wraps the FastAPI app: `app.state.services` is read per request (set at start-up).

    Request id, body limit, error rendering (any exception, not only domain errors), metrics
    and failure logging are service/api/middleware.py's functions, the ones RequestMiddleware
    applies to routed requests: only the routing is skipped here."""

    def __init__(self, app: Starlette, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.state = app.state
        self.max_body_bytes = max_body_bytes
        self.recorder = Recorder(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            session_id = _middle(path, SESSIONS, STEPS)
            if session_id is not None:
                await self._answer(scope, receive, send, STEP_ROUTE, "", apply_steps, session_id)
                return
            name = _middle(path, MODELS, PREDICT)
            if name is not None:
                await self._answer(scope, receive, send, PREDICT_ROUTE, name, run_predict, name)
                return
        await self.app(scope, receive, send)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: str,
        model: str,
        handler: Callable[[Any, str, bytes, str], Awaitable[bytes | Streamed]],
        arg: str,
    ) -> None:
        start = time.perf_counter()
        rid = begin(scope)
        limit = self.max_body_bytes
        try:
            if declared_too_large(scope, limit):
                raise too_large(limit)
            raw = await read_body(receive, limit)
            services = getattr(self.state, "services", None)
            if services is None:  # as service.api.deps.services says it on every route
                raise NotReady("the service is starting")
            body = await handler(services, arg, raw, owner_of(scope))
        except Exception as exc:  # the same answer RequestMiddleware gives: domain error or JSON 500
            status = await send_error(send, exc, rid)
        else:
            status = 200
            if isinstance(body, Streamed):  # a large reply, written as the client reads it
                del raw
                await body.response({"x-request-id": rid.decode("latin-1")})(scope, receive, send)
            else:
                await send_json(send, 200, rid, body)
        self.recorder.record(scope, route, model, status, time.perf_counter() - start)

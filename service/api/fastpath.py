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

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from service.api.gate import owner_of
from service.api.middleware import log_failure, request_id_of
from service.api.models import run_predict
from service.api.sessions import apply_steps
from service.errors import BadRequest, PayloadTooLarge, ServiceError, internal_error_body
from service.logs import set_request_id
from service.metrics import Metrics

log = logging.getLogger("seqserve.errors")

SESSIONS, STEPS = "/v1/sessions/", "/steps"
MODELS, PREDICT = "/v1/models/", "/predict"
STEP_ROUTE = "/v1/sessions/{session_id}/steps"
PREDICT_ROUTE = "/v1/models/{name}/predict"
JSON = (b"content-type", b"application/json")


def _middle(path: str, prefix: str, suffix: str) -> str | None:
    """The one path segment between prefix and suffix, or None."""
    if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
        segment = path[len(prefix) : -len(suffix)]
        if "/" not in segment:
            return segment
    return None


class FastPath:
    """Wraps the FastAPI app: `app.state.services` is read per request (set at start-up)."""

    def __init__(self, app: Starlette, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.state = app.state
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.step_ok = (metrics.requests.labels(STEP_ROUTE, "POST", "200", ""), metrics.latency.labels(STEP_ROUTE, ""))

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
        handler: Callable[[Any, str, bytes, str], Awaitable[bytes]],
        arg: str,
    ) -> None:
        start = time.perf_counter()
        rid = request_id_of(scope)
        try:
            raw = await self._read_body(receive)
            body = await handler(self.state.services, arg, raw, owner_of(scope))
            status = 200
        except ServiceError as exc:
            status, body = exc.status, orjson.dumps(exc.body())
        except Exception:  # a bug: logged with its traceback, answered like every route's 500
            set_request_id(rid.decode("latin-1"))
            log.exception("unhandled error")
            status, body = 500, orjson.dumps(internal_error_body(rid.decode("latin-1")))
        headers = [JSON, (b"content-length", b"%d" % len(body)), (b"x-request-id", rid)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - start
        if status == 200 and route == STEP_ROUTE:
            counter, latency = self.step_ok  # pre-bound: the hottest label lookups
        else:
            model = self.metrics.model_label(model)
            counter = self.metrics.requests.labels(route, "POST", str(status), model)
            latency = self.metrics.latency.labels(route, model)
        counter.inc()
        latency.observe(elapsed)
        if status >= 400:  # as RequestMiddleware does for everything else
            set_request_id(rid.decode("latin-1"))
            log_failure(scope, status, elapsed)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected before the body was read")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"request body exceeds {self.max_body_bytes} bytes", limit="max_body_bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

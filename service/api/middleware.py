"""One pure-ASGI middleware for what every HTTP request needs: a request id, the body size
limit, metrics per route template and model, and a log line for every error response.
Pure ASGI (no BaseHTTPMiddleware) keeps the per-request cost to a few microseconds."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, internal_error_body
from service.logs import set_request_id
from service.metrics import Metrics

log = logging.getLogger("seqserve.http")

# Request ids: a per-process random prefix and a counter; unique without a syscall per request.
_PREFIX = os.urandom(4).hex().encode()
_COUNTER = itertools.count()


def request_id_of(scope: Scope) -> bytes:
    """The client's X-Request-ID (bounded), or a fresh one."""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            return value[:64]
    return b"%s%x" % (_PREFIX, next(_COUNTER))


def log_failure(scope: Scope, status: int, elapsed: float) -> None:
    """One log line per error response (successes are not logged: a line costs more than a step)."""
    extra = {"method": scope["method"], "path": scope["path"], "status": status}
    log.info("request failed", extra={**extra, "duration_ms": round(elapsed * 1000, 3)})


class _TooLarge(PayloadTooLarge):
    """Raised from receive() inside a route, so the domain error handler answers 413."""


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = request_id_of(scope)
        length = next((value for key, value in scope["headers"] if key == b"content-length"), None)
        set_request_id(rid.decode("latin-1"))
        status = 500
        limit = self.max_body_bytes

        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._too_large(send, rid, limit)
            status = 413
            self._record(scope, status, start)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(f"request body exceeds {limit} bytes", limit="max_body_bytes")
            return message

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _TooLarge:
            if not started:
                await self._too_large(send, rid, limit)
            status = 413
        except Exception:
            # A bug below: answered here, inside this middleware, so the 500 carries the request
            # id header like every other answer (Starlette's own handler sits outside it).
            if started:
                raise  # too late for an answer: the connection is closed mid-response
            log.exception("unhandled error")
            body = orjson.dumps(internal_error_body(rid.decode("latin-1")))
            await self._send(send, 500, rid, body)
            status = 500
        finally:
            self._record(scope, status, start)

    async def _too_large(self, send: Send, rid: bytes, limit: int) -> None:
        body = orjson.dumps(PayloadTooLarge(f"request body exceeds {limit} bytes", limit="max_body_bytes").body())
        await self._send(send, 413, rid, body)

    @staticmethod
    async def _send(send: Send, status: int, rid: bytes, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"x-request-id", rid)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, status: int, start: float) -> None:
        elapsed = time.perf_counter() - start
        route: Any = scope.get("route")
        template = getattr(route, "path", "unmatched")
        model = self.metrics.model_label(scope.get("path_params", {}).get("name", ""))
        method = self.metrics.method_label(scope["method"])
        self.metrics.requests.labels(template, method, str(status), model).inc()
        self.metrics.latency.labels(template, model).observe(elapsed)
        if status >= 400:
            log_failure(scope, status, elapsed)

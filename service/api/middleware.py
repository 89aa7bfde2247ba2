"""One pure-ASGI middleware for what every HTTP request needs: a request id, the body size
limit, metrics per route template and model, and a log line for every error response.
Pure ASGI (no BaseHTTPMiddleware) keeps the per-request cost to a few microseconds."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge
from service.logs import set_request_id
from service.metrics import Metrics

log = logging.getLogger("seqserve.http")


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
        rid = None
        length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")[:64]
            elif key == b"content-length":
                length = value
        rid = rid or secrets.token_hex(8)
        set_request_id(rid)
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
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _TooLarge:
            if not started:
                await self._too_large(send, rid, limit)
            status = 413
        finally:
            self._record(scope, status, start)

    async def _too_large(self, send: Send, rid: str, limit: int) -> None:
        body = orjson.dumps(
            {"error": f"request body exceeds {limit} bytes", "code": "payload_too_large", "limit": "max_body_bytes"}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"x-request-id", rid.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, status: int, start: float) -> None:
        elapsed = time.perf_counter() - start
        route: Any = scope.get("route")
        template = getattr(route, "path", "unmatched")
        model = scope.get("path_params", {}).get("name", "")
        self.metrics.requests.labels(template, scope["method"], str(status), model).inc()
        self.metrics.latency.labels(template, model).observe(elapsed)
        if status >= 400:
            log.info(
                "request failed",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )

"""What every HTTP request needs, implemented once: a request id, the body size limit, the
JSON answer to a failure, metrics per route template and model, and a log line for every
error response. `RequestMiddleware` applies them to every routed request; the step fast path
(service/api/fastpath.py) calls the same functions for the requests it answers itself.
Pure ASGI (no BaseHTTPMiddleware) keeps the per-request cost to a few microseconds."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from prometheus_client.metrics import Counter, Histogram
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import render_error
from service.core.errors import BadRequest, PayloadTooLarge
from service.core.logs import set_request_id
from service.core.metrics import Metrics

log = logging.getLogger("seqserve.http")

# Request ids: a per-process random prefix and a counter; unique without a syscall per request.
_PREFIX = os.urandom(4).hex().encode()
_COUNTER = itertools.count()
JSON = (b"content-type", b"application/json")


def request_id_of(scope: Scope) -> bytes:
    """The client's X-Request-ID (bounded), or a fresh one."""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            return value[:64]
    return b"%s%x" % (_PREFIX, next(_COUNTER))


def begin(scope: Scope) -> bytes:
    """A request's id, also set for every log line written while it is served."""
    rid = request_id_of(scope)
    set_request_id(rid.decode("latin-1"))
    return rid


def log_failure(scope: Scope, status: int, elapsed: float) -> None:
    """One log line per error response (successes are not logged: a line costs more than a step)."""
    extra = {"method": scope["method"], "path": scope["path"], "status": status}
    log.info("request failed", extra={**extra, "duration_ms": round(elapsed * 1000, 3)})


# ---------------------------------------------------------------------------- body limit


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds {limit} bytes", limit="max_body_bytes")


def declared_too_large(scope: Scope, limit: int) -> bool:
    """The request's Content-Length is over the limit (or not a number): refuse unread."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            return not value.isdigit() or int(value) > limit
    return False


class _TooLarge(PayloadTooLarge):
    """Raised from receive() inside a route, so the domain error handler answers 413."""


def limited(receive: Receive, limit: int) -> Receive:
    """`receive` that raises the 413 error once more than `limit` body bytes have arrived."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge(f"request body exceeds {limit} bytes", limit="max_body_bytes")
        return message

    return limited_receive


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, at most `limit` bytes (413 beyond)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("client disconnected before the body was read")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# ---------------------------------------------------------------------------- answers and metrics


async def send_json(send: Send, status: int, rid: bytes, body: bytes) -> None:
    """A complete JSON response with its length and the request id."""
    headers = [JSON, (b"content-length", b"%d" % len(body)), (b"x-request-id", rid)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: BaseException, rid: bytes) -> int:
    """Answer `exc` as every route would (render_error); returns the status sent."""
    status, body = render_error(exc, rid.decode("latin-1"))
    await send_json(send, status, rid, body)
    return status


class Recorder:
    """Counts and times a finished request under bounded labels (Metrics' rules) and logs it
    when it failed. Label children are kept per label tuple: the prometheus lookup is the
    largest part of recording, and the label sets are bounded, so the cache is too."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._children: dict[tuple[str, str, int, str], tuple[Counter, Histogram]] = {}

    def record(self, scope: Scope, template: str, model: str, status: int, elapsed: float) -> None:
        metrics = self.metrics
        key = (template, metrics.method_label(scope["method"]), status, metrics.model_label(model))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                metrics.requests.labels(key[0], key[1], str(status), key[3]),
                metrics.latency.labels(template, key[3]),
            )
        children[0].inc()
        children[1].observe(elapsed)
        if status >= 400:
            log_failure(scope, status, elapsed)


# ---------------------------------------------------------------------------- the middleware


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.recorder = Recorder(metrics)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = begin(scope)
        status = 500
        limit = self.max_body_bytes
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            if declared_too_large(scope, limit):
                raise too_large(limit)
            await self.app(scope, limited(receive, limit), send_with_id)
        except Exception as exc:
            # A 413 from receive(), or a bug below: answered here, inside this middleware, so the
            # answer carries the request id header like every other (Starlette's own handler
            # sits outside it).
            if started:
                if isinstance(exc, PayloadTooLarge):
                    status = 413
                    return
                raise  # too late for an answer: the connection is closed mid-response
            status = await send_error(send, exc, rid)
        finally:
            self._record(scope, status, start)

    def _record(self, scope: Scope, status: int, start: float) -> None:
        route: Any = scope.get("route")
        template = getattr(route, "path", "unmatched")
        self.recorder.record(
            scope, template, scope.get("path_params", {}).get("name", ""), status, time.perf_counter() - start
        )


class TrailingSlash:
    """`/v1/models/` is `/v1/models`: a path that matches a route only without its trailing
    slash is served as that route, for every method and for WebSockets. Starlette's own answer is
    an empty 307 to the other spelling, which curl and most HTTP clients do not follow (and a
    POST's body would have to be sent again). Paths that match as written (`/ui/`) are left
    alone; a path that matches nothing either way gets the usual JSON 404. Costs one endswith()
    for every request without a trailing slash."""

    def __init__(self, app: ASGIApp, routed: Starlette) -> None:
        self.app = app
        self.routes: list[BaseRoute] = routed.router.routes  # the router's own list: later routes are seen
        self.state = routed.state  # as the app's other wrappers: its services, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and len(path) > 1 and path.endswith("/"):
            scope = self._canonical(scope)
        await self.app(scope, receive, send)

    def _matches(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self.routes)

    def _canonical(self, scope: Scope) -> Scope:
        if self._matches(scope):
            return scope
        stripped = {**scope, "path": scope["path"].rstrip("/") or "/"}
        if isinstance(scope.get("raw_path"), bytes):
            stripped["raw_path"] = scope["raw_path"].rstrip(b"/") or b"/"
        return stripped if self._matches(stripped) else scope

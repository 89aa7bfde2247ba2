"""The data plane's API-key check, in front of everything (the step fast path included).

Every HTTP request and WebSocket handshake needs a valid key, except the health probes, the
API documentation and the dashboard's static page (/ui: the page asks for a key and sends it).
The key's owner id goes into the ASGI scope (`OWNER`), where the
routes read it to create and find sessions; without configured keys every request has the
same empty owner. A refusal is 401 with the usual JSON error body; a WebSocket handshake is
refused with that same response when the server supports the denial-response extension
(uvicorn does), otherwise closed with code 1008 before it is accepted.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.middleware import Recorder, request_id_of
from service.core.auth import KeyRing
from service.core.errors import Unauthorized
from service.core.metrics import Metrics

OWNER = "seqserve.owner"
PUBLIC = frozenset({"/v2/health/live", "/v2/health/ready", "/v1/health/sessions", "/docs", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/ui/", "/docs-assets/")  # the dashboard page, the API docs' bundled assets
ROUTE_LABEL = "(unauthorized)"


def owner_of(scope: Scope) -> str:
    """The owner id the gate put into the scope; "" without keys."""
    return scope.get(OWNER, "")


class KeyGate:
    def __init__(self, app: ASGIApp, keys: KeyRing, metrics: Metrics, allow_preflight: bool = False) -> None:
        self.app = app
        self.keys = keys
        self.recorder = Recorder(metrics)
        self.allow_preflight = allow_preflight  # CORS preflights carry no credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._guarded(scope):
            try:
                scope[OWNER] = self.keys.owner(scope["headers"])
            except Unauthorized as exc:
                await self._refuse(scope, receive, send, exc)
                return
        await self.app(scope, receive, send)

    def _guarded(self, scope: Scope) -> bool:
        kind = scope["type"]
        if kind not in ("http", "websocket"):  # lifespan passes untouched
            return False
        path = scope["path"]
        if path in PUBLIC or path == "/ui" or path.startswith(PUBLIC_PREFIXES):
            return False
        return not (self.allow_preflight and kind == "http" and scope["method"] == "OPTIONS")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: Unauthorized) -> None:
        rid = request_id_of(scope)
        body = orjson.dumps(exc.body())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"www-authenticate", b'Bearer realm="seqserve"'),
            (b"x-request-id", rid),
        ]
        method = scope.get("method", "GET")
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await receive()  # websocket.connect
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await receive()
            await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
        self.recorder.record({"method": method, "path": scope["path"]}, ROUTE_LABEL, "", 401, 0.0)

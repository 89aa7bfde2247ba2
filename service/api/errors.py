"""The one place where errors become HTTP responses: JSON bodies {"error", "code", ...}.

Domain errors carry their own status. Framework errors (unknown route, wrong method, query
validation) are translated into the same shape. Anything unexpected is logged with its
traceback and answered 500 with the request id only: no stack traces or paths leave the server.
`render_error` is that rule as bytes, used by the request middleware, the step fast path and
the exception handlers alike, so every path answers a failure the same way.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service.api import codecs
from service.core.errors import ServiceError
from service.core.logs import request_id

log = logging.getLogger("seqserve.errors")

CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


def render_error(exc: BaseException, rid: str) -> tuple[int, bytes]:
    """(status, JSON body) for any exception: a domain error's own status and body, anything
    else (a bug) logged with its traceback and answered as the 500 carrying `rid`."""
    if isinstance(exc, ServiceError):
        return exc.status, codecs.error_body(exc)
    log.error("unhandled error", exc_info=exc)
    return 500, codecs.internal_error(rid)


def error_response(status: int, body: dict | bytes) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, media_type="application/json")


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def domain_error(request: Request, exc: ServiceError) -> Response:
        return error_response(*render_error(exc, request_id()))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()
        ]
        return error_response(422, {"error": "; ".join(problems) or "invalid request", "code": "invalid_request"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        return error_response(exc.status_code, {"error": message, "code": code})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # Reached only where no RequestMiddleware sits below Starlette's outermost handler
        # (the admin listener); the data app's middleware answers these itself.
        return error_response(*render_error(exc, request_id()))

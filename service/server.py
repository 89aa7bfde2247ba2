"""Running the app under uvicorn, the way `seqserve serve` and the container do."""

from __future__ import annotations

import os
from typing import Any

import uvicorn

from service import protocol
from service.app import create_asgi
from service.logs import configure
from service.settings import Settings


def app_from_env():  # uvicorn factory for multi-worker mode: each worker reads SEQSERVE_*
    settings = Settings()
    configure_limits(settings)
    return create_asgi(settings)


def configure_limits(settings: Settings) -> None:
    """The connection limits our protocol enforces (per process: each worker calls this)."""
    protocol.configure(settings.max_header_bytes, settings.header_timeout_seconds, settings.max_connections)


def http_protocol(settings: Settings) -> dict[str, Any]:
    """uvicorn's arguments for the HTTP protocol. Ours subclasses an internal of uvicorn's
    (pinned in pyproject); SEQSERVE_HTTP_PROTOCOL=uvicorn falls back to uvicorn's own, which
    has no header limits and enforces the connection limit as uvicorn's limit_concurrency."""
    if settings.http_protocol == "uvicorn":
        return {"http": "httptools", "limit_concurrency": settings.max_connections}
    return {"http": protocol.BoundedHttpToolsProtocol}


def serve(settings: Settings) -> None:
    configure(settings.log_level)
    configure_limits(settings)
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # one line per request costs more than the request; errors are logged
        **http_protocol(settings),
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "h11_max_incomplete_event_size": settings.max_header_bytes,  # only if h11 were chosen
        "ws_max_size": settings.ws_max_message_bytes,
        "ws_max_queue": settings.ws_max_queue,
        "loop": "uvloop",
        "timeout_graceful_shutdown": 30,
        "log_config": None,
    }
    if settings.workers > 1:
        if settings.session_store == "memory":
            raise SystemExit("several workers need a shared session store: set SEQSERVE_SESSION_STORE=redis://...")
        # Workers are separate processes: hand them the same settings through the environment.
        for name, value in settings.model_dump(mode="json").items():
            if value is not None and not isinstance(value, list):
                os.environ[f"SEQSERVE_{name.upper()}"] = str(value)
        uvicorn.run("service.server:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(create_asgi(settings), **common)

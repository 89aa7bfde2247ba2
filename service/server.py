"""Running the service under uvicorn, the way `seqserve serve` and the container do.

One process serves two listeners on one event loop: the data plane on SEQSERVE_HOST:PORT and
the admin API plus /metrics on SEQSERVE_ADMIN_HOST:ADMIN_PORT. The data server owns the
signal handling and the lifespan (models, session store); the admin server follows it: it
stops when the data server has finished its graceful shutdown.

Before anything starts, the security settings are checked (service/core/auth.py): a server that
listens beyond loopback without keys refuses to start, with the reason on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Generator
from typing import Any

import uvicorn

from service.api import http_coalescing as protocol
from service.app import create_admin_app, create_app, create_asgi
from service.core.auth import KeyConfigError, Security
from service.core.logs import configure
from service.core.settings import Settings

log = logging.getLogger("seqserve.server")


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


class _FollowerServer(uvicorn.Server):
    """The admin server: leaves SIGTERM/SIGINT to the data server, which tells it to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def check_security(settings: Settings) -> Security:
    try:
        security = Security.from_settings(settings)
    except KeyConfigError as exc:
        raise SystemExit(f"seqserve: {exc}") from None
    problems = security.refusals(settings)
    if problems:
        raise SystemExit("seqserve: refusing to start: " + "; ".join(problems))
    if not security.keys:
        log.warning("no API keys: the data plane is open to anyone who can reach %s", settings.host)
    if security.admin_enabled and security.admin_key.digest is None:
        admin_host = settings.admin_host or settings.host
        log.warning("no admin key: the admin API is open to anyone who can reach %s", admin_host)
    return security


def serve(settings: Settings) -> None:
    configure(settings.log_level)
    configure_limits(settings)
    security = check_security(settings)
    common: dict[str, Any] = {
        "log_level": settings.log_level,
        "access_log": False,  # one line per request costs more than the request; errors are logged
        **http_protocol(settings),
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "h11_max_incomplete_event_size": settings.max_header_bytes,  # only if h11 were chosen
        "loop": "uvloop",
        "timeout_graceful_shutdown": 30,
        "log_config": None,
    }
    data: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws_max_size": settings.ws_max_message_bytes,
        "ws_max_queue": settings.ws_max_queue,
    }
    if settings.workers > 1:
        if settings.session_store == "memory":
            raise SystemExit("several workers need a shared session store: set SEQSERVE_SESSION_STORE=redis://...")
        log.warning("several workers: no admin listener (admin API and /metrics need SEQSERVE_WORKERS=1)")
        # Workers are separate processes: hand them the same settings through the environment.
        for name, value in settings.model_dump(mode="json").items():
            if value is not None and not isinstance(value, list):
                os.environ[f"SEQSERVE_{name.upper()}"] = str(value)
        uvicorn.run("service.server:app_from_env", factory=True, workers=settings.workers, **data, **common)
        return

    app = create_app(settings, security)
    data_server = uvicorn.Server(uvicorn.Config(create_asgi(settings, app), **data, **common))
    admin_config = uvicorn.Config(
        create_admin_app(app),
        host=settings.admin_host or settings.host,
        port=settings.admin_port,
        lifespan="off",
        **common,
    )
    admin_server = _FollowerServer(admin_config)

    async def both() -> None:
        admin_task = asyncio.create_task(admin_server.serve())
        try:
            await data_server.serve()
        finally:
            admin_server.should_exit = True
            await admin_task

    with asyncio.Runner(loop_factory=data_server.config.get_loop_factory()) as runner:
        runner.run(both())

"""Running the app under uvicorn, the way `seqserve serve` and the container do."""

from __future__ import annotations

import os

import uvicorn

from service.app import create_asgi
from service.logs import configure
from service.protocol import CoalescingHttpToolsProtocol
from service.settings import Settings


def app_from_env():  # uvicorn factory for multi-worker mode: each worker reads SEQSERVE_*
    return create_asgi(Settings())


def serve(settings: Settings) -> None:
    configure(settings.log_level)
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # one line per request costs more than the request; errors are logged
        "http": CoalescingHttpToolsProtocol,
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

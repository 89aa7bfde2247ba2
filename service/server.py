"""Running the service under uvicorn, the way `seqserve serve` and the container do.

One process serves two listeners on one event loop: the data plane on SEQSERVE_HOST:PORT and
the admin API plus /metrics on SEQSERVE_ADMIN_HOST:ADMIN_PORT. The data server owns the
signal handling and the lifespan (models, session store); the admin server follows it: it
stops when the data server has finished its graceful shutdown.

Before anything starts, the security settings are checked (service/core/auth.py): a server that
listens beyond loopback without keys refuses to start, with the reason on stderr. Then every port
is bound (or, for gRPC, probed) before the models load: a port another process holds stops the
start at once with one line naming the port and the flag that changes it, never a traceback after
a minute of loading. Once both listeners accept, the log says where everything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import socket
from collections.abc import Generator
from dataclasses import dataclass
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
    per_client = settings.max_connections_per_client
    protocol.configure(
        settings.max_header_bytes,
        settings.header_timeout_seconds,
        settings.max_connections,
        body_timeout=settings.body_timeout_seconds,
        send_timeout=settings.send_timeout_seconds,
        max_per_client=max(1, settings.max_connections // 4) if per_client is None else per_client,
    )


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


@dataclass(frozen=True)
class Listener:
    """One of the ports `serve` opens, with the command-line flag and the setting that change it."""

    what: str
    host: str
    port: int
    flag: str
    env: str

    def refusal(self, reason: str) -> SystemExit:
        return SystemExit(
            f"seqserve: cannot listen for {self.what} on {_hostport(self.host, self.port)}: {reason}; "
            f"choose another with {self.flag} (or {self.env})"
        )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listeners(settings: Settings) -> tuple[Listener, Listener | None, Listener]:
    """The data, gRPC (None when off) and admin listeners; two of them on one port is refused here."""
    data = Listener("HTTP", settings.host, settings.port, "--port", "SEQSERVE_PORT")
    grpc = (
        Listener("gRPC", settings.host, settings.grpc_port, "--grpc-port", "SEQSERVE_GRPC_PORT")
        if settings.grpc_port
        else None
    )
    admin = Listener(
        "the admin API and /metrics",
        settings.admin_host or settings.host,
        settings.admin_port,
        "--admin-port",
        "SEQSERVE_ADMIN_PORT",
    )
    if data.port and admin.port == data.port:
        raise admin.refusal(f"port {admin.port} is the HTTP port ({data.flag})")
    if grpc is not None and data.port and grpc.port == data.port:
        raise grpc.refusal(f"port {grpc.port} is the HTTP port ({data.flag})")
    if grpc is not None and grpc.port == admin.port:
        raise admin.refusal(f"port {admin.port} is the gRPC port ({grpc.flag})")
    return data, grpc, admin


def bind(listener: Listener) -> socket.socket:
    """A socket bound to the listener's address (listening starts when uvicorn serves it), or
    SystemExit with one line: which port, why, and the flag that changes it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            listener.host, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise SystemExit(
            f"seqserve: cannot listen for {listener.what}: the address {listener.host!r} does not resolve "
            f"({exc.strerror}); set another with --host (or SEQSERVE_HOST)"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gRPC do: TIME_WAIT is no clash
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        raise listener.refusal(f"port {listener.port} is already in use" if in_use else str(exc.strerror)) from None
    sock.set_inheritable(True)
    return sock


def probe(listener: Listener) -> None:
    """The port is free now (gRPC binds its own socket once the models are loaded)."""
    bind(listener).close()


def _url(host: str, port: int) -> str:
    return f"http://{_hostport(host, port)}"


def announce(data: Listener, grpc: Listener | None, admin: Listener | None, admin_api: bool) -> None:
    """Where everything listens, once it does (ports as bound: 0 in the settings means any)."""
    base = _url(data.host, data.port)
    log.info("HTTP (v1 REST, WebSocket, KServe V2) on %s; dashboard %s/ui/, API docs %s/docs", base, base, base)
    if grpc is None:
        log.info("gRPC off (--grpc-port 0)")
    else:
        log.info("gRPC (KServe V2) on %s", _hostport(grpc.host, grpc.port))
    if admin is None:
        log.info("no admin listener with several workers (admin API and /metrics need --workers 1)")
    else:
        what = "admin API (/v1/admin/*) and /metrics" if admin_api else "/metrics (admin API off)"
        log.info("%s on %s", what, _url(admin.host, admin.port))


def _bound(listener: Listener, sock: socket.socket) -> Listener:
    port = sock.getsockname()[1]
    return Listener(listener.what, listener.host, port, listener.flag, listener.env)


def _freeze_startup_heap() -> None:
    """Move everything alive after startup (modules, FastAPI routes, ONNX Runtime wrappers,
    pydantic schemas: a few hundred thousand objects) out of the cyclic collector's reach.

    Without this every full collection walks that whole heap again; under load the collector
    runs every few hundred requests and, with 64 streams in flight, it showed as ~10 % of the
    server's CPU in a profile, charged to whichever line happened to allocate, and as
    millisecond pauses in the tail latency. Objects created while serving are still collected
    as usual."""
    gc.collect()
    gc.freeze()


def serve(settings: Settings) -> None:
    configure(settings.log_level)
    configure_limits(settings)
    data_listener, grpc_listener, admin_listener = _listeners(settings)
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
        probe(data_listener)
        if grpc_listener is not None:
            probe(grpc_listener)
        security = check_security(settings)
        log.warning("several workers: no admin listener (admin API and /metrics need SEQSERVE_WORKERS=1)")
        announce(data_listener, grpc_listener, None, security.admin_enabled)
        # Workers are separate processes: hand them the same settings through the environment.
        for name, value in settings.model_dump(mode="json").items():
            if value is not None and not isinstance(value, list):
                os.environ[f"SEQSERVE_{name.upper()}"] = str(value)
        uvicorn.run("service.server:app_from_env", factory=True, workers=settings.workers, **data, **common)
        return

    data_socket = bind(data_listener)
    admin_socket = bind(admin_listener)
    if grpc_listener is not None:
        probe(grpc_listener)
    security = check_security(settings)
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

    async def announce_when_started() -> None:
        while not (data_server.started and admin_server.started):
            await asyncio.sleep(0.05)
        announce(
            _bound(data_listener, data_socket),
            grpc_listener,
            _bound(admin_listener, admin_socket),
            security.admin_enabled,
        )
        _freeze_startup_heap()

    async def both() -> None:
        admin_task = asyncio.create_task(admin_server.serve(sockets=[admin_socket]))
        announcer = asyncio.create_task(announce_when_started())
        try:
            await data_server.serve(sockets=[data_socket])
        finally:
            announcer.cancel()
            admin_server.should_exit = True
            await admin_task

    with asyncio.Runner(loop_factory=data_server.config.get_loop_factory()) as runner:
        runner.run(both())
    if not data_server.started:  # the lifespan failed (logged above): no models, no store, ...
        raise SystemExit(3)

"""Run service/deploy/nginx.conf as a local process in front of local replicas.

The config is used verbatim: only the two files it includes are written here, next to a copy
of it (nginx resolves a relative `include` against the directory of the -c file):

    listen.conf      listen 127.0.0.1:PORT;
    upstreams.conf   server 127.0.0.1:P1 ...; server 127.0.0.1:P2 ...;

Compose mounts service/deploy/listen.conf and service/deploy/upstreams.conf instead. The
end-to-end tests can use `rendered_nginx_dir` / `start_nginx` as well.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "service" / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"


def rendered_nginx_dir(directory: Path, listen_port: int, upstream_ports: Sequence[int]) -> Path:
    """Write nginx.conf (copied unchanged), listen.conf and upstreams.conf into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NGINX_CONF, directory / "nginx.conf")
    (directory / "listen.conf").write_text(f"listen 127.0.0.1:{listen_port};\n")
    (directory / "upstreams.conf").write_text(
        "".join(f"server 127.0.0.1:{port} max_fails=2 fail_timeout=5s;\n" for port in upstream_ports)
    )
    return directory / "nginx.conf"


def nginx_command(nginx: str, conf: Path, *extra: str, globals_: str = "") -> list[str]:
    """nginx with its prefix and pid file inside the rendered directory (parallel-safe).

    nginx honours a single -g, so extra main-context directives go in `globals_`.
    """
    directory = conf.parent
    directives = f"pid {directory / 'nginx.pid'}; {globals_}".strip()
    return [nginx, "-p", str(directory), "-c", str(conf), "-g", directives, *extra]


def check_config(nginx: str, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nginx_command(nginx, conf, "-t"), capture_output=True, text=True, timeout=30)


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nginx did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def start_nginx(nginx: str, directory: Path, listen_port: int, upstream_ports: Sequence[int]) -> Iterator[Path]:
    """Render the config into `directory` and run nginx in the foreground until the block exits."""
    conf = rendered_nginx_dir(directory, listen_port, upstream_ports)
    log = (directory / "nginx.log").open("wb")
    proc = subprocess.Popen(nginx_command(nginx, conf, globals_="daemon off;"), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(listen_port, 10.0, proc)
        yield conf
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

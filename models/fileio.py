"""Reading the model repository without ever hanging the server.

A repository may sit on a network volume that stops answering, and a name that should be a
file may be a FIFO: `open()` of a FIFO blocks until a writer appears, and a read or even a
`stat()` on a hung volume blocks in the kernel, where no signal ends it. Such calls therefore
run in a daemon thread that the caller waits for with a timeout: on timeout the caller gets
an error and goes on (start-up, reload and SIGTERM are never held), and the stuck thread,
being a daemon, does not keep the process alive. Files are opened non-blocking and must be
regular files, so a FIFO is refused at once instead of after the timeout.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class RepositoryReadError(OSError):
    """A repository file that cannot be read now: not a regular file, too large, or too slow."""


def call_with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """fn() in a daemon thread; its result or exception, or RepositoryReadError after timeout."""
    box: dict[str, object] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller as is
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"read {what}", daemon=True).start()
    if not done.wait(timeout):
        raise RepositoryReadError(f"{what}: no answer within {timeout:g} s (hung volume?)")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; refuses FIFOs, devices and directories without blocking on them."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RepositoryReadError(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise RepositoryReadError(f"{path.name} is {info.st_size} bytes; at most {max_bytes} are read")
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > max_bytes:
                raise RepositoryReadError(f"{path.name} grew past {max_bytes} bytes while read")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_file(path: Path, max_bytes: int, timeout: float) -> bytes:
    return call_with_timeout(lambda: read_regular_file(path, max_bytes), timeout, path.name)

"""ONNX Runtime's optimised graphs, kept between loads (SEQSERVE_ORT_CACHE_DIR).

ONNX Runtime optimises a graph every time a session is created (constant folding, node fusions,
layout changes: all levels are on). For the forecaster that is about half of the nodes gone and
tens of milliseconds per load, paid again by every replica start, every reload and every worker.
With a cache directory, the first load writes the optimised graph there, and later loads of the
same file read it and skip the optimisation.

An optimised graph may hold fused kernels and layouts chosen for this CPU and this ONNX Runtime
build, so the entry is keyed by the model file's SHA-256, the ONNX Runtime version and the CPU
(model name and instruction-set flags): another machine or another release optimises afresh.
Only CPU sessions are cached (a CUDA session's optimised graph may hold provider-specific nodes).
The cache never decides what is served: the model's fingerprint stays the hash of the file in
the repository, an entry that does not load is deleted and the file is optimised again, and a
directory that cannot be written only means no cache (logged once).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from functools import cache
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger("seqserve.registry")


@cache
def machine_key() -> str:
    """What an optimised graph depends on besides the file: ONNX Runtime's version and the CPU."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                cpu += "|" + line.split(":", 1)[1].strip()
            if line.strip() == "":
                break  # the first processor describes them all
    except OSError:
        cpu += "|" + platform.processor()
    return hashlib.sha256(f"{ort.__version__}|{cpu}".encode()).hexdigest()[:16]


class GraphCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._warned = False

    def path_for(self, fingerprint: str) -> Path:
        return self.directory / f"{fingerprint}-{machine_key()}.ort.onnx"

    def load(self, fingerprint: str, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession | None:
        """A session on the cached optimised graph (no optimisation pass), or None."""
        path = self.path_for(fingerprint)
        if not path.is_file():
            return None
        level = options.graph_optimization_level
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # a truncated or foreign file: optimise the model again
            log.warning("optimised graph %s did not load (%s); optimising again", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        finally:
            options.graph_optimization_level = level

    def store_to(self, fingerprint: str, options: ort.SessionOptions) -> Path | None:
        """Ask the next session created with `options` to write its optimised graph to a
        temporary file here; returns that file (or None when the directory is not writable)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK):
                raise PermissionError(f"{self.directory} is not writable")
        except OSError as exc:
            if not self._warned:
                log.warning("no cache of optimised graphs: %s", exc)
                self._warned = True
            return None
        temporary = self.directory / f".{fingerprint}-{os.getpid()}.tmp.onnx"
        options.optimized_model_filepath = str(temporary)
        return temporary

    def commit(self, fingerprint: str, temporary: Path) -> None:
        """Move a written graph into place (atomic: a concurrent reader sees all or nothing)."""
        try:
            if temporary.is_file() and temporary.stat().st_size > 0:
                os.replace(temporary, self.path_for(fingerprint))
        except OSError as exc:
            log.warning("optimised graph not cached: %s", exc)
        finally:
            temporary.unlink(missing_ok=True)

"""Reading the versioned model repository: <repo>/<name>/<version>/model.onnx (+ manifest.json).

Versions are positive integers in ASCII digits. Anything else in the tree (temporary directories that a
writer renames into place, stray files) is ignored, so a half-written entry is never seen.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.fileio import call_with_timeout, read_file

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
READ_TIMEOUT = 10.0  # seconds; the service passes SEQSERVE_REPOSITORY_READ_TIMEOUT_SECONDS
MAX_MANIFEST_BYTES = 1 << 20
MAX_MODEL_BYTES = 2 << 30  # protobuf's own limit for one ONNX file

log = logging.getLogger("seqserve.repository")


@dataclass(frozen=True)
class RepositoryEntry:
    name: str
    version: int
    path: Path  # the version directory

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def manifest(self, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        """manifest.json, or {} when there is none or it cannot be read (logged: not a
        regular file, too large, too slow, not JSON); the model still serves."""
        path = self.path / MANIFEST_FILE
        try:
            manifest = json.loads(read_file(path, MAX_MANIFEST_BYTES, timeout))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _ignore_once(f"{self.name} v{self.version}: ignoring manifest.json: {_reason(exc)}")
            return {}
        return manifest if isinstance(manifest, dict) else {}


def is_version_name(name: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' or '٣', which int() then refuses."""
    return name.isascii() and name.isdigit()


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def scan_repository(root: str | Path, timeout: float = READ_TIMEOUT) -> list[RepositoryEntry]:
    """All complete entries, sorted by name then version. The directory walk runs with a
    timeout (a hung volume gives an empty, logged result instead of a hung caller)."""
    try:
        return call_with_timeout(lambda: _scan(Path(root)), timeout, "model repository scan")
    except OSError as exc:
        log.error("cannot scan the model repository: %s", _reason(exc))
        return []


def _scan(root: Path) -> list[RepositoryEntry]:
    entries: list[RepositoryEntry] = []
    if not root.is_dir():
        return entries
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not NAME_PATTERN.match(model_dir.name):
            continue
        for version_dir in model_dir.iterdir():
            where = f"{model_dir.name}/{version_dir.name}"
            if not is_version_name(version_dir.name):
                if version_dir.name.isdigit():
                    _ignore_once(f"ignoring {where!r}: a version is ASCII digits only")
                continue
            model_path = version_dir / MODEL_FILE
            if model_path.is_file():
                entries.append(RepositoryEntry(model_dir.name, int(version_dir.name), version_dir))
            elif model_path.exists():
                _ignore_once(f"ignoring {where!r}: model.onnx is not a regular file")
    entries.sort(key=lambda e: (e.name, e.version))
    return entries


_ignored: set[str] = set()


def _ignore_once(message: str) -> None:
    """One log line per problem per process (the repository is polled, manifests re-read)."""
    if message not in _ignored:
        _ignored.add(message)
        log.warning("model repository: %s", message)

"""Reading the versioned model repository: <repo>/<name>/<version>/model.onnx (+ manifest.json).

Versions are positive integers. Anything else in the tree (temporary directories that a
writer renames into place, stray files) is ignored, so a half-written entry is never seen.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class RepositoryEntry:
    name: str
    version: int
    path: Path  # the version directory

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            return {}


def scan_repository(root: str | Path) -> list[RepositoryEntry]:
    """All complete entries, sorted by name then version."""
    root = Path(root)
    entries: list[RepositoryEntry] = []
    if not root.is_dir():
        return entries
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not NAME_PATTERN.match(model_dir.name):
            continue
        for version_dir in model_dir.iterdir():
            if version_dir.name.isdigit() and (version_dir / MODEL_FILE).is_file():
                entries.append(RepositoryEntry(model_dir.name, int(version_dir.name), version_dir))
    entries.sort(key=lambda e: (e.name, e.version))
    return entries

"""Atomic, versioned writes into the model repository that models/repository.py reads.

An entry is built completely inside `<repo>/<name>/.tmp-<random>` (the service ignores names
that are not digits), then renamed to `<repo>/<name>/<version>`. rename(2) of a directory onto
an existing non-empty directory fails, so two writers racing for the same number cannot both
win: the loser rewrites its manifest with the next number and tries again. Versions are
max(existing)+1, so they only grow and an existing version is never overwritten.

If building the entry fails, the temporary directory, and any directories this call created,
are removed: the repository is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.data import TrainingError

MANIFEST_FILE = "manifest.json"
MAX_ATTEMPTS = 100


def existing_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    from models.repository import is_version_name

    return sorted(int(p.name) for p in model_dir.iterdir() if is_version_name(p.name))


def next_version(model_dir: Path) -> int:
    versions = existing_versions(model_dir)
    return (versions[-1] if versions else 0) + 1


def _write_manifest(directory: Path, manifest: dict[str, Any], version: int) -> None:
    manifest["version"] = version
    tmp = directory / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, directory / MANIFEST_FILE)


def publish(
    repository: str | Path,
    name: str,
    build: Callable[[Path], dict[str, Any]],
) -> tuple[int, Path]:
    """Run `build(tmp_dir)` (writes model.onnx and plots, returns the manifest dict), then move
    the directory into place under the next free version. Returns (version, final path)."""
    from models.repository import NAME_PATTERN

    if not NAME_PATTERN.match(name):
        raise TrainingError(f"invalid model name {name!r}: use letters, digits, '_', '.', '-' (max 64)")
    root = Path(repository)
    model_dir = root / name
    created: list[Path] = []
    for directory in (root, model_dir):
        if not directory.exists():
            try:
                directory.mkdir()
                created.append(directory)
            except FileExistsError:
                pass  # a concurrent writer made it; not ours to remove
            except OSError as exc:
                _cleanup(None, created)
                raise TrainingError(f"cannot create {directory}: {exc}") from exc
    tmp = model_dir / f".tmp-{uuid.uuid4().hex[:12]}"
    try:
        tmp.mkdir()
        manifest = build(tmp)
        version = next_version(model_dir)
        for _ in range(MAX_ATTEMPTS):
            _write_manifest(tmp, manifest, version)
            final = model_dir / str(version)
            if not final.exists():
                try:
                    os.rename(tmp, final)
                    return version, final
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            version = max(version + 1, next_version(model_dir))
        raise TrainingError(f"could not claim a version under {model_dir} after {MAX_ATTEMPTS} attempts")
    except BaseException:
        _cleanup(tmp, created)
        raise


def _cleanup(tmp: Path | None, created: list[Path]) -> None:
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    for directory in reversed(created):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if still empty: a concurrent writer may have used it

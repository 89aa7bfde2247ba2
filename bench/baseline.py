"""A runnable copy of an older commit, for the "no regression" comparison in the same run.

`git archive <commit>` unpacked into a directory: its own service/, models/ and seqserve/ are what
a server started there imports first (cwd and PYTHONPATH), with this checkout's virtualenv. The
copy is keyed by the full commit hash, so a run reuses it and a changed commit never does.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.servers import ROOT

# "No regression" is measured against this commit: the service just before the replica-local
# record cache (issue #20). It must load the models today's code exports (the bench model's
# manifest); tests/bench/test_bench_harness.py checks that it does. Move it forward when the
# model config gains a field the old service refuses.
DEFAULT_BASELINE = "fbe055e"


class BaselineError(RuntimeError):
    """The baseline commit cannot be resolved or exported."""


@dataclass(frozen=True)
class Snapshot:
    commit: str  # full hash
    short: str
    root: Path


def resolve(commit: str, repo: Path = ROOT) -> tuple[str, str]:
    """Full and short hash of `commit` in `repo`; BaselineError when git does not know it."""
    try:
        full = subprocess.run(
            ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BaselineError(f"cannot resolve baseline commit {commit!r}: {exc}") from exc
    return full, full[:7]


def snapshot(commit: str, parent: Path, repo: Path = ROOT) -> Snapshot:
    """Export `commit` under `parent` (once) and return where it is."""
    full, short = resolve(commit, repo)
    root = parent / f"seqserve-{full}"
    if (root / ".complete").is_file():
        return Snapshot(full, short, root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", full], cwd=repo, stdout=subprocess.PIPE)
    try:
        subprocess.run(["tar", "-x", "-C", str(root)], stdin=archive.stdout, check=True, timeout=300)
    finally:
        if archive.stdout:
            archive.stdout.close()
        archive.wait(60)
    if archive.returncode != 0:
        raise BaselineError(f"git archive {short} failed with {archive.returncode}")
    if not (root / "service").is_dir():
        raise BaselineError(f"commit {short} has no service/ to run")
    (root / ".complete").write_text(full + "\n")
    return Snapshot(full, short, root)

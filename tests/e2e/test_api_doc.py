"""Every example in docs/api.md runs as written against a real server serving the documented
`lstm` model (shell blocks under bash with curl, Python blocks in a fresh interpreter), with
only the address changed to the test server's; JSON blocks are valid JSON, and the documented
error is the one the server answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from tests.support.servers import ROOT, ServiceProcess

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "api.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(DOC.read_text()) if lang == language]


def pointed_at(code: str, server: ServiceProcess) -> str:
    return code.replace("localhost:8000", f"127.0.0.1:{server.port}").replace(
        "localhost:8001", f"127.0.0.1:{server.grpc_port}"
    )


def test_the_page_has_runnable_examples() -> None:
    assert len(blocks("sh")) >= 2 and len(blocks("python")) >= 3
    assert set(lang for lang, _ in BLOCK.findall(DOC.read_text())) <= {"sh", "python", "json"}


@pytest.mark.parametrize("index", range(len(blocks("sh"))))
def test_shell_examples_run(server: ServiceProcess, index: int) -> None:
    curl = subprocess.run(["bash", "-c", "command -v curl"], capture_output=True)
    assert curl.returncode == 0, "curl is not installed (make test installs it)"
    code = "set -euo pipefail\n" + pointed_at(blocks("sh")[index], server)
    result = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # every command answered JSON without an error (a bulk request's per-entry errors included)
    assert result.stdout.strip(), code
    for document in re.findall(r"\{.*\}", result.stdout):
        assert '"error"' not in document, (code, document)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(server: ServiceProcess, index: int) -> None:
    code = pointed_at(blocks("python")[index], server)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stdout.lower(), result.stdout


def test_json_examples_are_json_and_the_error_is_the_servers(client: httpx.Client) -> None:
    documents = [json.loads(body) for body in blocks("json")]
    errors = [d for d in documents if "error" in d]
    assert errors and all(isinstance(d["error"], str) and isinstance(d["code"], str) for d in errors)
    # the first is the one this test server can produce (the others need other models)
    error = errors[0]
    session = client.post("/v1/models/lstm/sessions").json()["session_id"]
    answer = client.post(f"/v1/sessions/{session}/steps", json={"inputs": [[20.1, 510]]})
    assert answer.status_code == 422
    assert {key: answer.json()[key] for key in error} == error

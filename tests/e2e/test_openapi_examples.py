"""Every example in the served OpenAPI document works: what a user trying the API from /docs
sends (path parameter examples and every request body example) is answered 2xx by a server
that serves the default `electricity` model.

Two kinds of value cannot be literal in a document: a session id (sessions are created at run
time) and, in a bulk body, the session ids of its entries. Those are replaced with fresh
sessions made from the document's own create-session example; everything else is sent as the
document gives it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import httpx
import pytest

from service.api import openapi, schemas
from tests.support.demand import write_manifest
from tests.support.models import export_electricity
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    repository = tmp_path_factory.mktemp("repository")
    directory = export_electricity(repository)
    write_manifest(directory, {"name": "electricity", "version": 1, "task": "forecast"})
    with ServiceProcess(repository, tmp_path_factory.mktemp("logs")) as proc:
        yield proc


@pytest.fixture(scope="module")
def document(served: ServiceProcess) -> dict:
    return httpx.get(f"{served.url}/openapi.json", timeout=30).json()


def _create_example(document: dict) -> dict:
    media = document["paths"]["/v1/models/{name}/sessions"]["post"]["requestBody"]["content"]["application/json"]
    return next(iter(media["examples"].values()))["value"]


def _fresh_session(client: httpx.Client, document: dict) -> str:
    r = client.post(f"/v1/models/{schemas.DEFAULT_MODEL}/sessions", json=_create_example(document))
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def test_examples_name_the_default_model(document: dict) -> None:
    found = openapi.examples(document)
    bodies = [body for *_, body in found if body is not None]
    assert len(bodies) >= 10  # every body the API reads has at least one example
    for _, path, params, _ in found:
        if "{name}" in path and not path.startswith("/v1/ui/"):
            assert params["name"] == "electricity", path
    media_ops = [
        (path, method)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    for path, method in media_ops:
        media = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert media.get("examples"), f"{method.upper()} {path} documents a body without an example"


def test_every_example_in_the_document_is_accepted(served: ServiceProcess, document: dict) -> None:
    examples = openapi.examples(document)
    deletes = [e for e in examples if e[0] == "DELETE"]
    tried = 0
    with httpx.Client(base_url=served.url, timeout=30) as client:
        for method, path, params, body in [e for e in examples if e[0] != "DELETE"] + deletes:
            params = dict(params)
            if "session_id" in params:
                params["session_id"] = _fresh_session(client, document)
            body = copy.deepcopy(body)
            if isinstance(body, dict) and isinstance(body.get("steps"), list):
                for entry in body["steps"]:
                    entry["session_id"] = _fresh_session(client, document)
            url = path.format(**params)
            r = client.request(method, url, json=body) if body is not None else client.request(method, url)
            assert 200 <= r.status_code < 300, f"{method} {path} with {body}: {r.status_code} {r.text[:300]}"
            if isinstance(body, dict) and "steps" in body:
                assert all("outputs" in result for result in r.json()["results"]), r.text
            tried += 1
    assert tried == len(examples)


def test_documented_error_statuses_of_every_operation(document: dict) -> None:
    """Any operation can answer the body limit's 413 and the JSON 500, both in the error shape."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("413", "500"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert "HTTPValidationError" not in str(response), (method, path, status)

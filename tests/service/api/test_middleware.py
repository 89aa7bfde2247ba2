"""A trailing slash is the same resource, for every method (no empty 307 to follow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_admin_app, create_app, create_asgi
from service.core.settings import Settings


@pytest.fixture(scope="module")
def client(repository: Path) -> Iterator[TestClient]:
    with TestClient(create_asgi(Settings(model_repository=repository, grpc_port=0))) as c:
        yield c


def test_get_with_a_trailing_slash_is_the_resource(client: TestClient) -> None:
    plain, slashed = client.get("/v1/models"), client.get("/v1/models/", follow_redirects=False)
    assert slashed.status_code == 200, slashed.text
    assert slashed.json() == plain.json()
    assert client.get("/v2/health/ready/", follow_redirects=False).status_code == 200


def test_post_with_a_trailing_slash_keeps_its_body(client: TestClient) -> None:
    body = {"inputs": [[[20.0, 500.0, 12.0]]]}
    slashed = client.post("/v1/models/lstm/predict/", json=body, follow_redirects=False)
    assert slashed.status_code == 200, slashed.text
    assert slashed.json() == client.post("/v1/models/lstm/predict", json=body).json()
    created = client.post("/v1/models/gru/sessions/", json={}, follow_redirects=False)
    assert created.status_code == 201, created.text
    sid = created.json()["session_id"]
    step = client.post(f"/v1/sessions/{sid}/steps/", json={"inputs": [[20.0, 500.0, 12.0]], "position": 0})
    assert step.status_code == 200 and step.json()["position"] == 1, step.text


def test_unknown_paths_stay_json_404s(client: TestClient) -> None:
    for path in ("/v1/nothing/", "/v1/nothing", "/v1/models/lstm/nothing/"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 404, (path, r.status_code)
        assert r.headers["content-type"].startswith("application/json") and r.json()["error"], path


def test_the_dashboard_keeps_its_slash(client: TestClient) -> None:
    assert client.get("/ui/", follow_redirects=False).status_code == 200


def test_the_admin_listener_too(repository: Path) -> None:
    app = create_app(Settings(model_repository=repository, grpc_port=0))
    with TestClient(create_asgi(Settings(model_repository=repository, grpc_port=0), app)):
        admin = TestClient(create_admin_app(app))
        assert admin.get("/metrics/", follow_redirects=False).status_code == 200

"""An unexpected exception anywhere (a bug) is answered with the JSON 500 body and the request
id, on the fast path, on ordinary routes and on the WebSocket stream; never a plain-text 500
or a dropped connection. The exception is injected into the real app's services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_asgi
from service.settings import Settings

STEP = {"inputs": [[20.0, 500.0, 12.0]]}


class Boom(RuntimeError):
    pass


def boom(*args, **kwargs):
    raise Boom("injected failure /some/server/path")


@pytest.fixture(params=[True, False], ids=["fast-path", "routes-only"])
def client(request: pytest.FixtureRequest, repository: Path) -> Iterator[TestClient]:
    app = create_asgi(Settings(model_repository=repository, fast_path=request.param))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def services(client: TestClient):
    app = client.app
    return getattr(app, "app", app).state.services  # the FastPath wrapper holds the FastAPI app


def assert_internal_error(r, request_id: str | None = None) -> None:
    assert r.status_code == 500, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["code"] == "internal_error" and body["request_id"], body
    assert "server/path" not in r.text and "Boom" not in r.text
    assert r.headers["x-request-id"] == body["request_id"]
    if request_id is not None:
        assert body["request_id"] == request_id


def test_step_failing_unexpectedly_is_a_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = client.post("/v1/models/lstm/sessions").json()["session_id"]
    monkeypatch.setattr(services(client).manager, "step", boom)
    assert_internal_error(
        client.post(f"/v1/sessions/{sid}/steps", json=STEP, headers={"x-request-id": "req-1"}), "req-1"
    )
    assert client.get(f"/v1/sessions/{sid}").status_code == 200  # the server goes on


def test_predict_failing_unexpectedly_is_a_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services(client), "batcher_for", boom)
    assert_internal_error(client.post("/v1/models/lstm/predict", json={"inputs": [STEP["inputs"]]}))


def test_ordinary_route_failing_unexpectedly_is_a_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services(client).manager, "get", boom)
    assert_internal_error(client.get("/v1/sessions/anything"))


def test_websocket_failing_unexpectedly_gets_a_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = client.post("/v1/models/lstm/sessions").json()["session_id"]
    monkeypatch.setattr(services(client).manager, "step_stream", boom)
    with client.websocket_connect(f"/v1/sessions/{sid}/stream") as ws:
        ws.send_json(STEP)
        reply = ws.receive_json()
    assert reply["status"] == 500 and reply["code"] == "internal_error" and reply["request_id"], reply
    assert "server/path" not in str(reply)

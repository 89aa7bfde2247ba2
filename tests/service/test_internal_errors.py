"""An unexpected exception anywhere (a bug) is answered with the JSON 500 body and the request
id, on the fast path, on ordinary routes and on the WebSocket stream; never a plain-text 500
or a dropped connection. The exception is injected into the real app's services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_asgi
from service.core.settings import Settings

STEP = {"inputs": [[20.0, 500.0, 12.0]]}


class Boom(RuntimeError):
    pass


def boom(*args, **kwargs):
    raise Boom("injected failure /some/server/path")


@pytest.fixture(params=[True, False], ids=["fast-path", "routes-only"])
def client(request: pytest.FixtureRequest, repository: Path) -> Iterator[TestClient]:
    app = create_asgi(Settings(model_repository=repository, fast_path=request.param, grpc_port=0))
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
    monkeypatch.setattr(services(client).engine, "step", boom)
    assert_internal_error(
        client.post(f"/v1/sessions/{sid}/steps", json=STEP, headers={"x-request-id": "req-1"}), "req-1"
    )
    assert client.get(f"/v1/sessions/{sid}").status_code == 200  # the server goes on


def test_predict_failing_unexpectedly_is_a_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services(client), "batcher_for", boom)
    assert_internal_error(client.post("/v1/models/lstm/predict", json={"inputs": [STEP["inputs"]]}))


def test_ordinary_route_failing_unexpectedly_is_a_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services(client).sessions, "get", boom)
    assert_internal_error(client.get("/v1/sessions/anything"))


def test_websocket_failing_unexpectedly_gets_a_json_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = client.post("/v1/models/lstm/sessions").json()["session_id"]
    monkeypatch.setattr(services(client).engine, "apply", boom)
    with client.websocket_connect(f"/v1/sessions/{sid}/stream") as ws:
        ws.send_json(STEP)
        reply = ws.receive_json()
    assert reply["status"] == 500 and reply["code"] == "internal_error" and reply["request_id"], reply
    assert "server/path" not in str(reply)


def test_model_whose_run_raises_is_a_json_500_on_steps_and_predict(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure comes from inside ONNX Runtime's call (below the batcher and the session
    engine): the step and predict answers are the same JSON 500 on either path."""
    sid = client.post("/v1/models/lstm/sessions").json()["session_id"]
    for model in services(client).registry:
        monkeypatch.setattr(model, "run", boom)
    step = client.post(f"/v1/sessions/{sid}/steps", json=STEP, headers={"x-request-id": "run-1"})
    assert_internal_error(step, "run-1")
    assert_internal_error(client.post("/v1/models/gru/predict", json={"inputs": [STEP["inputs"]]}))
    monkeypatch.undo()
    after = client.post(f"/v1/sessions/{sid}/steps", json={**STEP, "position": 0})
    assert after.status_code == 200 and after.json()["position"] == 1, after.text  # the failed step changed nothing


def test_failures_are_counted_alike_on_both_paths(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path records through the middleware's recorder: same route label, status, model."""
    for model in services(client).registry:
        monkeypatch.setattr(model, "run", boom)
    client.post("/v1/models/gru/predict", json={"inputs": [STEP["inputs"]]})
    client.post("/v1/models/gru/predict", content=b"{", headers={"content-type": "application/json"})
    metrics = client.app.state.metrics  # FastPath shares the app's state
    counted = metrics.requests.labels("/v1/models/{name}/predict", "POST", "500", "gru")._value.get()
    refused = metrics.requests.labels("/v1/models/{name}/predict", "POST", "400", "gru")._value.get()
    assert (counted, refused) == (1, 1)

"""A start_time written like the training file's dates: training records the order of its
day/month/year dates (manifest.json `time.day_first`), and v1 predict, session creation and
V2 infer read a slash date in that order, through the real app. A date contradicting the order
is a 422 naming it; without a recorded order only a date that is the same either way (or has
a field over 12) is taken, and the ambiguity error gives both ISO spellings."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from service.app import create_asgi
from service.core.settings import Settings
from tests.support.models import export_forecaster


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("orders")
    for name, order in (("us", False), ("eu", True), ("plain", None)):
        path = export_forecaster(root, name, 1, "gru", seed=2)  # an hourly clock, horizon 2
        if order is not None:
            (path.parent / "manifest.json").write_text(json.dumps({"time": {"column": "date", "day_first": order}}))
    with TestClient(create_asgi(Settings(model_repository=root, grpc_port=0))) as c:
        yield c


def predict(client: TestClient, model: str, start: str):
    return client.post(f"/v1/models/{model}/predict", json={"inputs": [[[1.0, 0.0]]], "start_time": start})


def first_label(client: TestClient, model: str, start: str) -> str:
    reply = predict(client, model, start)
    assert reply.status_code == 200, reply.text
    return reply.json()["forecast_times"][0][0][0]


def test_slash_dates_are_read_in_the_order_training_recorded(client: TestClient) -> None:
    assert first_label(client, "us", "01/02/2024") == "2024-01-02T01:00:00Z"  # month first: 2 January
    assert first_label(client, "eu", "01/02/2024") == "2024-02-01T01:00:00Z"  # day first: 1 February
    assert first_label(client, "us", "01/31/2024") == "2024-01-31T01:00:00Z"
    assert first_label(client, "plain", "01/01/2024") == "2024-01-01T01:00:00Z"  # the same either way


def test_a_date_against_the_recorded_order_is_a_422_naming_it(client: TestClient) -> None:
    for model, start, order in (("us", "13/01/2024", "month/day/year"), ("eu", "01/31/2024", "day/month/year")):
        reply = predict(client, model, start)
        assert reply.status_code == 422, reply.text
        assert reply.json()["field"] == "start_time" and f"is not {order}" in reply.json()["error"]
        created = client.post(f"/v1/models/{model}/sessions", json={"start_time": start})
        assert created.status_code == 422 and f"is not {order}" in created.json()["error"], created.text


def test_without_a_recorded_order_an_ambiguous_date_names_both_iso_spellings(client: TestClient) -> None:
    reply = predict(client, "plain", "01/02/2024")
    assert reply.status_code == 422 and reply.json()["field"] == "start_time"
    error = reply.json()["error"]
    assert "2024-02-01 if it is day/month/year" in error and "2024-01-02 if it is month/day/year" in error


def test_sessions_and_v2_read_the_same_order(client: TestClient) -> None:
    created = client.post("/v1/models/us/sessions", json={"start_time": "01/02/2024"})
    assert created.status_code == 201, created.text
    sid = created.json()["session_id"]
    stepped = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": [[1.0, 0.0]]})
    assert stepped.json()["forecast_times"][0][0] == "2024-01-02T01:00:00Z", stepped.text
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 2], "data": [1.0, 0.0]}],
        "parameters": {"start_time": "01/02/2024"},
    }
    reply = client.post("/v2/models/us/infer", json=body)
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.json()["parameters"]["forecast_times"])[0][0][0] == "2024-01-02T01:00:00Z"
    body["parameters"] = {"start_time": "13/01/2024"}
    refused = client.post("/v2/models/us/infer", json=body)
    assert refused.status_code == 400 and "is not month/day/year" in refused.text, refused.text

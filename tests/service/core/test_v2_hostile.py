"""V2 infer under hostile requests: deeply nested values where names, datatypes and shapes
belong, absurd shapes, and a sequence restart at the per-model session quota. Every one is a
4xx with a bounded message (never a 500), through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from service.app import create_asgi
from service.core.settings import Settings

DEPTH = 1000
NESTED = "[" * DEPTH + "0" + "]" * DEPTH  # JSON text: orjson reads it, a repr() of it crashes


@pytest.fixture(scope="module")
def client(repository: Path) -> Iterator[TestClient]:
    with TestClient(create_asgi(Settings(model_repository=repository, max_sessions_per_model=2, grpc_port=0))) as c:
        yield c


def infer(client: TestClient, body: str, model: str = "lstm"):
    return client.post(f"/v2/models/{model}/infer", content=body, headers={"content-type": "application/json"})


def tensor(**fields: str) -> str:
    """A tensor spec as JSON text, where fields replace the good ones (raw JSON values)."""
    good = {"name": '"input"', "shape": "[1, 1, 3]", "datatype": '"FP32"', "data": "[20.0, 500.0, 12.0]"}
    good.update(fields)
    return "{" + ", ".join(f'"{k}": {v}' for k, v in good.items()) + "}"


def assert_refused(r, status: int = 400) -> dict:
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert len(body["error"]) < 400, body["error"]
    return body


@pytest.mark.parametrize(
    "body",
    [
        '{"inputs": [' + tensor(shape=NESTED) + "]}",
        '{"inputs": [' + tensor(datatype=NESTED) + "]}",
        '{"inputs": [' + tensor(name=NESTED) + "]}",
        '{"inputs": [' + tensor() + '], "outputs": [{"name": ' + NESTED + "}]}",
        '{"inputs": [' + tensor() + '], "parameters": {"priority": ' + NESTED + "}}",
        '{"inputs": [' + tensor(data="null", parameters='{"binary_data_size": ' + NESTED + "}") + "]}",
        '{"inputs": [' + tensor(shape="[" + ", ".join(["1"] * 100_000) + "]") + "]}",
        '{"inputs": [' + tensor(datatype='"' + "F" * 100_000 + '"') + "]}",
    ],
    ids=["shape", "datatype", "name", "output-name", "priority", "binary-size", "long-shape", "long-datatype"],
)
def test_nested_or_huge_values_are_400_with_a_bounded_message(client: TestClient, body: str) -> None:
    assert_refused(infer(client, body))


@pytest.mark.parametrize("shape", [[2**62, 2**62], [2**62, 2**62, 2**62], [2, 2**62, 16], [2**63 - 1] * 3])
def test_absurd_state_shapes_are_400(client: TestClient, shape: list[int]) -> None:
    h0 = tensor(name='"h0"', shape=orjson.dumps(shape).decode(), data="[0.0]")
    c0 = tensor(name='"c0"', shape="[2, 1, 16]", data=orjson.dumps([0.0] * 32).decode())
    assert_refused(infer(client, '{"inputs": [' + tensor() + ", " + h0 + ", " + c0 + "]}"))


def sequence(client: TestClient, seq_id: int, start: bool = False):
    body = orjson.dumps(
        {
            "inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [20.0, 500.0, 12.0]}],
            "parameters": {"sequence_id": seq_id, "sequence_start": start},
        }
    ).decode()
    return infer(client, body, "gru")


def test_sequence_restart_at_the_quota_replaces_instead_of_being_refused(client: TestClient) -> None:
    assert sequence(client, 1, start=True).status_code == 200
    assert sequence(client, 2, start=True).status_code == 200  # the quota (2) is now full
    assert sequence(client, 2).status_code == 200
    restarted = sequence(client, 2, start=True)  # replaces sequence 2: no new session
    assert restarted.status_code == 200, restarted.text
    assert sequence(client, 2).status_code == 200
    third = sequence(client, 3, start=True)  # a new one is still refused
    assert_refused(third, 429)

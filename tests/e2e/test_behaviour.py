"""One behaviour suite, run over every transport that steps sessions (REST, WebSocket, bulk,
KServe V2 over HTTP and over gRPC), against a server with the step fast path on and one with it
off: the same scenario gives the same outputs, the same positions and the same kind of error.

Each transport gets a small adapter that turns "start a stream", "step it (at a position)" and
"step a stream that does not exist" into its own requests and reads the answer back into one
`Outcome`: outputs, position after the step, and for a refusal its category and the status the
transport gives it (V2 reports an unknown sequence as a 400 `invalid_inference_request` naming
`sequence_id`, as Triton does, where REST says 404; the category is the same). Outputs are
checked against the stateless predict of the whole sequence, so every transport is held to the
same reference rather than to each other.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.models import raw_inputs
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

MODELS = ("lstm", "gru")
_ids = itertools.count()


@dataclass
class Outcome:
    outputs: np.ndarray | None = None  # [T, outputs]
    position: int | None = None
    category: str | None = None  # unknown_session, position_conflict, invalid_input
    status: Any = None  # the transport's own status for a refusal (HTTP code or gRPC code name)


@dataclass
class Stream:
    model: str
    key: str  # session id or V2 sequence id
    started: bool = True  # V2: the first step starts the sequence
    ws: ClientConnection | None = None


def _category(code: str, field: Any) -> str:
    if code in ("session_not_found", "session_expired") or field == "sequence_id":
        return "unknown_session"
    if code == "position_conflict":
        return "position_conflict"
    return "invalid_input"


def _v1_outcome(status: int, body: dict) -> Outcome:
    if status == 200:
        return Outcome(np.asarray(body["outputs"], np.float32), body["position"])
    return Outcome(category=_category(body["code"], body.get("field")), status=status)


# ---------------------------------------------------------------------------- adapters


class Rest:
    name = "rest"

    def __init__(self, server: ServiceProcess) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def start(self, model: str) -> Stream:
        r = self.http.post(f"/v1/models/{model}/sessions")
        assert r.status_code == 201, r.text
        return Stream(model, r.json()["session_id"])

    def unknown(self, model: str) -> Stream:
        return Stream(model, f"unknown{next(_ids):016d}")

    def step(self, stream: Stream, x: np.ndarray, position: int | None) -> Outcome:
        r = self.http.post(f"/v1/sessions/{stream.key}/steps", json=_step_body(x, position))
        return _v1_outcome(r.status_code, r.json())

    def close(self) -> None:
        self.http.close()


class WebSocket(Rest):
    name = "websocket"

    def __init__(self, server: ServiceProcess) -> None:
        super().__init__(server)
        self.base = f"ws://127.0.0.1:{server.port}"
        self.open: list[ClientConnection] = []

    def step(self, stream: Stream, x: np.ndarray, position: int | None) -> Outcome:
        if stream.ws is None:
            stream.ws = connect(f"{self.base}/v1/sessions/{stream.key}/stream")
            self.open.append(stream.ws)
        with contextlib.suppress(ConnectionClosed):  # refused (unknown session): the reason is still to be read
            stream.ws.send(orjson.dumps(_step_body(x, position)).decode())
        reply = orjson.loads(stream.ws.recv(timeout=30))
        return _v1_outcome(reply.get("status", 200), reply)

    def close(self) -> None:
        for ws in self.open:
            ws.close()
        super().close()


class Bulk(Rest):
    name = "bulk"

    def step(self, stream: Stream, x: np.ndarray, position: int | None) -> Outcome:
        entry = {"session_id": stream.key, **_step_body(x, position)}
        r = self.http.post(f"/v1/models/{stream.model}/sessions/steps", json={"steps": [entry]})
        assert r.status_code == 200, r.text
        (result,) = r.json()["results"]
        return _v1_outcome(result.get("status", 200), result)


class V2Http(Rest):
    name = "v2-http"

    def start(self, model: str) -> Stream:
        return Stream(model, f"behaviour-{next(_ids)}", started=False)

    def unknown(self, model: str) -> Stream:
        return Stream(model, f"never-started-{next(_ids)}")

    def _parameters(self, stream: Stream, position: int | None) -> dict[str, Any]:
        parameters: dict[str, Any] = {"sequence_id": stream.key}
        if not stream.started:
            parameters["sequence_start"] = True
        if position is not None:
            parameters["sequence_position"] = position
        return parameters

    def step(self, stream: Stream, x: np.ndarray, position: int | None) -> Outcome:
        body = {
            "parameters": self._parameters(stream, position),
            "inputs": [{"name": "input", "shape": [1, *x.shape], "datatype": "FP32", "data": x.ravel().tolist()}],
        }
        r = self.http.post(f"/v2/models/{stream.model}/infer", json=body)
        if r.status_code != 200:
            return _v1_outcome(r.status_code, r.json())
        stream.started = True
        reply = r.json()
        (output,) = reply["outputs"]
        outputs = np.asarray(output["data"], np.float32).reshape(output["shape"])[0]
        return Outcome(outputs, reply["parameters"]["sequence_position"])


class V2Grpc(V2Http):
    name = "v2-grpc"

    def __init__(self, server: ServiceProcess) -> None:
        super().__init__(server)
        self.grpc = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")

    def step(self, stream: Stream, x: np.ndarray, position: int | None) -> Outcome:
        tensor = grpcclient.InferInput("input", [1, *x.shape], "FP32")
        tensor.set_data_from_numpy(x[None].astype(np.float32))
        parameters = self._parameters(stream, position)
        start = parameters.pop("sequence_start", False)
        parameters.pop("sequence_id")
        try:
            result = self.grpc.infer(
                stream.model, [tensor], sequence_id=stream.key, sequence_start=start, parameters=parameters or None
            )
        except InferenceServerException as exc:
            status = str(exc.status()).removeprefix("StatusCode.")
            category = {"ABORTED": "position_conflict"}.get(status, "invalid_input")
            if status == "INVALID_ARGUMENT" and "sequence_start" in exc.message():
                category = "unknown_session"
            return Outcome(category=category, status=status)
        stream.started = True
        outputs = result.as_numpy("output")[0]
        return Outcome(outputs, result.get_response().parameters["sequence_position"].int64_param)

    def close(self) -> None:
        self.grpc.close()
        super().close()


ADAPTERS = {a.name: a for a in (Rest, WebSocket, Bulk, V2Http, V2Grpc)}
# What each transport answers for each kind of refusal.
STATUS = {
    "rest": {"unknown_session": 404, "position_conflict": 409, "invalid_input": 422},
    "websocket": {"unknown_session": 404, "position_conflict": 409, "invalid_input": 422},
    "bulk": {"unknown_session": 404, "position_conflict": 409, "invalid_input": 422},
    "v2-http": {"unknown_session": 400, "position_conflict": 409, "invalid_input": 400},
    "v2-grpc": {
        "unknown_session": "INVALID_ARGUMENT",
        "position_conflict": "ABORTED",
        "invalid_input": "INVALID_ARGUMENT",
    },
}


def _step_body(x: np.ndarray, position: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": x.tolist()}
    if position is not None:
        body["position"] = position
    return body


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["fast-path", "routes-only"])
def server(request: pytest.FixtureRequest, repository: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {"SEQSERVE_FAST_PATH": "true" if request.param == "fast-path" else "false"}
    with ServiceProcess(repository, tmp_path_factory.mktemp("logs"), env) as proc:
        yield proc


@pytest.fixture(params=list(ADAPTERS))
def transport(request: pytest.FixtureRequest, server: ServiceProcess) -> Iterator[Any]:
    adapter = ADAPTERS[request.param](server)
    yield adapter
    adapter.close()


@pytest.fixture(scope="module")
def reference(server: ServiceProcess):
    """Stateless predict of a whole sequence: what any stream of it must output."""

    def predict(model: str, x: np.ndarray) -> np.ndarray:
        r = httpx.post(f"{server.url}/v1/models/{model}/predict", json={"inputs": [x.tolist()]}, timeout=30)
        assert r.status_code == 200, r.text
        return np.asarray(r.json()["outputs"][0], np.float32)

    return predict


def _sequence(seed: int, steps: int = 6) -> np.ndarray:
    return raw_inputs(np.random.default_rng(seed), steps).astype(np.float32)


def close(a: np.ndarray | None, b: np.ndarray) -> None:
    assert a is not None
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("model", MODELS)
def test_steps_equal_the_whole_sequence(transport, reference, model: str) -> None:
    x = _sequence(1)
    stream = transport.start(model)
    outcomes = [
        transport.step(stream, x[:1], None),
        transport.step(stream, x[1:4], None),
        transport.step(stream, x[4:], 4),
    ]
    assert [o.position for o in outcomes] == [1, 4, 6]
    close(np.concatenate([o.outputs for o in outcomes]), reference(model, x))


def test_retry_is_replayed_not_applied_twice(transport, reference) -> None:
    x = _sequence(2)
    stream = transport.start("lstm")
    first = transport.step(stream, x[:2], 0)
    again = transport.step(stream, x[:2], 0)  # the same request resent (a lost reply)
    assert (first.position, again.position) == (2, 2)
    np.testing.assert_array_equal(again.outputs, first.outputs)  # the recorded answer itself
    rest = transport.step(stream, x[2:], 2)
    assert rest.position == 6
    close(np.concatenate([first.outputs, rest.outputs]), reference("lstm", x))  # applied once


def test_wrong_position_is_a_conflict_and_changes_nothing(transport, reference) -> None:
    x = _sequence(3)
    stream = transport.start("gru")
    first = transport.step(stream, x[:2], 0)
    for stale in (1, 5):
        refused = transport.step(stream, x[2:3], stale)
        assert (refused.category, refused.status) == ("position_conflict", STATUS[transport.name]["position_conflict"])
    rest = transport.step(stream, x[2:], 2)
    assert rest.position == 6
    close(np.concatenate([first.outputs, rest.outputs]), reference("gru", x))


def test_unknown_session(transport) -> None:
    refused = transport.step(transport.unknown("lstm"), _sequence(4)[:1], None)
    assert (refused.category, refused.status) == ("unknown_session", STATUS[transport.name]["unknown_session"])


@pytest.mark.parametrize("features", [2, 4])
def test_bad_input_shape_is_refused_and_changes_nothing(transport, reference, features: int) -> None:
    x = _sequence(5)
    stream = transport.start("lstm")
    first = transport.step(stream, x[:1], None)
    bad = np.ones((1, features), np.float32)
    refused = transport.step(stream, bad, 1)
    assert (refused.category, refused.status) == ("invalid_input", STATUS[transport.name]["invalid_input"])
    rest = transport.step(stream, x[1:], 1)
    assert rest.position == 6
    close(np.concatenate([first.outputs, rest.outputs]), reference("lstm", x))

"""KServe V2 / Open Inference Protocol against a real server: raw JSON and Triton's own client."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from models.reference import ReferenceModel
from tests.support.models import raw_inputs
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

MODELS = [("lstm", 2), ("gru", 1)]  # (name, latest version)


def tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> dict:
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}


def infer(client: httpx.Client, name: str, body: dict, version: int | None = None) -> httpx.Response:
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "") + "/infer"
    return client.post(path, json=body)


def outputs_of(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in response.json()["outputs"]}


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


@pytest.fixture
def triton(server: ServiceProcess):
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30)
    yield client
    client.close()


# ---------------------------------------------------------------------------- metadata


def test_server_metadata(client: httpx.Client) -> None:
    body = client.get("/v2").json()
    assert body["name"] == "seqserve"
    assert {"sequence", "binary_tensor_data"} <= set(body["extensions"])


def test_model_metadata_and_readiness(client: httpx.Client) -> None:
    meta = client.get("/v2/models/lstm").json()
    assert meta["name"] == "lstm" and meta["versions"] == ["1", "2"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, -1, 3]}
    assert [i["name"] for i in meta["inputs"]] == ["input", "h0", "c0"]
    assert [o["name"] for o in meta["outputs"]] == ["output", "hn", "cn"]
    assert meta["outputs"][0]["shape"] == [-1, -1, 2]
    assert meta["inputs"][1]["shape"] == [2, -1, 16]
    gru = client.get("/v2/models/gru/versions/1").json()
    assert gru["versions"] == ["1"] and [o["name"] for o in gru["outputs"]] == ["output", "hn"]

    assert client.get("/v2/models/lstm/ready").status_code == 200
    assert client.get("/v2/models/lstm/versions/1/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2/models/lstm/versions/9/ready").status_code == 404
    assert client.get("/v2/models/lstm/versions/x/ready").status_code == 400
    for path in ("/v2/models/nope", "/v2/models/lstm/versions/7"):
        response = client.get(path)
        assert response.status_code == 404 and "error" in response.json()


def test_triton_client_health_and_metadata(triton) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("lstm")
    assert triton.is_model_ready("gru", "1")
    assert not triton.is_model_ready("nope")
    assert not triton.is_model_ready("lstm", "9")
    meta = triton.get_model_metadata("gru")
    assert meta["name"] == "gru" and meta["inputs"][0]["shape"] == [-1, -1, 3]
    assert triton.get_server_metadata()["name"] == "seqserve"


# ---------------------------------------------------------------------------- stateless inference


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_stateless_matches_v1_and_reference(client: httpx.Client, repository: Path, name: str, version: int) -> None:
    x = raw_inputs(np.random.default_rng(7), 6, batch=3).astype(np.float32)
    response = infer(client, name, {"id": "r-1", "inputs": [tensor("input", x)]})
    body = response.json()
    assert body["id"] == "r-1" and body["model_name"] == name and body["model_version"] == str(version)
    out = outputs_of(response)
    names = ["output", "hn", "cn"] if name == "lstm" else ["output", "hn"]
    assert list(out) == names  # no `outputs` list: every model output
    assert out["output"].shape == (3, 6, 2)

    v1 = client.post(f"/v1/models/{name}/predict", json={"inputs": x.tolist(), "return_state": True}).json()
    close(out["output"], np.asarray(v1["outputs"], np.float32))
    close(out["hn"], np.asarray(v1["state"]["h"], np.float32))

    reference = ReferenceModel.from_onnx(repository / name / str(version) / "model.onnx")
    y, final = reference.run(x)
    close(out["output"], y)
    close(out["hn"], final[0])


def test_outputs_filter_version_and_explicit_state(client: httpx.Client, repository: Path) -> None:
    rng = np.random.default_rng(3)
    x = raw_inputs(rng, 4, batch=2).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 16)).astype(np.float32) * 0.5
    c0 = rng.standard_normal((2, 2, 16)).astype(np.float32) * 0.5
    body = {
        "inputs": [tensor("input", x), tensor("h0", h0), tensor("c0", c0)],
        "outputs": [{"name": "cn"}, {"name": "output"}],
    }
    response = infer(client, "lstm", body, version=1)
    assert response.json()["model_version"] == "1"
    out = outputs_of(response)
    assert list(out) == ["cn", "output"]
    y, final = ReferenceModel.from_onnx(repository / "lstm" / "1" / "model.onnx").run(x, (h0, c0))
    close(out["output"], y)
    close(out["cn"], final[1])


def test_binary_tensor_data(client: httpx.Client) -> None:
    x = raw_inputs(np.random.default_rng(5), 5, batch=1).astype(np.float32)
    header = {
        "inputs": [{"name": "input", "shape": [1, 5, 3], "datatype": "FP32", "parameters": {"binary_data_size": 60}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}, {"name": "hn"}],
    }
    head = orjson.dumps(header)
    response = client.post(
        "/v2/models/gru/infer",
        content=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    size = int(response.headers["inference-header-content-length"])
    meta = orjson.loads(response.content[:size])
    out = meta["outputs"]
    assert out[0]["parameters"]["binary_data_size"] == 5 * 2 * 4 and "data" in out[1]
    binary = np.frombuffer(response.content[size:], np.float32).reshape(1, 5, 2)
    expected = outputs_of(infer(client, "gru", {"inputs": [tensor("input", x)], "outputs": [{"name": "output"}]}))
    np.testing.assert_array_equal(binary, expected["output"])


# ---------------------------------------------------------------------------- sequences (Triton's client)


def triton_step(triton, name: str, x: np.ndarray, seq, start: bool, end: bool, binary: bool = True) -> np.ndarray:
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x.astype(np.float32), binary_data=binary)
    result = triton.infer(
        name,
        [inp],
        outputs=[httpclient.InferRequestedOutput("output", binary_data=binary)],
        sequence_id=seq,
        sequence_start=start,
        sequence_end=end,
    )
    return result.as_numpy("output")


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_triton_sequence_step_by_step_equals_whole(triton, name: str) -> None:
    rng = np.random.default_rng(11)
    x = raw_inputs(rng, 12, batch=1).astype(np.float32)
    inp = httpclient.InferInput("input", [1, 12, 3], "FP32")
    inp.set_data_from_numpy(x)
    whole = triton.infer(name, [inp], outputs=[httpclient.InferRequestedOutput("output")]).as_numpy("output")

    # one step at a time, JSON tensors
    stepped = [triton_step(triton, name, x[:, t : t + 1], 101, t == 0, t == 11, binary=False) for t in range(12)]
    close(np.concatenate(stepped, axis=1), whole)

    # random chunks, binary tensors, a string sequence id
    cuts = sorted(rng.choice(np.arange(1, 12), size=3, replace=False).tolist())
    bounds = [0, *cuts, 12]
    chunks = [
        triton_step(triton, name, x[:, a:b], f"chunks-{name}", a == 0, b == 12) for a, b in itertools.pairwise(bounds)
    ]
    close(np.concatenate(chunks, axis=1), whole)


def test_triton_interleaved_sequences_and_end(triton) -> None:
    rng = np.random.default_rng(13)
    xs = {seq: raw_inputs(rng, 6, batch=1).astype(np.float32) for seq in (7, 8)}
    wholes = {}
    for seq, x in xs.items():
        inp = httpclient.InferInput("input", [1, 6, 3], "FP32")
        inp.set_data_from_numpy(x)
        wholes[seq] = triton.infer("lstm", [inp]).as_numpy("output")
    got: dict[int, list[np.ndarray]] = {7: [], 8: []}
    for t in range(6):
        for seq in (7, 8):
            got[seq].append(triton_step(triton, "lstm", xs[seq][:, t : t + 1], seq, t == 0, t == 5))
    for seq in (7, 8):
        close(np.concatenate(got[seq], axis=1), wholes[seq])

    # after sequence_end the sequence is gone
    with pytest.raises(InferenceServerException) as info:
        triton_step(triton, "lstm", xs[7][:, :1], 7, False, False)
    assert "sequence_start" in str(info.value)


def test_sequence_restart_resets_state(client: httpx.Client) -> None:
    x = raw_inputs(np.random.default_rng(17), 3, batch=1).astype(np.float32)
    seq = {"sequence_id": 55, "sequence_start": True}
    first = outputs_of(infer(client, "gru", {"inputs": [tensor("input", x)], "parameters": seq}))
    assert list(first) == ["output"]  # sequence requests: state stays on the server
    again = outputs_of(infer(client, "gru", {"inputs": [tensor("input", x)], "parameters": seq}))
    np.testing.assert_array_equal(first["output"], again["output"])
    # hn on request, read back after the step; then end
    body = {
        "inputs": [tensor("input", x)],
        "parameters": {"sequence_id": 55, "sequence_end": True},
        "outputs": [{"name": "output"}, {"name": "hn"}],
    }
    out = outputs_of(infer(client, "gru", body))
    assert out["hn"].shape == (2, 1, 16)
    whole = outputs_of(infer(client, "gru", {"inputs": [tensor("input", np.concatenate([x, x], axis=1))]}))
    close(out["output"], whole["output"][:, 3:])
    close(out["hn"], whole["hn"])


# ---------------------------------------------------------------------------- errors


def x1() -> np.ndarray:
    return raw_inputs(np.random.default_rng(0), 2, batch=1).astype(np.float32)


ERROR_CASES = {
    "int64": {"inputs": [tensor("input", x1(), "INT64")]},
    "fp16": {"inputs": [tensor("input", x1(), "FP16")]},
    "bytes": {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]},
    "strings as FP32": {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": ["1", "2", "3"]}]},
    "rank": {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [0.0] * 6}]},
    "features": {"inputs": [{"name": "input", "shape": [1, 2, 4], "datatype": "FP32", "data": [0.0] * 8}]},
    "shape/data mismatch": {"inputs": [{"name": "input", "shape": [1, 2, 3], "datatype": "FP32", "data": [0.0] * 5}]},
    "missing input": {"inputs": [{"name": "h0", "shape": [2, 1, 16], "datatype": "FP32", "data": [0.0] * 32}]},
    "no inputs": {"inputs": []},
    "unknown input": {"inputs": [tensor("input", x1()), tensor("extra", x1())]},
    "null": {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [1.0, None, 2.0]}]},
    "overflow": {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [1e300, 0.0, 0.0]}]},
    "unknown output": {"inputs": [tensor("input", x1())], "outputs": [{"name": "zz"}]},
    "h0 without c0": {"inputs": [tensor("input", x1()), tensor("h0", np.zeros((2, 1, 16), np.float32))]},
    "h0 wrong shape": {
        "inputs": [
            tensor("input", x1()),
            tensor("h0", np.zeros((2, 2, 16), np.float32)),
            tensor("c0", np.zeros((2, 2, 16), np.float32)),
        ]
    },
    "unknown sequence": {"inputs": [tensor("input", x1())], "parameters": {"sequence_id": 987654}},
    "sequence batch 2": {
        "inputs": [tensor("input", np.zeros((2, 1, 3), np.float32))],
        "parameters": {"sequence_id": 3, "sequence_start": True},
    },
    "start without id": {"inputs": [tensor("input", x1())], "parameters": {"sequence_start": True}},
    "bad sequence_start": {"inputs": [tensor("input", x1())], "parameters": {"sequence_id": 4, "sequence_start": 1}},
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_4xx_with_message(client: httpx.Client, case: str) -> None:
    response = infer(client, "lstm", ERROR_CASES[case])
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    message = response.json()["error"]
    assert isinstance(message, str) and message


def test_error_messages_name_the_problem(client: httpx.Client) -> None:
    def message(body: dict, name: str = "lstm", version: int | None = None) -> tuple[int, str]:
        response = infer(client, name, body, version)
        return response.status_code, response.json()["error"]

    assert "FP32" in message(ERROR_CASES["int64"])[1]
    assert "needs 6 values, data has 5" in message(ERROR_CASES["shape/data mismatch"])[1]
    assert "'input' is required" in message(ERROR_CASES["missing input"])[1]
    assert "unknown input 'extra'" in message(ERROR_CASES["unknown input"])[1]
    assert "only numbers" in message(ERROR_CASES["null"])[1]
    assert "out-of-range" in message(ERROR_CASES["overflow"])[1]
    assert "batch 1" in message(ERROR_CASES["sequence batch 2"])[1]
    status, text = message(ERROR_CASES["unknown sequence"])
    assert status == 400 and "sequence_start" in text
    status, text = message({"inputs": [tensor("input", x1())]}, name="nope")
    assert status == 404 and "nope" in text
    status, text = message({"inputs": [tensor("input", x1())]}, version=9)
    assert status == 404 and "version 9" in text
    response = client.post("/v2/models/lstm/infer", content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]


def test_nan_in_binary_data(client: httpx.Client) -> None:
    """JSON has no NaN literal (a body with one is malformed JSON), but binary data can carry it."""
    head = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]}
    )
    data = np.array([1.0, np.nan, 2.0], np.float32).tobytes()
    headers = {"Inference-Header-Content-Length": str(len(head))}
    response = client.post("/v2/models/lstm/infer", content=head + data, headers=headers)
    assert response.status_code == 400 and "NaN" in response.json()["error"]
    response = client.post("/v2/models/lstm/infer", content=head + data[:8], headers=headers)
    assert response.status_code == 400 and "binary data" in response.json()["error"]
    response = client.post("/v2/models/lstm/infer", content=b"{" + head, headers=headers)
    assert response.status_code == 400
    response = client.post("/v2/models/lstm/infer", content=b'{"inputs": [1.0, NaN]}')
    assert response.status_code == 400


def test_triton_client_sees_errors(triton) -> None:
    inp = httpclient.InferInput("input", [1, 2, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 2, 4), np.float32))
    with pytest.raises(InferenceServerException, match="features"):
        triton.infer("lstm", [inp])
    inp = httpclient.InferInput("input", [1, 2, 3], "INT64")
    inp.set_data_from_numpy(np.zeros((1, 2, 3), np.int64))
    with pytest.raises(InferenceServerException, match="FP32"):
        triton.infer("lstm", [inp])

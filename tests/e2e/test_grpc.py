"""KServe V2 over gRPC against a real server process, driven by Triton's own client
(`tritonclient.grpc`, unchanged), plus the V2 extensions shared with HTTP: model configuration,
repository index, statistics, `timeout`/`priority`, and retry-safe `sequence_position`."""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support.models import raw_inputs
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

MODELS = [("lstm", 2), ("gru", 1)]  # (name, latest version)


@pytest.fixture
def triton(server: ServiceProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
    yield client
    client.close()


@pytest.fixture
def stub(server: ServiceProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """The bare generated stub, for what tritonclient does not send (typed contents)."""
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


def predict(client: httpx.Client, name: str, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The stateless HTTP prediction (v1): outputs and final state."""
    response = client.post(f"/v1/models/{name}/predict", json={"inputs": x.tolist(), "return_state": True})
    assert response.status_code == 200, response.text
    body = response.json()
    return np.asarray(body["outputs"], np.float32), {k: np.asarray(v, np.float32) for k, v in body["state"].items()}


def input_of(x: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(x, np.float32))
    return tensor


def code_of(exc: InferenceServerException) -> str:
    return str(exc.status())


# ---------------------------------------------------------------------------- health, metadata, config


def test_health_and_metadata(triton: grpcclient.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("lstm") and triton.is_model_ready("gru", "1")
    assert not triton.is_model_ready("nope") and not triton.is_model_ready("lstm", "9")
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] == "seqserve" and "sequence" in server["extensions"]
    meta = triton.get_model_metadata("lstm", as_json=True)
    assert meta["versions"] == ["1", "2"] and meta["platform"] == "onnxruntime_onnx"
    assert [t["name"] for t in meta["inputs"]] == ["input", "h0", "c0"]
    assert meta["inputs"][0]["shape"] == ["-1", "-1", "3"]  # int64 renders as a string in JSON
    assert [t["name"] for t in triton.get_model_metadata("gru", "1", as_json=True)["outputs"]] == ["output", "hn"]
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("nope")
    assert code_of(info.value) == "StatusCode.NOT_FOUND" and "nope" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("lstm", "x")
    assert code_of(info.value) == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as info:  # repository control is the admin API's
        triton.load_model("lstm")
    assert code_of(info.value) == "StatusCode.UNIMPLEMENTED"


@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata_over_grpc_and_http(stub, client: httpx.Client, version: str) -> None:
    """One document (service/core/v2.py) for both: the same tensors, versions and platform, and
    the `parameters` (default version, gates, state tensors), which gRPC carries in the
    `seqserve-parameters-bin` trailer because Triton's message has no field for them."""
    path = "/v2/models/lstm" + (f"/versions/{version}" if version else "")
    http = client.get(path).json()
    reply, call = stub.ModelMetadata.with_call(service_pb2.ModelMetadataRequest(name="lstm", version=version))
    trailers = dict(call.trailing_metadata())
    parameters = http.pop("parameters")
    assert orjson.loads(trailers["seqserve-parameters-bin"]) == parameters
    assert parameters["default_version"] == "2" and [s["name"] for s in parameters["state_tensors"]] == ["h", "c"]
    assert set(parameters["gate"]) == set(parameters["promoted"]) == set(http["versions"])
    tensors = {
        side: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in getattr(reply, side)]
        for side in ("inputs", "outputs")
    }
    got = {"name": reply.name, "versions": list(reply.versions), "platform": reply.platform, **tensors}
    assert got == http
    assert got["versions"] == (["1"] if version else ["1", "2"])


def test_model_config_over_grpc_and_http(triton: grpcclient.InferenceServerClient, client: httpx.Client) -> None:
    config = triton.get_model_config("lstm", as_json=True)["config"]
    assert config["name"] == "lstm" and config["platform"] == "onnxruntime_onnx"
    assert [i["name"] for i in config["input"]] == ["input", "h0", "c0"]
    assert [o["name"] for o in config["output"]] == ["output", "hn", "cn"]
    states = config["sequence_batching"]["state"]
    assert [(s["input_name"], s["output_name"]) for s in states] == [("h0", "hn"), ("c0", "cn")]
    assert states[0]["dims"] == ["2", "1", "16"] and states[0]["initial_state"][0]["zero_data"] is True
    http = client.get("/v2/models/lstm/config").json()
    assert http["sequence_batching"]["state"][1]["input_name"] == "c0"
    assert http["input"][0]["dims"] == [-1, -1, 3] and http["version_policy"] == {"specific": {"versions": [1, 2]}}
    gru = client.get("/v2/models/gru/versions/1/config").json()
    assert [s["input_name"] for s in gru["sequence_batching"]["state"]] == ["h0"]
    assert client.get("/v2/models/nope/config").status_code == 404
    assert client.get("/v2/models/lstm/versions/x/config").status_code == 400
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_config("lstm", "7")
    assert code_of(info.value) == "StatusCode.NOT_FOUND"


def test_repository_index_over_grpc_and_http(triton: grpcclient.InferenceServerClient, client: httpx.Client) -> None:
    index = triton.get_model_repository_index(as_json=True)["models"]
    assert [(m["name"], m["version"], m["state"]) for m in index] == [
        ("gru", "1", "READY"),
        ("lstm", "1", "READY"),
        ("lstm", "2", "READY"),
    ]
    http = client.post("/v2/repository/index")
    assert http.status_code == 200 and [m["state"] for m in http.json()] == ["READY"] * 3
    assert len(client.post("/v2/repository/index", json={"ready": True}).json()) == 3
    bad = client.post("/v2/repository/index", json={"ready": "yes"})
    assert bad.status_code == 400 and "ready" in bad.json()["error"]


# ---------------------------------------------------------------------------- inference


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_infer_matches_stateless_http(
    triton: grpcclient.InferenceServerClient, client: httpx.Client, name: str, version: int
) -> None:
    x = raw_inputs(np.random.default_rng(11), 5, batch=3).astype(np.float32)
    names = ["output", "hn", "cn"] if name == "lstm" else ["output", "hn"]
    result = triton.infer(name, [input_of(x)], request_id="g-1")
    response = result.get_response()
    assert response.id == "g-1" and response.model_name == name and response.model_version == str(version)
    assert [o.name for o in response.outputs] == names  # no outputs asked: every model output
    outputs, state = predict(client, name, x)
    close(result.as_numpy("output"), outputs)
    close(result.as_numpy("hn"), state["h"])
    chosen = triton.infer(name, [input_of(x)], outputs=[grpcclient.InferRequestedOutput("output")])
    assert [o.name for o in chosen.get_response().outputs] == ["output"]


def test_typed_contents_and_explicit_state(stub, client: httpx.Client) -> None:
    rng = np.random.default_rng(5)
    x = raw_inputs(rng, 4, batch=2).astype(np.float32)
    h0 = (rng.standard_normal((2, 2, 16)) * 0.5).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="gru", id="typed")
    for tensor_name, array in (("input", x), ("h0", h0)):
        tensor = request.inputs.add(name=tensor_name, datatype="FP32", shape=array.shape)
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    response = stub.ModelInfer(request)
    outputs = {
        o.name: np.frombuffer(raw, "<f4").reshape(o.shape)
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    http = client.post(
        "/v1/models/gru/predict", json={"inputs": x.tolist(), "state": {"h": h0.tolist()}, "return_state": True}
    ).json()
    close(outputs["output"], np.asarray(http["outputs"], np.float32))
    close(outputs["hn"], np.asarray(http["state"]["h"], np.float32))

    bad = service_pb2.ModelInferRequest(model_name="gru")
    bad.inputs.add(name="input", datatype="FP32", shape=[1, 2, 3]).contents.fp32_contents.extend([1.0] * 5)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 6 values" in info.value.details()
    error = dict(info.value.trailing_metadata())["seqserve-error-bin"]
    assert orjson.loads(error)["code"] == "invalid_inference_request"


def test_infer_errors(triton: grpcclient.InferenceServerClient) -> None:
    x = np.ones((1, 2, 3), np.float32)
    cases = [
        (lambda: triton.infer("nope", [input_of(x)]), "NOT_FOUND", "nope"),
        (
            lambda: triton.infer("lstm", [input_of(np.ones((1, 2, 4), np.float32))]),
            "INVALID_ARGUMENT",
            "[batch, time, 3]",
        ),
        (lambda: triton.infer("lstm", [input_of(x)], model_version="9"), "NOT_FOUND", "version 9"),
        (lambda: triton.infer("lstm", [input_of(x)], priority=3), "INVALID_ARGUMENT", "priority"),
        (lambda: triton.infer("lstm", [input_of(x)], sequence_id=99), "INVALID_ARGUMENT", "sequence_start"),
    ]
    for call, code, words in cases:
        with pytest.raises(InferenceServerException) as info:
            call()
        assert code_of(info.value) == f"StatusCode.{code}", info.value.message()
        assert words in info.value.message()


# ---------------------------------------------------------------------------- sequences over the stream


def _collect(replies: queue.Queue, count: int) -> list:
    out = []
    for _ in range(count):
        out.append(replies.get(timeout=30))
    return out


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_stream_interleaved_sequences(
    triton: grpcclient.InferenceServerClient, client: httpx.Client, name: str, version: int
) -> None:
    """Three sequences, their steps interleaved on one stream (2 steps per request): each
    sequence's outputs equal the stateless prediction over its whole input."""
    rng = np.random.default_rng(17)
    sequences = {f"{name}-s{k}": raw_inputs(rng, 8, batch=1).astype(np.float32) for k in range(3)}
    sequences[1000 + version] = raw_inputs(rng, 8, batch=1).astype(np.float32)  # an integer id too
    replies: queue.Queue = queue.Queue()
    triton.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        for t in range(0, 8, 2):
            for seq_id, x in sequences.items():
                triton.async_stream_infer(
                    name,
                    [input_of(x[:, t : t + 2])],
                    request_id=f"{seq_id}/{t}",
                    sequence_id=seq_id,
                    sequence_start=t == 0,
                    sequence_end=t == 6,
                )
        got = _collect(replies, 4 * len(sequences))
    finally:
        triton.stop_stream()
    assert [e for _, e in got if e is not None] == []
    chunks: dict[str, dict[int, np.ndarray]] = {}
    for result, _ in got:
        response = result.get_response()
        seq_id, t = response.id.rsplit("/", 1)
        assert response.model_version == str(version)
        assert response.parameters["sequence_position"].int64_param == int(t) + 2
        chunks.setdefault(seq_id, {})[int(t)] = result.as_numpy("output")
    for seq_id, x in sequences.items():
        streamed = np.concatenate([chunks[str(seq_id)][t] for t in range(0, 8, 2)], axis=1)
        close(streamed, predict(client, name, x)[0])
    # every sequence ended: another step of one is refused, and the stream reports it in-band
    replies = queue.Queue()
    triton.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        triton.async_stream_infer(name, [input_of(sequences[1000 + version][:, :1])], sequence_id=1000 + version)
        triton.async_stream_infer(
            name, [input_of(sequences[1000 + version][:, :1])], sequence_id=1000 + version, sequence_start=True
        )
        (first, error), (second, ok) = _collect(replies, 2)
    finally:
        triton.stop_stream()
    assert first is None and "was not started or has ended" in error.message()
    assert ok is None and second.as_numpy("output").shape == (1, 1, 2)


def test_sequence_state_is_shared_with_http(triton: grpcclient.InferenceServerClient, client: httpx.Client) -> None:
    """A sequence started over gRPC continues over HTTP V2 (one session manager)."""
    x = raw_inputs(np.random.default_rng(23), 4, batch=1).astype(np.float32)
    first = triton.infer("gru", [input_of(x[:, :2])], sequence_id="shared", sequence_start=True)
    body = {
        "parameters": {"sequence_id": "shared", "sequence_end": True},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2, 3], "data": x[:, 2:].ravel().tolist()}],
    }
    second = client.post("/v2/models/gru/infer", json=body)
    assert second.status_code == 200, second.text
    assert second.json()["parameters"] == {"sequence_position": 4}
    streamed = np.concatenate(
        [first.as_numpy("output"), np.asarray(second.json()["outputs"][0]["data"], np.float32).reshape(1, 2, 2)], axis=1
    )
    close(streamed, predict(client, "gru", x)[0])


# ---------------------------------------------------------------------------- retry-safe positions, timeout, priority


def test_sequence_position_replay_and_conflict_grpc(
    triton: grpcclient.InferenceServerClient, client: httpx.Client
) -> None:
    x = raw_inputs(np.random.default_rng(29), 3, batch=1).astype(np.float32)
    start = dict(sequence_id="retry-g", sequence_start=True, parameters={"sequence_position": 0})
    first = triton.infer("lstm", [input_of(x[:, :1])], **start)
    again = triton.infer("lstm", [input_of(x[:, :1])], **start)  # the start resent: replayed
    np.testing.assert_array_equal(again.as_numpy("output"), first.as_numpy("output"))
    step = dict(sequence_id="retry-g", parameters={"sequence_position": 1})
    second = triton.infer("lstm", [input_of(x[:, 1:3])], **step)
    replay = triton.infer("lstm", [input_of(x[:, 1:3])], **step)
    np.testing.assert_array_equal(replay.as_numpy("output"), second.as_numpy("output"))
    assert replay.get_response().parameters["sequence_position"].int64_param == 3
    streamed = np.concatenate([first.as_numpy("output"), second.as_numpy("output")], axis=1)
    close(streamed, predict(client, "lstm", x)[0])  # applied exactly once each
    older = triton.infer("lstm", [input_of(x[:, :1])], sequence_id="retry-g", parameters={"sequence_position": 0})
    np.testing.assert_array_equal(older.as_numpy("output"), first.as_numpy("output"))  # a recent step, resent
    for stale, inputs in (({"sequence_position": 1}, x[:, :1]), ({"sequence_position": 0}, x[:, 1:2])):
        with pytest.raises(InferenceServerException) as info:
            triton.infer("lstm", [input_of(inputs)], sequence_id="retry-g", parameters=stale)
        assert code_of(info.value) == "StatusCode.ABORTED" and "position 3" in info.value.message()
    with pytest.raises(InferenceServerException) as info:  # a start that is no resend does not reset it
        triton.infer("lstm", [input_of(x[:, 1:2])], **start)
    assert code_of(info.value) == "StatusCode.ABORTED"
    after = triton.infer("lstm", [input_of(x[:, :1])], sequence_id="retry-g", parameters={"sequence_position": 3})
    assert after.get_response().parameters["sequence_position"].int64_param == 4  # nothing was reset
    with pytest.raises(InferenceServerException) as info:
        triton.infer(
            "lstm",
            [input_of(x[:, :1])],
            sequence_id="retry-g",
            sequence_start=True,
            parameters={"sequence_position": 2},
        )
    assert code_of(info.value) == "StatusCode.INVALID_ARGUMENT"


def _v2(x: np.ndarray, **params) -> dict:
    return {
        "parameters": params,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
    }


def test_sequence_position_replay_and_conflict_http(client: httpx.Client) -> None:
    x = raw_inputs(np.random.default_rng(31), 3, batch=1).astype(np.float32)
    path = "/v2/models/gru/infer"
    first = client.post(path, json=_v2(x[:, :2], sequence_id=77, sequence_start=True, sequence_position=0))
    assert first.status_code == 200 and first.json()["parameters"] == {"sequence_position": 2}
    replay = client.post(path, json=_v2(x[:, :2], sequence_id=77, sequence_start=True, sequence_position=0))
    assert replay.json()["outputs"] == first.json()["outputs"]
    second = client.post(path, json=_v2(x[:, 2:], sequence_id=77, sequence_position=2))
    again = client.post(path, json=_v2(x[:, 2:], sequence_id=77, sequence_position=2))
    assert again.status_code == 200 and again.json()["outputs"] == second.json()["outputs"]
    stale = client.post(path, json=_v2(x[:, 2:], sequence_id=77, sequence_position=1))
    assert stale.status_code == 409 and stale.json()["position"] == 3
    other = client.post(path, json=_v2(x[:, :2], sequence_id=77, sequence_position=2))  # same position, new inputs
    assert other.status_code == 409 and other.json()["code"] == "position_conflict"
    no_sequence = client.post(path, json=_v2(x, sequence_position=0))
    assert no_sequence.status_code == 400 and "sequence_id" in no_sequence.json()["error"]
    bad = client.post(path, json=_v2(x, sequence_id=77, sequence_position=-1))
    assert bad.status_code == 400


def test_timeout_and_priority_http(client: httpx.Client) -> None:
    x = raw_inputs(np.random.default_rng(37), 2, batch=1).astype(np.float32)
    path = "/v2/models/lstm/infer"
    assert client.post(path, json=_v2(x, timeout=10_000_000, priority=0)).status_code == 200
    refused = client.post(path, json=_v2(x, priority=2))
    assert refused.status_code == 400 and "priority" in refused.json()["error"]
    for bad in (-1, "soon", 1.5):
        response = client.post(path, json=_v2(x, timeout=bad))
        assert response.status_code == 400 and "timeout" in response.json()["error"]
    late = client.post(path, json=_v2(x, timeout=1))  # one microsecond: nothing finishes that fast
    assert late.status_code == 504 and late.json()["code"] == "deadline_exceeded"
    # a sequence step past its deadline still lands; the resend with its position collects it
    late = client.post(path, json=_v2(x, sequence_id="slow", sequence_start=True, sequence_position=0, timeout=1))
    assert late.status_code == 504 and "sequence_position" in late.json()["error"]
    collected = client.post(path, json=_v2(x, sequence_id="slow", sequence_start=True, sequence_position=0))
    assert collected.status_code == 200 and collected.json()["parameters"] == {"sequence_position": 2}
    close(np.asarray(collected.json()["outputs"][0]["data"], np.float32), predict(client, "lstm", x)[0].ravel())


def test_timeout_grpc(triton: grpcclient.InferenceServerClient) -> None:
    x = np.ones((1, 2, 3), np.float32)
    assert triton.infer("lstm", [input_of(x)], timeout=10_000_000).as_numpy("output").shape == (1, 2, 2)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("lstm", [input_of(x)], timeout=1)
    assert code_of(info.value) == "StatusCode.DEADLINE_EXCEEDED"


# ---------------------------------------------------------------------------- statistics


def test_statistics_over_grpc_and_http(
    triton: grpcclient.InferenceServerClient, client: httpx.Client, server: ServiceProcess
) -> None:
    before = client.get("/v2/models/gru/versions/1/stats").json()["model_stats"][0]
    x = np.ones((2, 3, 3), np.float32)
    for _ in range(3):
        triton.infer("gru", [input_of(x)])
    stats = triton.get_inference_statistics("gru", "1", as_json=True)["model_stats"][0]
    assert stats["name"] == "gru" and stats["version"] == "1"
    assert int(stats["inference_count"]) == int(before["inference_count"]) + 6  # 3 requests x batch 2
    assert int(stats["inference_stats"]["success"]["count"]) == before["inference_stats"]["success"]["count"] + 3
    assert int(stats["inference_stats"]["compute_infer"]["ns"]) > 0 and int(stats["last_inference"]) > 0
    every = client.get("/v2/models/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in every] == [("gru", "1"), ("lstm", "1"), ("lstm", "2")]
    assert [s["version"] for s in client.get("/v2/models/lstm/stats").json()["model_stats"]] == ["1", "2"]
    assert client.get("/v2/models/nope/stats").status_code == 404
    assert len(triton.get_inference_statistics(as_json=True)["model_stats"]) == 3
    with pytest.raises(InferenceServerException):
        triton.infer("nope", [input_of(x)])
    replies: queue.Queue = queue.Queue()
    triton.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        triton.async_stream_infer("gru", [input_of(x)])
        assert _collect(replies, 1)[0][1] is None
    finally:
        triton.stop_stream()
    # and Prometheus (on the admin listener) counts gRPC calls by method and code
    metrics = httpx.get(f"{server.admin_url}/metrics", timeout=10).text
    ok = re.search(r'^seqserve_grpc_requests_total\{code="OK",method="ModelInfer"\} (\d+)', metrics, re.M)
    assert ok and float(ok.group(1)) >= 3
    assert re.search(r'^seqserve_grpc_requests_total\{code="NOT_FOUND",method="ModelInfer"\}', metrics, re.M)
    assert 'seqserve_grpc_request_seconds_count{method="ModelStreamInfer"}' in metrics


# ---------------------------------------------------------------------------- through nginx


def test_grpc_through_nginx_with_the_compose_config(server: ServiceProcess, client: httpx.Client, tmp_path) -> None:
    """service/deploy/nginx.conf + grpc.conf as compose mounts them (addresses made loopback):
    unary infer and an interleaved stream pass through nginx's HTTP/2 gRPC proxy unchanged."""
    from tests.support.nginx import NginxProcess
    from tests.support.servers import ROOT, free_port

    nginx = NginxProcess(tmp_path / "nginx", [server.port])
    grpc_port = free_port()
    conf = (ROOT / "service" / "deploy" / "grpc.conf").read_text()
    assert re.search(r"^\s*listen 8081 http2;", conf, re.M) and "client_max_body_size 0;" in conf
    conf = re.sub(r"listen 8081 http2;", f"listen 127.0.0.1:{grpc_port} http2;", conf)
    conf, replicas = re.subn(r"server seqserve-\d+:8001 ", f"server 127.0.0.1:{server.grpc_port} ", conf)
    assert replicas == 2
    (tmp_path / "nginx" / "grpc.conf").write_text(conf)
    with nginx:
        proxied = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
        try:
            assert proxied.is_server_ready()
            x = raw_inputs(np.random.default_rng(41), 4, batch=1).astype(np.float32)
            close(proxied.infer("lstm", [input_of(x)]).as_numpy("output"), predict(client, "lstm", x)[0])
            replies: queue.Queue = queue.Queue()
            proxied.start_stream(callback=lambda result, error: replies.put((result, error)))
            try:
                for t in range(4):
                    for seq in (901, 902):
                        proxied.async_stream_infer(
                            "lstm", [input_of(x[:, t : t + 1])], request_id=f"{seq}/{t}", sequence_id=seq,
                            sequence_start=t == 0, sequence_end=t == 3,
                        )  # fmt: skip
                got = _collect(replies, 8)
            finally:
                proxied.stop_stream()
        finally:
            proxied.close()
    assert all(error is None for _, error in got)
    by_id = {r.get_response().id: r.as_numpy("output") for r, _ in got}
    for seq in (901, 902):
        close(np.concatenate([by_id[f"{seq}/{t}"] for t in range(4)], axis=1), predict(client, "lstm", x)[0])


def test_bench_grpc_stream_load_runs(server: ServiceProcess) -> None:
    """The benchmark's gRPC stream client (bench/grpc_stream.py) against the real server."""
    import asyncio

    from bench.grpc_stream import grpc_stream_load

    result = asyncio.run(grpc_stream_load(f"127.0.0.1:{server.grpc_port}", "gru", 4, 0.5, 0.1, window=2, features=3))
    assert result["errors"] == 0 and result["steps"] > 0 and result["steps_per_s"] > 0


# ---------------------------------------------------------------------------- one validation, two wires


def _proto(model: str, body: dict) -> service_pb2.ModelInferRequest:
    """The gRPC form of a V2 JSON request: typed contents, parameters as InferParameters."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for key, value in body.get("parameters", {}).items():
        param = request.parameters[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        else:
            param.string_param = value
    for spec in body["inputs"]:
        tensor = request.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        tensor.contents.fp32_contents.extend(spec["data"])
    for out in body.get("outputs", []):
        request.outputs.add(name=out["name"])
    return request


def _tensor(name: str, shape: list[int], datatype: str = "FP32") -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": [0.5] * int(np.prod(shape))}


ONE, TWO = [_tensor("input", [1, 1, 3])], [_tensor("input", [2, 1, 3])]
BAD = "INVALID_ARGUMENT"
ERROR_CASES = [
    ("nope", {"inputs": [_tensor("input", [1, 1, 3])]}, 404, "NOT_FOUND"),
    ("lstm", {"inputs": [_tensor("input", [1, 1, 3], "INT32")]}, 400, "INVALID_ARGUMENT"),
    ("lstm", {"inputs": [_tensor("input", [1, 2, 4])]}, 400, "INVALID_ARGUMENT"),
    ("lstm", {"inputs": [_tensor("x", [1, 1, 3])]}, 400, "INVALID_ARGUMENT"),
    ("lstm", {"inputs": [_tensor("input", [1, 1, 3]), _tensor("h0", [2, 1, 16])]}, 400, "INVALID_ARGUMENT"),
    ("lstm", {"inputs": ONE, "outputs": [{"name": "zn"}]}, 400, BAD),
    ("lstm", {"inputs": ONE, "parameters": {"priority": 5}}, 400, BAD),
    ("lstm", {"inputs": ONE, "parameters": {"sequence_position": 0}}, 400, BAD),
    ("gru", {"inputs": ONE, "parameters": {"sequence_id": "never"}}, 400, BAD),
    ("gru", {"inputs": TWO, "parameters": {"sequence_id": 8, "sequence_start": True}}, 400, BAD),
]  # fmt: skip


@pytest.mark.parametrize(("model", "body", "status", "code"), ERROR_CASES)
def test_same_errors_over_http_and_grpc(
    client: httpx.Client, stub, model: str, body: dict, status: int, code: str
) -> None:
    http = client.post(f"/v2/models/{model}/infer", json=body)
    assert http.status_code == status, http.text
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(_proto(model, body))
    assert info.value.code() == getattr(grpc.StatusCode, code)
    assert info.value.details() == http.json()["error"]

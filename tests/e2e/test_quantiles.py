"""Quantiles and anomaly flags served by a real server process: the v1 step and predict replies,
WebSocket, bulk, V2 HTTP and gRPC give the same values; a stream of single steps equals the
whole sequence; the first reading of a session has no flag, an injected outlier is flagged and a
replayed retry answers the same flag; fork and state export/import carry the pending interval;
/v1/models lists the levels; the metrics count flags per model; a model without levels replies
exactly as before."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support.models import export_model, raw_inputs
from tests.support.quantile_model import export_quantile_model, readings
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

LEVELS = ["0.025", "0.1", "0.5", "0.9", "0.975"]
N = 40
OUTLIER = 25  # this reading is ten times too large


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    repository = tmp_path_factory.mktemp("quantile-repo")
    export_quantile_model(repository)
    export_model(repository, "plain", 1, "lstm", seed=1)
    with ServiceProcess(repository, tmp_path_factory.mktemp("logs")) as proc:
        yield proc


@pytest.fixture
def client(server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def series() -> np.ndarray:
    x = readings(N, seed=5)
    x[OUTLIER, 0] *= 10.0
    return x


def new_session(client: httpx.Client, model: str = "probe") -> str:
    response = client.post(f"/v1/models/{model}/sessions", json={})
    assert response.status_code in (200, 201), response.text
    return response.json()["session_id"]


def step(client: httpx.Client, sid: str, reading: list, position: int | None = None) -> dict:
    body: dict = {"inputs": reading}
    if position is not None:
        body["position"] = position
    response = client.post(f"/v1/sessions/{sid}/steps", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def stacked(replies: list[dict]) -> tuple[np.ndarray, np.ndarray, list]:
    """Single-step replies -> outputs [T, O], quantiles [T, O, Q], anomaly per reading."""
    outputs = np.concatenate([np.asarray(r["outputs"], np.float32) for r in replies])
    quantiles = np.stack(
        [np.concatenate([np.asarray(r["quantiles"][k], np.float32) for r in replies]) for k in LEVELS], axis=-1
    )
    return outputs, quantiles, [r["anomaly"] for r in replies]


def as_rows(anomaly: list) -> np.ndarray:
    """v1 anomaly objects -> the V2 tensor's rows (seen, outside_80, outside_95, score)."""
    return np.array(
        [[0, 0, 0, 0] if a is None else [1, a["outside_80"], a["outside_95"], a["score"]] for a in anomaly],
        np.float32,
    )


@pytest.fixture(scope="module")
def rest(server: ServiceProcess) -> dict:
    """One REST session stepped a reading at a time, and v1 predict over the whole sequence."""
    x = series()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        sid = new_session(c)
        replies = [step(c, sid, x[t : t + 1].tolist(), position=t) for t in range(N)]
        whole = c.post("/v1/models/probe/predict", json={"inputs": [x.tolist()]}).json()
    return {"x": x, "sid": sid, "replies": replies, "whole": whole}


def test_model_document_lists_levels(client: httpx.Client) -> None:
    version = client.get("/v1/models/probe").json()["versions"][0]
    assert version["quantiles"] == LEVELS and version["anomaly"] == ["outside_80", "outside_95", "score"]
    # the packed history state holds the pending interval after the count (forecast_spec's layouts)
    history = next(t for t in version["state_tensors"] if t["name"] == "history")
    assert "0.1, 0.025, 0.9, 0.975 forecast for the next reading" in history["doc"]
    plain = client.get("/v1/models/plain").json()["versions"][0]
    assert plain["quantiles"] == [] and plain["anomaly"] == []


def test_steps_carry_monotone_quantiles_and_flags(rest: dict) -> None:
    _, quantiles, anomaly = stacked(rest["replies"])
    assert quantiles.shape == (N, 2, 5) and (np.diff(quantiles, axis=-1) >= 0).all()
    assert anomaly[0] is None and all(a is not None for a in anomaly[1:])
    assert anomaly[OUTLIER]["outside_95"] and anomaly[OUTLIER]["outside_80"] and anomaly[OUTLIER]["score"] > 1
    ordinary = [a["outside_95"] for t, a in enumerate(anomaly[1:], 1) if t not in (OUTLIER, OUTLIER + 1)]
    assert sum(ordinary) < len(ordinary)  # not everything is flagged
    # the score's sign and size follow the previous step's 95 % interval for this reading
    lo, hi = quantiles[OUTLIER - 1, 0, 0], quantiles[OUTLIER - 1, 0, 4]
    expected = (rest["x"][OUTLIER, 0] - (lo + hi) / 2) / ((hi - lo) / 2)
    assert abs(anomaly[OUTLIER]["score"] - expected) <= 1e-3 * abs(expected)


def test_single_steps_equal_the_whole_sequence(rest: dict) -> None:
    outputs, quantiles, anomaly = stacked(rest["replies"])
    whole = rest["whole"]
    scale = np.abs(quantiles).max()
    np.testing.assert_allclose(np.asarray(whole["outputs"][0]), outputs, atol=1e-5 * scale, rtol=0)
    whole_q = np.stack([np.asarray(whole["quantiles"][k][0]) for k in LEVELS], axis=-1)
    np.testing.assert_allclose(whole_q, quantiles, atol=1e-5 * scale, rtol=0)
    assert [a is None for a in whole["anomaly"][0]] == [a is None for a in anomaly]
    np.testing.assert_array_equal(as_rows(whole["anomaly"][0])[:, :3], as_rows(anomaly)[:, :3])
    np.testing.assert_allclose(as_rows(whole["anomaly"][0])[:, 3], as_rows(anomaly)[:, 3], atol=1e-3)


def test_a_replayed_retry_answers_the_same_flag(client: httpx.Client, rest: dict) -> None:
    x = rest["x"]
    sid = new_session(client)
    for t in range(OUTLIER):
        step(client, sid, x[t : t + 1].tolist(), position=t)
    first = client.post(
        f"/v1/sessions/{sid}/steps", json={"inputs": x[OUTLIER : OUTLIER + 1].tolist(), "position": OUTLIER}
    )
    again = client.post(
        f"/v1/sessions/{sid}/steps", json={"inputs": x[OUTLIER : OUTLIER + 1].tolist(), "position": OUTLIER}
    )
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and first.json()["anomaly"]["outside_95"]
    assert first.json() == rest["replies"][OUTLIER] | {"session_id": sid}


def test_several_readings_in_one_step_give_a_list(client: httpx.Client, rest: dict) -> None:
    x = rest["x"]
    sid = new_session(client)
    reply = step(client, sid, x[: OUTLIER + 1].tolist())
    assert isinstance(reply["anomaly"], list) and len(reply["anomaly"]) == OUTLIER + 1
    assert reply["anomaly"][0] is None and reply["anomaly"][OUTLIER]["outside_95"]
    np.testing.assert_array_equal(
        as_rows(reply["anomaly"])[:, :3], as_rows([r["anomaly"] for r in rest["replies"][: OUTLIER + 1]])[:, :3]
    )


def test_websocket_and_bulk_give_the_same_values(server: ServiceProcess, client: httpx.Client, rest: dict) -> None:
    from websockets.sync.client import connect

    x = rest["x"]
    sid = new_session(client)
    with connect(f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/stream") as ws:
        streamed = []
        for t in range(N):
            ws.send(json.dumps({"inputs": x[t : t + 1].tolist(), "position": t}))
            streamed.append(json.loads(ws.recv()))
    bulk_sid = new_session(client)
    bulked = []
    for t in range(N):
        response = client.post(
            "/v1/models/probe/sessions/steps",
            json={"steps": [{"session_id": bulk_sid, "inputs": x[t : t + 1].tolist(), "position": t}]},
        )
        assert response.status_code == 200, response.text
        bulked.append(response.json()["results"][0])
    for replies in (streamed, bulked):
        for got, want in zip(replies, rest["replies"], strict=True):
            assert got["quantiles"] == want["quantiles"] and got["anomaly"] == want["anomaly"]
            assert got["outputs"] == want["outputs"]


def test_v2_http_and_grpc_carry_the_extra_tensors(server: ServiceProcess, client: httpx.Client, rest: dict) -> None:
    x = rest["x"]
    _, quantiles, anomaly = stacked(rest["replies"])
    meta = client.get("/v2/models/probe").json()
    shapes = {t["name"]: t["shape"] for t in meta["outputs"]}
    assert shapes["quantiles"] == [-1, -1, 2, 5] and shapes["anomaly"] == [-1, -1, 4]
    # V2 HTTP, a sequence stepped a reading at a time
    http_q, http_a = [], []
    for t in range(N):
        params = {"sequence_id": "q-http", "sequence_start": t == 0, "sequence_position": t}
        body = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": x[t].tolist()}],
            "parameters": params,
        }
        response = client.post("/v2/models/probe/infer", json=body)
        assert response.status_code == 200, response.text
        outs = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in response.json()["outputs"]}
        assert set(outs) == {"output", "quantiles", "anomaly"}
        http_q.append(outs["quantiles"][0])
        http_a.append(outs["anomaly"][0])
    np.testing.assert_array_equal(np.concatenate(http_q), quantiles)
    np.testing.assert_array_equal(np.concatenate(http_a), as_rows(anomaly))
    # gRPC, with tritonclient's sequence parameters
    triton = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
    try:
        grpc_q, grpc_a = [], []
        for t in range(N):
            tensor = grpcclient.InferInput("input", [1, 1, 1], "FP32")
            tensor.set_data_from_numpy(x[t : t + 1][None])
            result = triton.infer("probe", [tensor], sequence_id=4242, sequence_start=t == 0)
            grpc_q.append(result.as_numpy("quantiles")[0])
            grpc_a.append(result.as_numpy("anomaly")[0])
        np.testing.assert_array_equal(np.concatenate(grpc_q), quantiles)
        np.testing.assert_array_equal(np.concatenate(grpc_a), as_rows(anomaly))
        # stateless V2 over the whole sequence: the same values as the session's
        tensor = grpcclient.InferInput("input", [1, N, 1], "FP32")
        tensor.set_data_from_numpy(x[None])
        whole = triton.infer("probe", [tensor])
        scale = np.abs(quantiles).max()
        np.testing.assert_allclose(whole.as_numpy("quantiles")[0], quantiles, atol=1e-5 * scale, rtol=0)
    finally:
        triton.close()


def test_fork_and_state_export_import_carry_the_pending_interval(client: httpx.Client, rest: dict) -> None:
    x = rest["x"]
    sid = new_session(client)
    step(client, sid, x[:OUTLIER].tolist())
    fork = client.post(f"/v1/sessions/{sid}/fork").json()["session_id"]
    state = client.get(f"/v1/sessions/{sid}", params={"include_state": True}).json()["state"]
    width = client.get("/v1/models/probe").json()["versions"][0]["state"]["history"][1]
    assert len(state["history"][0]) == width  # count, the pending interval, the ring
    imported = client.post("/v1/models/probe/sessions", json={"state": state}).json()["session_id"]
    want = rest["replies"][OUTLIER]
    for other in (sid, fork, imported):
        got = step(client, other, x[OUTLIER : OUTLIER + 1].tolist())
        assert got["anomaly"] == want["anomaly"] and got["quantiles"] == want["quantiles"]


def test_metrics_count_flags_per_model(server: ServiceProcess, rest: dict) -> None:
    text = httpx.get(f"{server.admin_url}/metrics", timeout=10).text
    counts = {}
    for line in text.splitlines():
        if line.startswith(("seqserve_anomalies_total{", "seqserve_anomaly_readings_total{")):
            name, value = line.rsplit(" ", 1)
            counts[name] = float(value)
    assert counts['seqserve_anomalies_total{interval="95",model="probe/1"}'] >= 1
    assert counts['seqserve_anomaly_readings_total{model="probe/1"}'] >= N - 1
    assert not any("plain" in name for name in counts)


def test_a_model_without_levels_replies_as_before(client: httpx.Client) -> None:
    sid = new_session(client, "plain")
    reply = step(client, sid, raw_inputs(np.random.default_rng(0), 1).tolist())
    assert set(reply) == {"session_id", "model", "version", "position", "outputs"}
    predicted = client.post(
        "/v1/models/plain/predict", json={"inputs": [raw_inputs(np.random.default_rng(0), 3).tolist()]}
    )
    assert set(predicted.json()) == {"model", "version", "outputs"}
    outputs = [o["name"] for o in client.get("/v2/models/plain").json()["outputs"]]
    assert outputs == ["output", "hn", "cn"]


def test_python_client_returns_quantile_columns_and_flags(server: ServiceProcess, rest: dict) -> None:
    import pandas as pd

    from seqserve.client import Client

    x = rest["x"]
    with Client(server.url) as client:
        frame = client.predict("probe", pd.DataFrame({"load": x[:, 0]}))
        assert list(frame.columns[:2]) == ["load@t+1", "load@t+2"]
        assert "load@t+1:q0.1" in frame.columns and "load@t+2:q0.975" in frame.columns
        _, quantiles, anomaly = stacked(rest["replies"])
        scale = np.abs(quantiles).max()
        np.testing.assert_allclose(frame["load@t+1:q0.1"], quantiles[:, 0, 1], atol=1e-5 * scale, rtol=0)
        assert np.isnan(frame["anomaly_score"].iloc[0]) and bool(frame["outside_95"].iloc[OUTLIER])
        assert str(frame["outside_95"].dtype) == "boolean" and pd.isna(frame["outside_80"].iloc[0])
        with client.session("probe") as session:
            session.step(x[:OUTLIER])
            session.step(x[OUTLIER : OUTLIER + 1])
            intervals = session.last_intervals
            assert intervals is not None and intervals.anomaly[0] == anomaly[OUTLIER]
            np.testing.assert_array_equal(intervals.quantiles["0.9"], quantiles[OUTLIER : OUTLIER + 1, :, 3])
    with Client(server.url) as client, client.session("plain") as session:
        session.step(raw_inputs(np.random.default_rng(1), 1))
        assert session.last_intervals is None


def test_redis_sessions_give_the_same_replies(rest: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The pending interval is one more state tensor: a Redis-backed server (two replicas on
    one redis-server, the session stepped on both in turn) answers exactly what memory did."""
    from tests.support.redis import RedisProcess

    x = rest["x"]
    repository = tmp_path_factory.mktemp("quantile-redis-repo")
    export_quantile_model(repository)
    logs = tmp_path_factory.mktemp("redis-logs")
    with RedisProcess(tmp_path_factory.mktemp("redis")) as redis:
        env = {"SEQSERVE_SESSION_STORE": redis.url}
        with ServiceProcess(repository, logs, env) as one, ServiceProcess(repository, logs, env) as two:
            sid = new_session(httpx.Client(base_url=one.url, timeout=30))
            for t in range(N):
                with httpx.Client(base_url=(one, two)[t % 2].url, timeout=30) as c:
                    got = step(c, sid, x[t : t + 1].tolist(), position=t)
                want = rest["replies"][t]
                assert got["quantiles"] == want["quantiles"] and got["anomaly"] == want["anomaly"]

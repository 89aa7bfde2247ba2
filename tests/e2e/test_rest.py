"""The v1 REST API against a real uvicorn process: exactness, sessions, retries, concurrency."""

from __future__ import annotations

import concurrent.futures as cf
import json

import httpx
import numpy as np
import pytest

from models.reference import ReferenceModel
from tests.support.models import raw_inputs

pytestmark = pytest.mark.e2e


def tol(y: np.ndarray) -> float:
    return 1e-5 * max(1.0, float(np.abs(y).max()))


def predict(client: httpx.Client, name: str, x: np.ndarray, **extra) -> dict:
    r = client.post(f"/v1/models/{name}/predict", json={"inputs": x.tolist(), **extra})
    assert r.status_code == 200, r.text
    return r.json()


def new_session(client: httpx.Client, name: str, **body) -> str:
    r = client.post(f"/v1/models/{name}/sessions", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["position"] == 0
    return r.json()["session_id"]


def state_of(client: httpx.Client, sid: str) -> dict:
    r = client.get(f"/v1/sessions/{sid}", params={"include_state": "true"})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_predict_matches_numpy_reference(client, repository, name):
    rng = np.random.default_rng(1)
    x = raw_inputs(rng, 40, batch=3).astype(np.float32)
    body = predict(client, name, x, return_state=True)
    ref = ReferenceModel.from_onnx(repository / name / ("2" if name == "lstm" else "1") / "model.onnx")
    y, state = ref.run(x)
    got = np.asarray(body["outputs"])
    assert got.shape == (3, 40, 2)
    assert np.abs(got - y).max() < tol(y)
    assert body["version"] == (2 if name == "lstm" else 1)
    for key, want in zip(ref.config.state_names, state, strict=True):
        assert np.abs(np.asarray(body["state"][key]) - want).max() < 1e-5


def test_predict_ragged_batch_and_explicit_version(client, repository):
    rng = np.random.default_rng(2)
    seqs = [raw_inputs(rng, n).astype(np.float32) for n in (5, 1, 17)]
    r = client.post("/v1/models/lstm/predict", json={"inputs": [s.tolist() for s in seqs], "version": 1})
    assert r.status_code == 200, r.text
    ref = ReferenceModel.from_onnx(repository / "lstm" / "1" / "model.onnx")
    for seq, out in zip(seqs, r.json()["outputs"], strict=True):
        y, _ = ref.run(seq[None])
        assert np.abs(np.asarray(out) - y[0]).max() < tol(y)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_session_random_chunks_equal_whole_sequence(client, name):
    rng = np.random.default_rng(3)
    x = raw_inputs(rng, 120).astype(np.float32)
    whole = predict(client, name, x[None], return_state=True)
    sid = new_session(client, name)
    outputs, t = [], 0
    while t < len(x):
        n = int(rng.integers(1, 12))
        r = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[t : t + n].tolist(), "position": t})
        assert r.status_code == 200, r.text
        t = min(t + n, len(x))
        assert r.json()["position"] == t
        outputs.extend(r.json()["outputs"])
    want = np.asarray(whole["outputs"][0])
    assert np.abs(np.asarray(outputs) - want).max() < tol(want)
    info = state_of(client, sid)
    assert info["position"] == len(x)
    for key, value in whole["state"].items():
        assert np.abs(np.asarray(info["state"][key]) - np.asarray(value)[:, 0, :]).max() < 1e-5


def test_session_resume_from_exported_state(client):
    """A stream's state taken from one session seeds another: same continuation."""
    rng = np.random.default_rng(4)
    x = raw_inputs(rng, 30).astype(np.float32)
    sid = new_session(client, "gru")
    client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[:20].tolist()})
    exported = state_of(client, sid)["state"]
    resumed = new_session(client, "gru", state=exported)
    a = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[20:].tolist()}).json()["outputs"]
    b = client.post(f"/v1/sessions/{resumed}/steps", json={"inputs": x[20:].tolist()}).json()["outputs"]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_fork_is_an_independent_copy(client):
    rng = np.random.default_rng(5)
    x = raw_inputs(rng, 20).astype(np.float32)
    sid = new_session(client, "lstm")
    client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[:10].tolist()})
    r = client.post(f"/v1/sessions/{sid}/fork")
    assert r.status_code == 201, r.text
    fork = r.json()["session_id"]
    assert fork != sid and r.json()["position"] == 10
    # A what-if on the fork does not touch the original.
    client.post(f"/v1/sessions/{fork}/steps", json={"inputs": (x[10:] * 2).tolist()})
    original = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[10:].tolist()}).json()["outputs"]
    whole = predict(client, "lstm", x[None])["outputs"][0][10:]
    np.testing.assert_allclose(original, whole, atol=tol(np.asarray(whole)))


def test_retry_returns_the_same_response_without_applying_twice(client):
    rng = np.random.default_rng(6)
    x = raw_inputs(rng, 3).astype(np.float32)
    sid = new_session(client, "lstm")
    first = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[:2].tolist(), "position": 0})
    again = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[:2].tolist(), "position": 0})
    assert again.status_code == 200 and again.json() == first.json()
    assert state_of(client, sid)["position"] == 2
    # Same position, different inputs: not a retry, a conflict.
    other = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[1:3].tolist(), "position": 0})
    assert other.status_code == 409 and other.json()["position"] == 2
    # Ahead of the server: conflict naming the real position.
    ahead = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[:1].tolist(), "position": 7})
    assert ahead.status_code == 409 and ahead.json()["code"] == "position_conflict"
    assert state_of(client, sid)["position"] == 2


def test_concurrent_steps_to_one_session_are_serialised_in_order(server):
    """Many concurrent requests to one session: each applied exactly once; the final state is
    the sequential run of the steps in the order of the positions they were given."""
    rng = np.random.default_rng(7)
    n = 60
    x = raw_inputs(rng, n).astype(np.float32)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        sid = new_session(c, "gru")

    def send(i: int) -> tuple[int, list]:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[i : i + 1].tolist()})
            assert r.status_code == 200, r.text
            return r.json()["position"], r.json()["outputs"], i

    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, range(n)))
    positions = sorted(p for p, _, _ in results)
    assert positions == list(range(1, n + 1))  # nothing lost, nothing applied twice
    order = [i for _, _, i in sorted(results)]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        replay = predict(c, "gru", x[order][None], return_state=True)
        final = state_of(c, sid)
    np.testing.assert_allclose(np.asarray(final["state"]["h"]), np.asarray(replay["state"]["h"])[:, 0], atol=1e-5)
    outs = np.asarray([o[0] for _, o, _ in sorted(results)])
    np.testing.assert_allclose(outs, np.asarray(replay["outputs"][0]), atol=tol(outs))


def test_session_pinned_to_its_version(client):
    sid = new_session(client, "lstm", version=1)
    info = state_of(client, sid)
    assert info["version"] == 1
    r = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": [[20.0, 500.0, 12.0]]})
    assert r.json()["version"] == 1


def test_delete_then_gone(client):
    sid = new_session(client, "gru")
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    r = client.get(f"/v1/sessions/{sid}")
    assert r.status_code == 404 and r.json()["code"] == "session_not_found"
    assert client.delete(f"/v1/sessions/{sid}").status_code == 404


def test_session_ttl_expiry(client):
    sid = new_session(client, "gru", ttl_seconds=0.3)
    import time

    time.sleep(1.5)
    r = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": [[1.0, 2.0, 3.0]]})
    assert r.status_code in (404, 410), r.text
    assert r.json()["code"] in ("session_expired", "session_not_found")


def test_models_listing(client):
    models = client.get("/v1/models").json()["models"]
    assert {m["name"] for m in models} == {"lstm", "gru"}
    lstm = client.get("/v1/models/lstm").json()
    assert lstm["latest"] == 2 and [v["version"] for v in lstm["versions"]] == [1, 2]
    v = lstm["versions"][0]
    assert v["cell"] == "lstm" and v["features"] == ["temp", "load", "hour"]
    assert v["state"] == {"h": [2, 16], "c": [2, 16]} and v["provider"] == "CPUExecutionProvider"
    assert client.get("/v1/models/gru").json()["versions"][0]["state"] == {"h": [2, 16]}


def test_bulk_steps_report_each_session(client):
    rng = np.random.default_rng(8)
    sids = [new_session(client, "lstm") for _ in range(5)]
    x = raw_inputs(rng, 5).astype(np.float32)
    steps = [{"session_id": s, "inputs": x[i : i + 1].tolist()} for i, s in enumerate(sids)]
    steps.append({"session_id": "nope", "inputs": [[1.0, 2.0, 3.0]]})
    steps.append({"session_id": sids[0], "inputs": [[1.0, 2.0]]})
    r = client.post("/v1/models/lstm/sessions/steps", json={"steps": steps})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [res.get("position") for res in results[:5]] == [1] * 5
    whole = predict(client, "lstm", x[:, None, :])["outputs"]
    for res, want in zip(results[:5], whole, strict=True):
        np.testing.assert_allclose(res["outputs"], want, atol=tol(np.asarray(want)))
    assert results[5]["status"] == 404 and results[5]["code"] == "session_not_found"
    assert results[6]["status"] == 422 and "features" in results[6]["error"]
    assert state_of(client, sids[0])["position"] == 1  # the bad entry changed nothing


def test_websocket_stream_equals_whole_sequence(server, client):
    import json

    from websockets.sync.client import connect

    rng = np.random.default_rng(9)
    x = raw_inputs(rng, 25).astype(np.float32)
    sid = new_session(client, "lstm")
    outs = []
    with connect(f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/stream") as ws:
        for t in range(0, 25, 5):
            ws.send(json.dumps({"inputs": x[t : t + 5].tolist(), "position": t}))
            reply = json.loads(ws.recv())
            assert reply["position"] == t + 5
            outs.extend(reply["outputs"])
        ws.send(json.dumps({"inputs": [[1, 2]]}))
        err = json.loads(ws.recv())
        assert err["status"] == 422 and err["code"] == "invalid_input"
        ws.send("{not json")
        assert json.loads(ws.recv())["code"] == "malformed_json"
    whole = np.asarray(predict(client, "lstm", x[None])["outputs"][0])
    np.testing.assert_allclose(outs, whole, atol=tol(whole))
    assert state_of(client, sid)["position"] == 25


def test_openapi_and_metrics(server, client):
    spec = client.get("/openapi.json").json()
    assert "/v1/sessions/{session_id}/steps" in spec["paths"]
    assert "StepRequest" in spec["components"]["schemas"]
    assert not [p for p in spec["paths"] if p.startswith("/v1/admin") or p == "/metrics"]
    assert client.get("/metrics").status_code == 404  # metrics live on the admin listener only
    metrics = httpx.get(f"{server.admin_url}/metrics", timeout=10).text
    assert "seqserve_requests_total" in metrics and "seqserve_sessions_active" in metrics
    assert "seqserve_onnxruntime_seconds" in metrics
    assert "seqserve_session_store_up 1.0" in metrics


def test_startup_says_where_it_listens(server, client):
    """The log names every listener once both accept: HTTP with /ui/ and /docs, gRPC, admin."""
    messages = [json.loads(line)["msg"] for line in server.log().splitlines() if line.startswith("{")]
    base = server.url
    assert f"HTTP (v1 REST, WebSocket, KServe V2) on {base}; dashboard {base}/ui/, API docs {base}/docs" in messages
    assert f"gRPC (KServe V2) on 127.0.0.1:{server.grpc_port}" in messages
    assert f"admin API (/v1/admin/*) and /metrics on {server.admin_url}" in messages
    for url in (f"{base}/ui/", f"{base}/docs", f"{server.admin_url}/metrics"):
        assert client.get(url).status_code == 200, url

"""Models with state tensors of any shape (h, c, a history ring [1, B, K], a phase clock
[1, B, 1]) served end to end: a stream in random chunks equals one whole-sequence prediction,
across the memory and Redis stores, a fork, state export/import, WebSocket, bulk and V2
sequences; `start_time` sets the clock; the listing describes every state tensor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from tests.support.models import CYCLE, EPOCH, PERIOD, RING, forecast_series, make_ring_repository, raw_inputs
from tests.support.redis import RedisProcess
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

START = "2014-01-06T01:30:00Z"  # 3 periods after a Monday midnight
START_PHASE = float((datetime(2014, 1, 6, 1, 30, tzinfo=UTC).timestamp() - EPOCH) // PERIOD % CYCLE)


def tol(y: np.ndarray) -> float:
    return 1e-5 * max(1.0, float(np.abs(y).max()))


@pytest.fixture(scope="module")
def ring_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ring_repository(tmp_path_factory.mktemp("ring-repository"))


@pytest.fixture(scope="module", params=["memory", "redis"])
def ring_server(request, ring_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    logs = tmp_path_factory.mktemp(f"logs-{request.param}")
    if request.param == "memory":
        with ServiceProcess(ring_repository, logs) as proc:
            yield proc
        return
    with (
        RedisProcess(logs / "redis", appendonly=False) as redis,
        ServiceProcess(ring_repository, logs, {"SEQSERVE_SESSION_STORE": redis.url}) as proc,
    ):
        yield proc


@pytest.fixture
def c(ring_server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ring_server.url, timeout=30) as client:
        yield client


def predict(c: httpx.Client, name: str, x: np.ndarray, **extra) -> dict:
    r = c.post(f"/v1/models/{name}/predict", json={"inputs": x.tolist(), "return_state": True, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def create(c: httpx.Client, name: str, **body) -> str:
    r = c.post(f"/v1/models/{name}/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def exported(c: httpx.Client, sid: str) -> dict:
    r = c.get(f"/v1/sessions/{sid}", params={"include_state": "true"})
    assert r.status_code == 200, r.text
    return r.json()


def stream(c: httpx.Client, sid: str, x: np.ndarray, start: int, rng: np.random.Generator) -> np.ndarray:
    """Steps x in random chunks, stating positions from `start`; returns the outputs."""
    outputs, t = [], 0
    while t < len(x):
        n = int(rng.integers(1, 9))
        r = c.post(f"/v1/sessions/{sid}/steps", json={"inputs": x[t : t + n].tolist(), "position": start + t})
        assert r.status_code == 200, r.text
        t = min(t + n, len(x))
        assert r.json()["position"] == start + t
        outputs.extend(r.json()["outputs"])
    return np.asarray(outputs)


def assert_state(got: dict, whole: dict) -> None:
    """A session's exported state ([rows][width]) equals a predict's final state (batch 1)."""
    assert set(got) == set(whole)
    for name, value in whole.items():
        want = np.asarray(value)[:, 0, :]
        assert np.asarray(got[name]).shape == want.shape, name
        assert np.abs(np.asarray(got[name]) - want).max() <= tol(want), name


@pytest.mark.parametrize("name", ["ring_lstm", "ring_gru"])
@pytest.mark.parametrize("start_time", [None, START])
def test_stream_fork_and_import_equal_the_whole_sequence(c, name, start_time):
    rng = np.random.default_rng(11 if start_time else 12)
    x = raw_inputs(rng, 3 * RING + 11).astype(np.float32)
    origin = {"start_time": start_time} if start_time else {}
    whole = predict(c, name, x[None], **origin)
    want = np.asarray(whole["outputs"][0])

    sid = create(c, name, **origin)
    head = stream(c, sid, x[:19], 0, rng)
    fork = c.post(f"/v1/sessions/{sid}/fork")
    assert fork.status_code == 201 and fork.json()["position"] == 19
    middle = stream(c, sid, x[19:30], 19, rng)
    state = exported(c, sid)
    assert state["position"] == 30 and set(state["state"]) == set(whole["state"])
    imported = create(c, name, state=state["state"])
    rest = stream(c, sid, x[30:], 30, rng)
    np.testing.assert_array_less(np.abs(np.concatenate([head, middle, rest]) - want), tol(want))

    forked_rest = stream(c, fork.json()["session_id"], x[19:], 19, rng)
    np.testing.assert_array_less(np.abs(forked_rest - want[19:]), tol(want))
    imported_rest = stream(c, imported, x[30:], 0, rng)
    np.testing.assert_array_less(np.abs(imported_rest - want[30:]), tol(want))

    final = exported(c, sid)["state"]
    assert_state(final, whole["state"])
    assert_state(exported(c, fork.json()["session_id"])["state"], whole["state"])
    # The extra tensors hold what the graph says: the last RING loads, the phase.
    np.testing.assert_array_equal(np.asarray(final["ring"], np.float32)[0], x[-RING:, 1])  # exact copies
    phase = (START_PHASE + len(x)) % CYCLE if start_time else -1.0
    assert final["clock"] == [[phase]]


def test_start_time_sets_the_clock_and_changes_the_forecast(c):
    rng = np.random.default_rng(13)
    x = raw_inputs(rng, 4).astype(np.float32)
    fresh = exported(c, create(c, "ring_lstm", start_time=START))["state"]
    assert fresh["clock"] == [[START_PHASE]] and fresh["ring"] == [[0.0] * RING]
    assert exported(c, create(c, "ring_lstm"))["state"]["clock"] == [[-1.0]]
    # Same instant, other spellings: an offset, no offset (UTC), fractional seconds.
    for same in ("2014-01-06T02:30:00+01:00", "2014-01-06T01:30:00", "2014-01-06T01:30:00.000Z"):
        assert exported(c, create(c, "ring_lstm", start_time=same))["state"]["clock"] == [[START_PHASE]]
    known = np.asarray(predict(c, "ring_lstm", x[None], start_time=START)["outputs"])
    unknown = np.asarray(predict(c, "ring_lstm", x[None])["outputs"])
    later = np.asarray(predict(c, "ring_lstm", x[None], start_time="2014-01-06T02:00:00Z")["outputs"])
    assert np.abs(known - unknown).max() > 0.1 and np.abs(known - later).max() > 0.1


@pytest.mark.parametrize(
    ("value", "needle"),
    [("yesterday", "ISO 8601"), ("1990Q5", "1990Q1"), (True, "boolean"), ("2014-02-30T00:00:00Z", "got")],
)
def test_bad_start_time_is_a_422_naming_the_field(c, value, needle):
    for url, body in (
        ("/v1/models/ring_gru/sessions", {"start_time": value}),
        ("/v1/models/ring_gru/predict", {"inputs": [[[20.0, 500.0, 12.0]]], "start_time": value}),
    ):
        r = c.post(url, json=body)
        assert r.status_code == 422 and r.json()["field"] == "start_time", r.text
        assert needle in r.json()["error"]


def test_state_and_start_time_together_are_refused(c):
    state = exported(c, create(c, "ring_gru"))["state"]
    for url, body in (
        ("/v1/models/ring_gru/sessions", {"state": state, "start_time": START}),
        (
            "/v1/models/ring_gru/predict",
            {
                "inputs": [[[20.0, 500.0, 12.0]]],
                "start_time": START,
                "state": {k: [[row] for row in v] for k, v in state.items()},
            },
        ),
    ):
        r = c.post(url, json=body)
        assert r.status_code == 422 and r.json()["fields"] == ["state", "start_time"], r.text
        assert "state" in r.json()["error"] and "start_time" in r.json()["error"]


def test_imported_state_is_checked_per_tensor(c):
    state = exported(c, create(c, "ring_lstm"))["state"]
    bad = {**state, "ring": [[0.0] * (RING - 1)]}
    r = c.post("/v1/models/ring_lstm/sessions", json={"state": bad})
    assert r.status_code == 422 and r.json()["field"] == "state.ring" and r.json()["expected"] == [1, RING]
    missing = {k: v for k, v in state.items() if k != "clock"}
    r = c.post("/v1/models/ring_lstm/sessions", json={"state": missing})
    assert r.status_code == 422 and "state.clock is missing" in r.json()["error"]
    r = c.post("/v1/models/ring_lstm/sessions", json={"state": {**state, "extra": [[1.0]]}})
    assert r.status_code == 422 and "unknown keys ['extra']" in r.json()["error"]
    batched = {k: [[row] for row in v] for k, v in state.items()}
    batched["clock"] = [[[1.0], [2.0]]]  # batch 2 where the inputs have batch 1
    r = c.post("/v1/models/ring_lstm/predict", json={"inputs": [[[20.0, 500.0, 12.0]]], "state": batched})
    assert r.status_code == 422 and r.json()["expected"] == [1, 1, 1]


def test_listing_describes_every_state_tensor(c):
    info = c.get("/v1/models/ring_lstm").json()
    v = info["versions"][0]
    assert v["state"] == {"h": [2, 6], "c": [2, 6], "ring": [1, RING], "clock": [1, 1]}
    assert [t["name"] for t in v["state_tensors"]] == ["h", "c", "ring", "clock"]
    ring = v["state_tensors"][2]
    assert ring["input"] == "ring0" and ring["output"] == "ringn" and ring["graph_shape"] == [1, -1, RING]
    assert "load readings" in ring["doc"] and v["state_tensors"][3]["fill"] == -1.0
    assert v["state_bytes"] == (12 + 12 + RING + 1) * 4
    assert v["clock"] == {"state": "clock", "period_seconds": PERIOD, "epoch": EPOCH, "cycle": CYCLE}
    meta = c.get("/v2/models/ring_gru").json()
    assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [
        ("input", [-1, -1, 3]),
        ("h0", [1, -1, 5]),
        ("ring0", [1, -1, RING]),
        ("clock0", [1, -1, 1]),
    ]
    assert [t["name"] for t in meta["outputs"]] == ["output", "hn", "ringn", "clockn"]


def test_websocket_and_bulk_carry_every_state_tensor(c, ring_server):
    rng = np.random.default_rng(14)
    x = raw_inputs(rng, 2 * RING + 5).astype(np.float32)
    whole = predict(c, "ring_lstm", x[None], start_time=START)
    want = np.asarray(whole["outputs"][0])

    sid = create(c, "ring_lstm", start_time=START)
    with connect(f"ws://127.0.0.1:{ring_server.port}/v1/sessions/{sid}/stream") as ws:
        messages = [json.dumps({"inputs": x[t : t + 2].tolist()}) for t in range(0, len(x), 2)]
        for m in messages:  # pipelined: waiting messages are merged into one call
            ws.send(m)
        replies = [json.loads(ws.recv()) for _ in messages]
    got = np.concatenate([np.asarray(r["outputs"]) for r in replies])
    np.testing.assert_array_less(np.abs(got - want), tol(want))
    assert_state(exported(c, sid)["state"], whole["state"])

    sids = [create(c, "ring_lstm", start_time=START) for _ in range(3)]
    outputs = {s: [] for s in sids}
    for t in range(len(x)):
        entries = [{"session_id": s, "inputs": x[t : t + 1].tolist(), "position": t} for s in sids]
        r = c.post("/v1/models/ring_lstm/sessions/steps", json={"steps": entries})
        assert r.status_code == 200, r.text
        for result in r.json()["results"]:
            assert result.get("status", 200) == 200, result
            outputs[result["session_id"]].extend(result["outputs"])
    for s in sids:
        np.testing.assert_array_less(np.abs(np.asarray(outputs[s]) - want), tol(want))
        assert_state(exported(c, s)["state"], whole["state"])


def v2_infer(c: httpx.Client, name: str, inputs: list[dict], **params) -> httpx.Response:
    body = {"inputs": inputs, "parameters": params}
    if "outputs" in params:
        body["outputs"] = params.pop("outputs")
    return c.post(f"/v2/models/{name}/infer", json=body)


def tensor(name: str, array: np.ndarray) -> dict:
    return {"name": name, "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist()}


def test_v2_sequence_and_stateless_state_tensors(c):
    rng = np.random.default_rng(15)
    x = raw_inputs(rng, RING + 9).astype(np.float32)
    whole = predict(c, "ring_gru", x[None], start_time=START)
    want = np.asarray(whole["outputs"][0])

    seq = f"s{rng.integers(1 << 30)}"
    outputs, t, first = [], 0, True
    names = ["output", "hn", "ringn", "clockn"]
    while t < len(x):
        n = int(rng.integers(1, 6))
        params = {"sequence_id": seq, "sequence_start": first, "outputs": [{"name": k} for k in names]}
        if first:
            params["start_time"] = START
        r = v2_infer(c, "ring_gru", [tensor("input", x[None, t : t + n])], **params)
        assert r.status_code == 200, r.text
        got = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in r.json()["outputs"]}
        outputs.append(got["output"][0])
        t, first = t + n, False
    np.testing.assert_array_less(np.abs(np.concatenate(outputs) - want), tol(want))
    for k in ("h", "ring", "clock"):
        final = np.asarray(whole["state"][k])
        assert got[f"{k}n"].shape == final.shape
        np.testing.assert_array_less(np.abs(got[f"{k}n"] - final), tol(final) + 1e-12)

    # Stateless: the same from explicit state tensors (the final state of the first half).
    half = predict(c, "ring_gru", x[None, :10], start_time=START)
    state = [tensor(f"{k}0", np.asarray(v, np.float32)) for k, v in half["state"].items()]
    r = v2_infer(c, "ring_gru", [tensor("input", x[None, 10:]), *state])
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert set(out) == set(names)
    got = np.asarray(out["output"]["data"]).reshape(out["output"]["shape"])[0]
    np.testing.assert_array_less(np.abs(got - want[10:]), tol(want))
    # Stateless with start_time equals the REST predict with it.
    r = v2_infer(c, "ring_gru", [tensor("input", x[None])], start_time=START)
    got = np.asarray({o["name"]: o for o in r.json()["outputs"]}["output"]["data"]).reshape(want.shape)
    np.testing.assert_array_less(np.abs(got - want), tol(want))


def test_v2_refuses_wrong_state_shapes_and_misplaced_start_time(c):
    x = np.asarray([[[20.0, 500.0, 12.0]]], np.float32)
    fresh = {k: np.zeros(s, np.float32) for k, s in (("h0", (1, 1, 5)), ("ring0", (1, 1, RING)), ("clock0", (1, 1, 1)))}
    bad = {**fresh, "ring0": np.zeros((1, 1, RING + 1), np.float32)}
    r = v2_infer(c, "ring_gru", [tensor("input", x), *(tensor(k, v) for k, v in bad.items())])
    assert r.status_code == 400 and r.json()["field"] == "ring0" and f"[1, 1, {RING}]" in r.json()["error"]
    r = v2_infer(c, "ring_gru", [tensor("input", x), *(tensor(k, v) for k, v in fresh.items())], start_time=START)
    assert r.status_code == 400 and r.json()["field"] == "start_time"
    r = v2_infer(c, "ring_gru", [tensor("input", x)], start_time="soon")
    assert r.status_code == 400 and r.json()["field"] == "start_time"
    seq = "misplaced"
    assert v2_infer(c, "ring_gru", [tensor("input", x)], sequence_id=seq, sequence_start=True).status_code == 200
    r = v2_infer(c, "ring_gru", [tensor("input", x)], sequence_id=seq, start_time=START)
    assert r.status_code == 400 and "sequence_start" in r.json()["error"]


@pytest.mark.parametrize("name", ["forecaster_lstm", "forecaster_gru", "forecaster_hw"])
def test_forecaster_streams_exactly_through_fork_and_import(c, ring_repository, name):
    """The project's forecaster (ring, count, phase next to h (, c); forecaster_hw also its
    Holt-Winters `smoothed` state) served: random chunks, a fork and an exported-then-imported
    state all equal one whole prediction, which equals the NumPy reference reading one value at
    a time (60 readings: past the longest season, so the smoothing runs)."""
    from models.reference import load_reference

    rng = np.random.default_rng(16)
    x = forecast_series(60, seed=3)[None].astype(np.float32)
    whole = predict(c, name, x, start_time=START)
    want = np.asarray(whole["outputs"][0])
    reference = load_reference(ring_repository / name / "1" / "model.onnx")
    start = reference.config.initial_state(1, datetime(2014, 1, 6, 1, 30, tzinfo=UTC).timestamp())
    y, final = reference.run(x.astype(np.float64), start)
    np.testing.assert_array_less(np.abs(want - y[0]), tol(y))
    for key, value in zip(reference.config.state_names, final, strict=True):
        assert np.abs(np.asarray(whole["state"][key]) - value).max() <= tol(value), key
    assert ("smoothed" in whole["state"]) == (name == "forecaster_hw")

    sid = create(c, name, start_time=START)
    head = stream(c, sid, x[0, :17], 0, rng)
    fork = c.post(f"/v1/sessions/{sid}/fork").json()["session_id"]
    imported = create(c, name, state=exported(c, sid)["state"])
    rest = stream(c, sid, x[0, 17:], 17, rng)
    np.testing.assert_array_less(np.abs(np.concatenate([head, rest]) - want), tol(want))
    for other in (fork, imported):
        start_at = exported(c, other)["position"]
        got = stream(c, other, x[0, 17:], start_at, rng)
        np.testing.assert_array_less(np.abs(got - want[17:]), tol(want))
        assert_state(exported(c, other)["state"], whole["state"])
    assert_state(exported(c, sid)["state"], whole["state"])


def test_grpc_sequence_with_start_time_and_every_state_output(c, ring_server):
    """Triton's gRPC client, unchanged: a sequence started with the start_time parameter gives
    the REST prediction, and every state tensor comes back as an output of its own shape."""
    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(17)
    x = raw_inputs(rng, RING + 4).astype(np.float32)
    whole = predict(c, "ring_lstm", x[None], start_time=START)
    want = np.asarray(whole["outputs"][0])
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{ring_server.grpc_port}")
    names = ["output", "hn", "cn", "ringn", "clockn"]
    try:
        outputs, t, seq = [], 0, int(rng.integers(1, 1 << 40))
        while t < len(x):
            n = int(rng.integers(1, 5))
            chunk = grpcclient.InferInput("input", [1, len(x[t : t + n]), 3], "FP32")
            chunk.set_data_from_numpy(x[None, t : t + n])
            result = client.infer(
                "ring_lstm",
                [chunk],
                outputs=[grpcclient.InferRequestedOutput(k) for k in names],
                sequence_id=seq,
                sequence_start=t == 0,
                parameters={"start_time": START} if t == 0 else None,
            )
            outputs.append(result.as_numpy("output")[0])
            t += n
        np.testing.assert_array_less(np.abs(np.concatenate(outputs) - want), tol(want))
        for k in ("h", "c", "ring", "clock"):
            final = np.asarray(whole["state"][k], np.float32)
            got = result.as_numpy(f"{k}n")
            assert got.shape == final.shape, k
            np.testing.assert_array_less(np.abs(got - final), tol(final) + 1e-12)
        assert float(result.as_numpy("clockn")[0, 0, 0]) == (START_PHASE + len(x)) % CYCLE
    finally:
        client.close()

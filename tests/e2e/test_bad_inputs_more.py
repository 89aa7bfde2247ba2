"""More bad inputs, beyond tests/e2e/test_errors.py's catalogue: KServe V2 tensors (datatype,
shape, rank, names, BYTES, huge shapes, on a live sequence too), bulk entries, WebSocket frames
(binary garbage, invalid UTF-8, oversized, unknown fields, bad positions), non-integer and huge
positions, odd/very long session ids, huge and deeply nested arrays, text/plain bodies.

Each gets its 4xx JSON error (a WebSocket error frame with `status`), and no session changes:
an LSTM session, a GRU session and a V2 sequence (session `v2:lstm:77`) are snapshotted with
GET /v1/sessions/{id}?include_state=true before and after every request.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

pytestmark = pytest.mark.e2e

G = [[20.0, 500.0, 12.0]]
SID, GRU = "{sid}", "{gru}"
SEQ = 77


def _raw(body: bytes | str, content_type: str = "application/json") -> dict:
    return {"content": body, "headers": {"content-type": content_type}}


def _tensor(**kw) -> dict:
    return {"name": "input", "datatype": "FP32", "shape": [1, 1, 3], "data": [20.0, 500.0, 12.0], **kw}


def _v2(*inputs: dict, **params) -> dict:
    body: dict = {"inputs": list(inputs)}
    if params:
        body["parameters"] = params
    return {"json": body}


STEPS = f"/v1/sessions/{SID}/steps"
INFER = "/v2/models/lstm/infer"
BULK = "/v1/models/lstm/sessions/steps"

# (name, method, path, request kwargs, status, code)
CASES = [
    # KServe V2 inference
    ("v2 datatype FP64", "POST", INFER, _v2(_tensor(datatype="FP64")), 400, "invalid_inference_request"),
    (
        "v2 datatype INT32",
        "POST",
        INFER,
        _v2(_tensor(datatype="INT32", data=[1, 2, 3])),
        400,
        "invalid_inference_request",
    ),
    ("v2 BYTES", "POST", INFER, _v2(_tensor(datatype="BYTES", data=["abc"])), 400, "invalid_inference_request"),
    (
        "v2 no datatype",
        "POST",
        INFER,
        _v2({"name": "input", "shape": [1, 1, 3], "data": [1, 2, 3]}),
        400,
        "invalid_inference_request",
    ),
    ("v2 shape/data mismatch", "POST", INFER, _v2(_tensor(shape=[1, 2, 3])), 400, "invalid_inference_request"),
    ("v2 2-d input", "POST", INFER, _v2(_tensor(shape=[1, 3])), 400, "invalid_inference_request"),
    ("v2 4-d input", "POST", INFER, _v2(_tensor(shape=[1, 1, 1, 3])), 400, "invalid_inference_request"),
    ("v2 wrong features", "POST", INFER, _v2(_tensor(shape=[1, 3, 1])), 400, "invalid_inference_request"),
    ("v2 negative dim", "POST", INFER, _v2(_tensor(shape=[-1, 1, 3])), 400, "invalid_inference_request"),
    ("v2 float dim", "POST", INFER, _v2(_tensor(shape=[1.5, 1, 3])), 400, "invalid_inference_request"),
    ("v2 huge shape", "POST", INFER, _v2(_tensor(shape=[1, 10**12, 3])), 400, "invalid_inference_request"),
    ("v2 unknown tensor", "POST", INFER, _v2(_tensor(name="x")), 400, "invalid_inference_request"),
    ("v2 tensor twice", "POST", INFER, _v2(_tensor(), _tensor()), 400, "invalid_inference_request"),
    ("v2 string data", "POST", INFER, _v2(_tensor(data=["a", "b", "c"])), 400, "invalid_inference_request"),
    (
        "v2 h0 without c0",
        "POST",
        INFER,
        _v2(_tensor(), {"name": "h0", "datatype": "FP32", "shape": [2, 1, 16], "data": [0.0] * 32}),
        400,
        "invalid_inference_request",
    ),
    ("v2 no inputs", "POST", INFER, {"json": {"inputs": []}}, 400, "invalid_inference_request"),
    # ... on the live sequence: refused before anything is applied
    (
        "v2 seq wrong datatype",
        "POST",
        INFER,
        _v2(_tensor(datatype="FP16"), sequence_id=SEQ),
        400,
        "invalid_inference_request",
    ),
    (
        "v2 seq shape mismatch",
        "POST",
        INFER,
        _v2(_tensor(shape=[1, 2, 3]), sequence_id=SEQ),
        400,
        "invalid_inference_request",
    ),
    (
        "v2 seq batch 2",
        "POST",
        INFER,
        _v2(_tensor(shape=[2, 1, 3], data=[1.0] * 6), sequence_id=SEQ),
        400,
        "invalid_inference_request",
    ),
    (
        "v2 seq bad start flag",
        "POST",
        INFER,
        _v2(_tensor(), sequence_id=SEQ, sequence_start="yes"),
        400,
        "invalid_inference_request",
    ),
    ("v2 seq id float", "POST", INFER, _v2(_tensor(), sequence_id=77.5), 400, "invalid_inference_request"),
    ("v2 seq id negative", "POST", INFER, _v2(_tensor(), sequence_id=-77), 400, "invalid_inference_request"),
    # positions
    ("float position", "POST", STEPS, {"json": {"inputs": G, "position": 0.0}}, 422, "invalid_input"),
    ("bool position", "POST", STEPS, {"json": {"inputs": G, "position": True}}, 422, "invalid_input"),
    ("null-ish position list", "POST", STEPS, {"json": {"inputs": G, "position": [0]}}, 422, "invalid_input"),
    (
        "position beyond u64",
        "POST",
        STEPS,
        _raw(b'{"inputs": [[20,500,12]], "position": 1180591620717411303424}'),
        422,
        "invalid_input",
    ),
    ("position -0.5", "POST", STEPS, {"json": {"inputs": G, "position": -0.5}}, 422, "invalid_input"),
    # session ids
    (
        "very long session id",
        "POST",
        "/v1/sessions/" + "a" * 8000 + "/steps",
        {"json": {"inputs": G}},
        404,
        "session_not_found",
    ),
    (
        "odd chars session id",
        "POST",
        "/v1/sessions/%E2%98%83%20%3Cx%3E%22'/steps",
        {"json": {"inputs": G}},
        404,
        "session_not_found",
    ),
    ("nul session id", "GET", "/v1/sessions/%00", {}, 404, "session_not_found"),
    ("sequence-looking id", "POST", "/v1/sessions/v2:lstm:78/steps", {"json": {"inputs": G}}, 404, "session_not_found"),
    ("delete odd id", "DELETE", "/v1/sessions/%E2%98%83", {}, 404, "session_not_found"),
    # huge / deep arrays (under the body limit)
    ("200k steps", "POST", STEPS, _raw(b'{"inputs": [' + b"[1,2,3]," * 200_000 + b"[1,2,3]]}"), 422, "limit_exceeded"),
    ("400k features", "POST", STEPS, _raw(b'{"inputs": [[' + b"1," * 400_000 + b"1]]}"), 422, "invalid_input"),
    ("deeply nested", "POST", STEPS, _raw(b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"), 400, "malformed_json"),
    (
        "v2 huge data",
        "POST",
        INFER,
        _raw(json.dumps(_v2(_tensor(data=[1.0] * 150_000))["json"])),
        400,
        "invalid_inference_request",
    ),
    # content types
    ("text/plain malformed", "POST", STEPS, _raw(b"inputs=1,2,3", "text/plain"), 400, "malformed_json"),
    ("form-encoded", "POST", STEPS, _raw(b"inputs=%5B%5D", "application/x-www-form-urlencoded"), 400, "malformed_json"),
    # bulk: whole-request errors
    (
        "bulk 1025 entries",
        "POST",
        BULK,
        {"json": {"steps": [{"session_id": SID, "inputs": G}] * 1025}},
        422,
        "limit_exceeded",
    ),
    ("bulk no steps", "POST", BULK, {"json": {}}, 422, "invalid_input"),
    ("bulk unknown top field", "POST", BULK, {"json": {"steps": [], "x": 1}}, 422, "invalid_input"),
    ("bulk unknown model", "POST", "/v1/models/nope/sessions/steps", {"json": {"steps": []}}, 404, "model_not_found"),
]

# Bulk requests whose every entry is bad: 200 with one 4xx result per entry.
BULK_ENTRIES = [
    (5, 422),
    ({"inputs": G}, 422),  # no session_id
    ({"session_id": SID, "inputs": "x"}, 422),
    ({"session_id": SID, "inputs": G, "position": 10**9}, 409),
    ({"session_id": SID, "inputs": G, "position": -1}, 422),
    ({"session_id": SID, "inputs": G, "bogus": 1}, 422),
    ({"session_id": SID, "inputs": [[1.0, 2.0]]}, 422),
    ({"session_id": GRU, "inputs": G}, 422),  # a GRU session in an LSTM bulk request
    ({"session_id": "nope", "inputs": G}, 404),
]

# WebSocket frames: (name, frame, status)
FRAMES = [
    ("binary garbage", b"\xff\xfe\x00\x01garbage", 400),
    ("binary invalid utf-8 json", b'{"inputs": "\xff\xfe"}', 400),
    ("binary empty", b"", 400),
    ("text not json", "hello", 400),
    ("unknown field", json.dumps({"inputs": G, "x": 1}), 422),
    ("array message", json.dumps([G]), 422),
    ("missing inputs", json.dumps({"position": 0}), 422),
    ("huge message", json.dumps({"inputs": G}) + " " * 2_100_000, 422),
    ("float position", json.dumps({"inputs": G, "position": 1.5}), 422),
    ("negative position", json.dumps({"inputs": G, "position": -3}), 422),
    ("ahead position", json.dumps({"inputs": G, "position": 10**6}), 409),
    ("wrong features", json.dumps({"inputs": [[1.0]]}), 422),
    ("too many steps", json.dumps({"inputs": G * 501}), 422),
]


@pytest.fixture(scope="module")
def sessions(server) -> dict[str, str]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        ids = {}
        for name in ("lstm", "gru"):
            sid = c.post(f"/v1/models/{name}/sessions", json={}).json()["session_id"]
            r = c.post(f"/v1/sessions/{sid}/steps", json={"inputs": [[21.0, 510.0, 3.0], [19.0, 480.0, 4.0]]})
            assert r.status_code == 200, r.text
            ids[name] = sid
        r = c.post(INFER, **_v2(_tensor(), sequence_id=SEQ, sequence_start=True))
        assert r.status_code == 200, r.text
        ids["sequence"] = f"v2:lstm:{SEQ}"
        return ids


def _snapshot(c: httpx.Client, ids: dict[str, str]) -> dict:
    snap = {}
    for name, sid in ids.items():
        r = c.get(f"/v1/sessions/{sid}", params={"include_state": "true"})
        assert r.status_code == 200, r.text
        snap[name] = {k: v for k, v in r.json().items() if k != "expires_at"}
    return snap


def _fill(value, ids: dict[str, str]):
    if isinstance(value, str):
        return value.replace(SID, ids["lstm"]).replace(GRU, ids["gru"])
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _assert_error_body(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["code"] == code, body
    assert "Traceback" not in r.text and "site-packages" not in r.text
    return body


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_4xx_json_and_changes_nothing(server, sessions, name, method, path, kwargs, status, code):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        before = _snapshot(c, sessions)
        r = c.request(method, _fill(path, sessions), **_fill(kwargs, sessions))
        _assert_error_body(r, status, code)
        assert _snapshot(c, sessions) == before


def test_bulk_of_bad_entries_answers_each_and_changes_nothing(server, sessions):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        before = _snapshot(c, sessions)
        entries = [_fill(e, sessions) for e, _ in BULK_ENTRIES]
        r = c.post(BULK, json={"steps": entries})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [res["status"] for res in results] == [s for _, s in BULK_ENTRIES], results
        for entry, res in zip(entries, results, strict=True):
            assert isinstance(res["error"], str) and res["code"], res
            given = entry.get("session_id") if isinstance(entry, dict) else None
            assert res["session_id"] == (given if isinstance(given, str) else None), res
        assert _snapshot(c, sessions) == before


def test_bulk_good_entry_next_to_bad_ones_applies_only_itself(server, sessions):
    """One good entry on a scratch session amid bad ones: only the scratch session moves."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        scratch = c.post("/v1/models/lstm/sessions").json()["session_id"]
        before = _snapshot(c, sessions)
        bad = [_fill(e, sessions) for e, _ in BULK_ENTRIES if isinstance(e, dict) and "session_id" in e]
        r = c.post(BULK, json={"steps": [*bad, {"session_id": scratch, "inputs": G * 3, "position": 0}]})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results[-1].get("status", 200) == 200, results[-1]
        assert results[-1]["position"] == 3
        assert all(res["status"] >= 400 for res in results[:-1]), results
        assert c.get(f"/v1/sessions/{scratch}").json()["position"] == 3
        assert _snapshot(c, sessions) == before


def test_websocket_bad_frames_get_error_frames_and_change_nothing(server, sessions):
    url = server.url.replace("http://", "ws://") + f"/v1/sessions/{sessions['lstm']}/stream"

    async def run() -> list[dict]:
        replies = []
        async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
            for _, frame, _ in FRAMES:
                await ws.send(frame)
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            # the connection is still usable after all of that: a stale position is answered too
            await ws.send(json.dumps({"inputs": G, "position": 0}))
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        return replies

    with httpx.Client(base_url=server.url, timeout=30) as c:
        before = _snapshot(c, sessions)
        replies = asyncio.run(run())
        for (name, _, status), reply in zip(FRAMES, replies, strict=False):
            assert reply.get("status") == status, (name, reply)
            assert isinstance(reply["error"], str) and reply["code"], (name, reply)
        assert replies[-1]["status"] == 409 and replies[-1]["position"] == 2, replies[-1]
        assert _snapshot(c, sessions) == before


@pytest.mark.parametrize("session_id", ["nope", "a" * 4000, "%E2%98%83"])
def test_websocket_unknown_session_gets_404_frame_then_close(server, session_id):
    url = server.url.replace("http://", "ws://") + f"/v1/sessions/{session_id}/stream"

    async def run():
        async with websockets.connect(url, open_timeout=10) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return frame, closed.value.rcvd.code

    frame, code = asyncio.run(run())
    assert frame["status"] == 404 and frame["code"] == "session_not_found"
    assert code == 4404


def test_server_survives(server):
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200

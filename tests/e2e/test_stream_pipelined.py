"""WebSocket clients that send without waiting for replies: replies are exactly what one-by-one
requests would get, in order, whether the server merges the waiting messages or not."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from tests.support.models import raw_inputs

pytestmark = pytest.mark.e2e


def _ort_calls(server) -> float:
    text = httpx.get(f"{server.admin_url}/metrics", timeout=10).text
    match = re.search(r'^seqserve_onnxruntime_seconds_count\{model="lstm/2"\} ([0-9.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _whole(client: httpx.Client, x: np.ndarray) -> dict:
    r = client.post("/v1/models/lstm/predict", json={"inputs": [x.tolist()], "return_state": True})
    assert r.status_code == 200, r.text
    return r.json()


def test_pipelined_messages_equal_the_whole_sequence(server, client):
    rng = np.random.default_rng(21)
    sizes = rng.integers(1, 4, size=60)
    x = raw_inputs(rng, int(sizes.sum())).astype(np.float32)
    sid = client.post("/v1/models/lstm/sessions", json={}).json()["session_id"]
    messages, t = [], 0
    for k, n in enumerate(sizes):
        body = {"inputs": x[t : t + n].tolist()}
        if k % 3 == 0:
            body["position"] = t  # some state where they believe the stream is
        messages.append(json.dumps(body))
        t += int(n)
    bad = json.dumps({"inputs": [[1.0, 2.0]]})  # wrong feature count, in the middle
    messages.insert(30, bad)
    calls = _ort_calls(server)
    with connect(f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/stream") as ws:
        # Two bursts, each sent before any of its replies is read. How many messages wait
        # together depends on timing; a burst holding the invalid message is answered one by
        # one, so the clean first burst is what shows the merging.
        for m in messages[:30]:
            ws.send(m)
        replies = [json.loads(ws.recv()) for _ in messages[:30]]
        for m in messages[30:]:
            ws.send(m)
        replies += [json.loads(ws.recv()) for _ in messages[30:]]
    merged_calls = _ort_calls(server) - calls
    assert 0 < merged_calls < len(messages) - 5, merged_calls  # waiting messages went out together
    assert replies[30]["status"] == 422 and replies[30]["code"] == "invalid_input"
    good = replies[:30] + replies[31:]
    assert [r["position"] for r in good] == list(np.cumsum(sizes))
    outputs = np.concatenate([np.asarray(r["outputs"]) for r in good])
    whole = _whole(client, x)
    want = np.asarray(whole["outputs"][0])
    np.testing.assert_allclose(outputs, want, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    info = client.get(f"/v1/sessions/{sid}", params={"include_state": "true"}).json()
    assert info["position"] == len(x)
    np.testing.assert_allclose(info["state"]["h"], np.asarray(whole["state"]["h"])[:, 0], atol=1e-5)


def test_pipelined_retry_and_conflict_behave_as_one_by_one(server, client):
    rng = np.random.default_rng(22)
    x = raw_inputs(rng, 3).astype(np.float32)
    sid = client.post("/v1/models/lstm/sessions", json={}).json()["session_id"]
    first = json.dumps({"inputs": x[:2].tolist(), "position": 0})
    messages = [
        first,
        first,  # a retry of the previous message: replayed, not applied again
        json.dumps({"inputs": x[2:].tolist(), "position": 0}),  # stale: conflict
        json.dumps({"inputs": x[2:].tolist(), "position": 2}),
    ]
    with connect(f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/stream") as ws:
        for m in messages:
            ws.send(m)
        replies = [json.loads(ws.recv()) for _ in messages]
    assert replies[1] == replies[0] and replies[0]["position"] == 2
    assert replies[2]["status"] == 409 and replies[2]["position"] == 2
    assert replies[3]["position"] == 3
    want = np.asarray(_whole(client, x)["outputs"][0])
    got = np.concatenate([replies[0]["outputs"], replies[3]["outputs"]])
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_pipelined_positions_must_be_integers_like_rest(server, client):
    """`position: false` equals 0 and `1.0` equals 1 in Python; on the merged path they were
    taken as positions. They are 422 like POST .../steps, wherever the message is."""
    step = [[20.0, 500.0, 12.0]]
    for stated, bad in (([False], 0), ([0, 1.0], 1), ([0, True], 1), ([0, 1, "2"], 2)):
        sid = client.post("/v1/models/lstm/sessions", json={}).json()["session_id"]
        messages = [{"inputs": step, "position": p} for p in stated] + [{"inputs": step}] * 6
        with connect(f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/stream") as ws:
            for m in messages:  # all sent before any reply is read, so they wait together
                ws.send(json.dumps(m))
            replies = [json.loads(ws.recv()) for _ in messages]
        assert replies[bad]["status"] == 422 and replies[bad]["field"] == "position", (stated, replies[bad])
        good = replies[:bad] + replies[bad + 1 :]
        assert [r["position"] for r in good] == list(range(1, len(messages))), stated
    rest = client.post(f"/v1/sessions/{sid}/steps", json={"inputs": step, "position": False})
    assert rest.status_code == 422 and rest.json()["field"] == "position"

"""Every bad input gets a clear 4xx JSON error naming the problem, and no session changes.

A catalogue of bad requests runs against a real server while two sessions (one per cell)
hold known state; after each request the sessions' positions and states must be identical.
"""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.e2e

GOOD_STEP = [[20.0, 500.0, 12.0]]
SID = "{sid}"  # replaced by the LSTM session's id
BIG = 2_100_000  # over the test server's 2,000,000-byte body limit


def _raw(body: bytes | str, content_type: str = "application/json") -> dict:
    return {"content": body, "headers": {"content-type": content_type}}


# (name, method, path, request kwargs, expected status, words the error must contain)
CASES = [
    ("malformed json", "POST", f"/v1/sessions/{SID}/steps", _raw(b'{"inputs": [[1,2,'), 400, "not valid JSON"),
    ("empty body", "POST", f"/v1/sessions/{SID}/steps", _raw(b""), 400, "empty"),
    ("invalid utf-8", "POST", f"/v1/sessions/{SID}/steps", _raw(b'{"inputs": "\xff\xfe"}'), 400, "JSON"),
    ("body not object", "POST", f"/v1/sessions/{SID}/steps", {"json": [1, 2, 3]}, 422, "object"),
    ("unknown field", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": GOOD_STEP, "x": 1}}, 422, "unknown"),
    ("missing inputs", "POST", f"/v1/sessions/{SID}/steps", {"json": {"position": 0}}, 422, "inputs"),
    ("inputs string", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": "1,2,3"}}, 422, "array"),
    (
        "inputs flat",
        "POST",
        f"/v1/sessions/{SID}/steps",
        {"json": {"inputs": [1.0, 2.0, 3.0]}},
        422,
        "[time][features]",
    ),
    ("inputs empty", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": []}}, 422, "non-empty"),
    ("inputs 3-d", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": [GOOD_STEP]}}, 422, "[time][features]"),
    ("wrong feature count", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": [[1.0, 2.0]]}}, 422, "features"),
    ("ragged steps", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": [[1, 2, 3], [1, 2]]}}, 422, "ragged"),
    ("string values", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": [["a", "b", "c"]]}}, 422, "numbers"),
    ("null values", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": [[None, 1, 2]]}}, 422, "numbers"),
    ("bool values", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": [[True, 1, 2]]}}, 422, "numbers"),
    ("NaN", "POST", f"/v1/sessions/{SID}/steps", _raw(b'{"inputs": [[NaN, 1, 2]]}'), 400, "JSON"),
    ("huge float", "POST", f"/v1/sessions/{SID}/steps", {"json": {"inputs": [[1e300, 1, 2]]}}, 422, "infinite"),
    (
        "negative position",
        "POST",
        f"/v1/sessions/{SID}/steps",
        {"json": {"inputs": GOOD_STEP, "position": -1}},
        422,
        "position",
    ),
    (
        "huge position",
        "POST",
        f"/v1/sessions/{SID}/steps",
        {"json": {"inputs": GOOD_STEP, "position": 10**12}},
        409,
        "position",
    ),
    (
        "string position",
        "POST",
        f"/v1/sessions/{SID}/steps",
        {"json": {"inputs": GOOD_STEP, "position": "0"}},
        422,
        "position",
    ),
    (
        "too many steps",
        "POST",
        f"/v1/sessions/{SID}/steps",
        {"json": {"inputs": GOOD_STEP * 501}},
        422,
        "max_steps_per_request",
    ),
    (
        "oversized body",
        "POST",
        f"/v1/sessions/{SID}/steps",
        _raw(b'{"inputs": [[' + b"1," * BIG + b"1]]}"),
        413,
        "exceeds",
    ),
    (
        "unknown session",
        "POST",
        "/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA/steps",
        {"json": {"inputs": GOOD_STEP}},
        404,
        "does not exist",
    ),
    ("unknown session get", "GET", "/v1/sessions/nope", {}, 404, "does not exist"),
    ("unknown session fork", "POST", "/v1/sessions/nope/fork", {}, 404, "does not exist"),
    ("unknown model", "POST", "/v1/models/nope/predict", {"json": {"inputs": [GOOD_STEP]}}, 404, "not loaded"),
    (
        "unknown version",
        "POST",
        "/v1/models/lstm/predict",
        {"json": {"inputs": [GOOD_STEP], "version": 9}},
        404,
        "no version 9",
    ),
    (
        "version not int",
        "POST",
        "/v1/models/lstm/predict",
        {"json": {"inputs": [GOOD_STEP], "version": "x"}},
        422,
        "version",
    ),
    ("predict 2-d", "POST", "/v1/models/lstm/predict", {"json": {"inputs": GOOD_STEP}}, 422, "[time][features]"),
    (
        "predict batch limit",
        "POST",
        "/v1/models/lstm/predict",
        {"json": {"inputs": [GOOD_STEP] * 17}},
        422,
        "max_batch_size",
    ),
    (
        "predict bad state",
        "POST",
        "/v1/models/lstm/predict",
        {"json": {"inputs": [GOOD_STEP], "state": {"h": [[1]]}}},
        422,
        "state",
    ),
    (
        "predict state key",
        "POST",
        "/v1/models/gru/predict",
        {"json": {"inputs": [GOOD_STEP], "state": {"c": []}}},
        422,
        "unknown keys",
    ),
    ("create unknown model", "POST", "/v1/models/nope/sessions", {"json": {}}, 404, "not loaded"),
    ("create bad ttl", "POST", "/v1/models/lstm/sessions", {"json": {"ttl_seconds": -5}}, 422, "ttl_seconds"),
    ("create huge ttl", "POST", "/v1/models/lstm/sessions", {"json": {"ttl_seconds": 1e12}}, 422, "max_session_ttl"),
    (
        "create bad state",
        "POST",
        "/v1/models/lstm/sessions",
        {"json": {"state": {"h": [[0.0] * 16] * 2}}},
        422,
        "state.c",
    ),
    ("bulk not list", "POST", "/v1/models/lstm/sessions/steps", {"json": {"steps": 5}}, 422, "steps"),
    ("wrong method", "PUT", f"/v1/sessions/{SID}/steps", {"json": {}}, 405, "Method Not Allowed"),
    ("unknown route", "GET", "/v1/nothing-here", {}, 404, "no route"),
]


@pytest.fixture(scope="module")
def sessions(server):
    """One LSTM and one GRU session with a few steps applied."""
    with httpx.Client(base_url=server.url) as c:
        ids = {}
        for name in ("lstm", "gru"):
            sid = c.post(f"/v1/models/{name}/sessions", json={}).json()["session_id"]
            c.post(f"/v1/sessions/{sid}/steps", json={"inputs": [[21.0, 510.0, 3.0], [19.0, 480.0, 4.0]]})
            ids[name] = sid
        return ids


def _snapshot(c: httpx.Client, ids: dict) -> dict:
    return {name: c.get(f"/v1/sessions/{sid}", params={"include_state": "true"}).json() for name, sid in ids.items()}


def _strip_expiry(snapshot: dict) -> dict:
    return {k: {f: v for f, v in s.items() if f != "expires_at"} for k, s in snapshot.items()}


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_4xx_and_changes_nothing(server, sessions, name, method, path, kwargs, status, words):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        before = _snapshot(c, sessions)
        r = c.request(method, path.replace(SID, sessions["lstm"]), **kwargs)
        assert r.status_code == status, r.text
        body = r.json()
        assert isinstance(body["error"], str) and body["code"]
        assert words.lower() in json.dumps(body).lower(), body
        assert "Traceback" not in r.text and "/site-packages/" not in r.text
        after = _snapshot(c, sessions)
        assert _strip_expiry(after) == _strip_expiry(before)


def test_server_survives_the_catalogue(client):
    assert client.get("/v2/health/ready").status_code == 200

"""Secure by default, on real servers: API keys on every data route, sessions owned by their
key, the admin API on its own port behind its own key, refusal to start open beyond
loopback, eviction answered 410 `reason: evicted`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.servers import ROOT, ServiceProcess

pytestmark = pytest.mark.e2e

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
ADMIN = "admin-key-0123456789ab"
STEP = {"inputs": [[20.0, 500.0, 12.0]]}
V2_STEP = {"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [20.0, 500.0, 12.0]}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    # Key B is configured by its digest only: the server never sees B's plaintext.
    keys = f"{KEY_A}, sha256:{hashlib.sha256(KEY_B.encode()).hexdigest()}"
    env = {"SEQSERVE_API_KEYS": keys, "SEQSERVE_ADMIN_KEY": ADMIN, "SEQSERVE_MAX_SESSIONS_PER_KEY": "8"}
    proc = ServiceProcess(repository, tmp_path_factory.mktemp("security"), env).start(timeout=120)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def a(server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": KEY_A}) as c:
        yield c


@pytest.fixture
def b(server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, headers=auth(KEY_B)) as c:
        yield c


def data_routes(sid: str) -> list[tuple[str, str, dict | None]]:
    """Every data route (REST, the fast-path ones, bulk, V2), with a valid body."""
    infer = {"inputs": [V2_STEP]}
    return [
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/lstm", None),
        ("POST", "/v1/models/lstm/predict", {"inputs": [STEP["inputs"]]}),
        ("POST", "/v1/models/lstm/sessions", {}),
        ("POST", f"/v1/sessions/{sid}/steps", STEP),
        ("GET", f"/v1/sessions/{sid}", None),
        ("POST", f"/v1/sessions/{sid}/fork", {}),
        ("DELETE", f"/v1/sessions/{sid}", None),
        ("POST", "/v1/models/lstm/sessions/steps", {"steps": [{"session_id": sid, **STEP}]}),
        ("GET", "/v2", None),
        ("GET", "/v2/models/lstm", None),
        ("GET", "/v2/models/lstm/versions/1/ready", None),
        ("POST", "/v2/models/lstm/infer", infer),
        ("POST", "/v2/models/lstm/versions/1/infer", infer),
    ]


def test_every_data_route_needs_a_valid_key(server: ServiceProcess, a: httpx.Client) -> None:
    sid = a.post("/v1/models/lstm/sessions").json()["session_id"]
    bad_headers = [
        ({}, "needs an API key"),
        ({"X-API-Key": "wrong-key-0123456789"}, "not valid"),
        ({"Authorization": "Bearer wrong-key-0123456789"}, "not valid"),
        ({"Authorization": "Basic " + KEY_A}, "needs an API key"),
    ]
    for headers, problem in bad_headers:
        for method, path, body in data_routes(sid):  # the fast-path routes (steps, predict) included
            r = httpx.request(method, server.url + path, json=body, headers=headers, timeout=10)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json"
            assert r.json()["code"] == "unauthorized" and problem in r.json()["error"], r.text
            assert r.headers["www-authenticate"].startswith("Bearer")
    # The session was untouched by all of that, and a valid key works on every route.
    assert a.get(f"/v1/sessions/{sid}").json()["position"] == 0
    for method, path, body in data_routes(sid):
        r = a.request(method, path, json=body)
        assert r.status_code < 300, (method, path, r.text)
    # Health probes and the API description stay open (load balancers, docs).
    for path in ("/v2/health/live", "/v2/health/ready", "/v1/health/sessions", "/openapi.json"):
        assert httpx.get(server.url + path, timeout=10).status_code == 200, path


def test_websocket_needs_a_valid_key(server: ServiceProcess, a: httpx.Client) -> None:
    sid = a.post("/v1/models/lstm/sessions").json()["session_id"]
    url = f"ws://127.0.0.1:{server.port}/v1/sessions/{sid}/stream"
    for headers in ({}, {"X-API-Key": "wrong-key-0123456789"}):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=10)
        response = refused.value.response
        assert response.status_code == 401
        assert json.loads(response.body)["code"] == "unauthorized"
    with connect(url, additional_headers={"X-API-Key": KEY_A}, open_timeout=10) as ws:
        ws.send(json.dumps(STEP))
        assert json.loads(ws.recv())["position"] == 1


def test_another_key_cannot_see_step_fork_or_delete_a_session(a: httpx.Client, b: httpx.Client) -> None:
    sid = a.post("/v1/models/lstm/sessions").json()["session_id"]
    a.post(f"/v1/sessions/{sid}/steps", json=STEP).raise_for_status()
    missing = "no-such-session-id-000000"
    for sid_, expect_same in ((sid, True), (missing, True)):
        answers = [
            b.get(f"/v1/sessions/{sid_}"),
            b.get(f"/v1/sessions/{sid_}", params={"include_state": True}),
            b.post(f"/v1/sessions/{sid_}/steps", json=STEP),
            b.post(f"/v1/sessions/{sid_}/steps", json={**STEP, "position": 1}),
            b.post(f"/v1/sessions/{sid_}/fork"),
            b.delete(f"/v1/sessions/{sid_}"),
        ]
        for r in answers:
            # Exactly what a nonexistent id gets: no oracle for other keys' ids.
            assert r.status_code == 404 and expect_same, r.text
            assert r.json() == {
                "error": f"session '{sid_}' does not exist",
                "code": "session_not_found",
                "session_id": sid_,
            }
    bulk = b.post("/v1/models/lstm/sessions/steps", json={"steps": [{"session_id": sid, **STEP}]}).json()
    assert bulk["results"][0]["status"] == 404 and bulk["results"][0]["code"] == "session_not_found"
    url = str(b.base_url).replace("http", "ws") + f"/v1/sessions/{sid}/stream"
    with connect(url, additional_headers=auth(KEY_B), open_timeout=10) as ws:
        assert json.loads(ws.recv())["status"] == 404
    # Owner A still has it, untouched by B's attempts.
    info = a.get(f"/v1/sessions/{sid}").json()
    assert info["position"] == 1
    assert "owner" not in info
    assert a.delete(f"/v1/sessions/{sid}").status_code == 204


def test_v2_sequence_ids_belong_to_their_key(a: httpx.Client, b: httpx.Client) -> None:
    start = {"inputs": [V2_STEP], "parameters": {"sequence_id": 77, "sequence_start": True}}
    go_on = {"inputs": [V2_STEP], "parameters": {"sequence_id": 77}}
    assert a.post("/v2/models/lstm/infer", json=start).status_code == 200
    r = b.post("/v2/models/lstm/infer", json=go_on)  # B never started a sequence 77
    assert r.status_code == 400 and r.json()["code"] == "invalid_inference_request", r.text
    assert b.post("/v2/models/lstm/infer", json=start).status_code == 200  # B's own sequence 77
    assert a.post("/v2/models/lstm/infer", json=go_on).status_code == 200  # A's was not replaced
    end = {"inputs": [V2_STEP], "parameters": {"sequence_id": 77, "sequence_end": True}}
    assert a.post("/v2/models/lstm/infer", json=end).status_code == 200
    assert b.post("/v2/models/lstm/infer", json=go_on).status_code == 200  # B's survives A's end
    assert b.post("/v2/models/lstm/infer", json=end).status_code == 200


def test_per_key_quota_is_per_key_and_freed_by_delete(a: httpx.Client, b: httpx.Client) -> None:
    ids = []  # earlier tests in this module may hold a few of A's 8 slots
    for _ in range(8):
        r = a.post("/v1/models/gru/sessions")
        if r.status_code == 429:
            break
        ids.append(r.json()["session_id"])
    r = a.post("/v1/models/gru/sessions")
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "too_many_sessions" and r.json()["limit"] == "max_sessions_per_key"
    assert a.post(f"/v1/sessions/{ids[0]}/fork").status_code == 429
    created = b.post("/v1/models/gru/sessions")  # B's quota is its own
    assert created.status_code == 201
    assert a.delete(f"/v1/sessions/{ids[0]}").status_code == 204
    assert a.post("/v1/models/gru/sessions").status_code == 201  # the slot is free at once
    for sid in ids[1:]:
        a.delete(f"/v1/sessions/{sid}")
    b.delete(f"/v1/sessions/{created.json()['session_id']}")


def test_admin_lives_on_its_own_port_behind_its_key(server: ServiceProcess, a: httpx.Client) -> None:
    admin_routes = [
        ("POST", "/v1/admin/reload"),
        ("GET", "/v1/admin/sessions"),
        ("POST", "/v1/admin/models/lstm/versions/1/unload"),
        ("POST", "/v1/admin/models/nope/versions/9/unload"),
    ]
    # Not on the data port at all: a data key finds no such route, the admin key is no data key.
    for method, path in [*admin_routes, ("GET", "/metrics")]:
        r = httpx.request(method, server.url + path, headers=auth(KEY_A), timeout=10)
        assert r.status_code == 404 and r.json()["code"] == "not_found", (method, path, r.text)
        r = httpx.request(method, server.url + path, headers=auth(ADMIN), timeout=10)
        assert r.status_code == 401, (method, path, r.text)
    # On the admin port: every admin route refused without the admin key (data keys included).
    for method, path in admin_routes:
        for headers in ({}, auth(KEY_A), {"X-API-Key": "wrong-admin-key-000"}):
            r = httpx.request(method, server.admin_url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["code"] == "unauthorized" and "admin" in r.json()["error"]
    r = httpx.get(server.admin_url + "/v1/admin/sessions", headers=auth(ADMIN), timeout=10)
    assert r.status_code == 200 and "count" in r.json()
    metrics = httpx.get(server.admin_url + "/metrics", timeout=10)
    assert metrics.status_code == 200 and "seqserve_session_store_up" in metrics.text
    assert 'route="(unauthorized)"' in metrics.text  # refusals are counted under one label


def _serve(repository: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SEQSERVE_MODEL_REPOSITORY": str(repository),
        "SEQSERVE_PORT": "0",
        "SEQSERVE_ADMIN_PORT": "0",
        **env,
    }
    for name in ("SEQSERVE_API_KEYS", "SEQSERVE_ADMIN_KEY"):
        env.setdefault(name, "")
    cmd = [sys.executable, "-m", "seqserve.cli", "serve"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SEQSERVE_HOST": "0.0.0.0", "SEQSERVE_API_KEYS": KEY_A}, "SEQSERVE_ADMIN_KEY"),
        ({"SEQSERVE_HOST": "0.0.0.0", "SEQSERVE_ADMIN_KEY": ADMIN}, "SEQSERVE_API_KEYS"),
        ({"SEQSERVE_HOST": "0.0.0.0", "SEQSERVE_ADMIN": "off"}, "without API keys"),
        ({"SEQSERVE_ADMIN_HOST": "0.0.0.0"}, "admin API would listen on 0.0.0.0 without a key"),
        ({"SEQSERVE_API_KEYS": "short"}, "at least 16 characters"),
        ({"SEQSERVE_API_KEYS": "sha256:abc"}, "64 hex digits"),
        ({"SEQSERVE_ADMIN_KEY_FILE": "/nonexistent/admin-key"}, "cannot read the file"),
    ],
)
def test_refuses_to_start_open_beyond_loopback(repository: Path, env: dict[str, str], message: str) -> None:
    result = _serve(repository, env)
    assert result.returncode != 0
    assert "seqserve:" in result.stderr and message in result.stderr, result.stderr[-2000:]


def test_keys_from_files(repository: Path, tmp_path: Path) -> None:
    keys = tmp_path / "api_keys"
    keys.write_text(f"# one key per line\n{KEY_A}\nsha256:{hashlib.sha256(KEY_B.encode()).hexdigest()}\n")
    admin = tmp_path / "admin_key"
    admin.write_text(ADMIN + "\n")
    env = {"SEQSERVE_API_KEYS_FILE": str(keys), "SEQSERVE_ADMIN_KEY_FILE": str(admin)}
    with ServiceProcess(repository, tmp_path, env).start(timeout=120) as proc:
        for key in (KEY_A, KEY_B):
            assert httpx.get(f"{proc.url}/v1/models", headers=auth(key), timeout=10).status_code == 200
        assert httpx.get(f"{proc.url}/v1/models", timeout=10).status_code == 401
        assert httpx.get(f"{proc.admin_url}/v1/admin/sessions", headers=auth(ADMIN), timeout=10).status_code == 200


def test_eviction_is_410_evicted_and_never_takes_another_keys_session(repository: Path, tmp_path: Path) -> None:
    # No per-key quota (by default it would be a quarter of the store): eviction itself is tested.
    env = {"SEQSERVE_API_KEYS": f"{KEY_A},{KEY_B}", "SEQSERVE_MAX_SESSIONS": "3", "SEQSERVE_MAX_SESSIONS_PER_KEY": "0"}
    with (
        ServiceProcess(repository, tmp_path, env).start(timeout=120) as proc,
        httpx.Client(base_url=proc.url, headers=auth(KEY_A), timeout=30) as a,
        httpx.Client(base_url=proc.url, headers=auth(KEY_B), timeout=30) as b,
    ):
        b_sid = b.post("/v1/models/gru/sessions").json()["session_id"]
        a_old, a_new = (a.post("/v1/models/gru/sessions").json()["session_id"] for _ in range(2))
        a.post(f"/v1/sessions/{a_new}/steps", json=STEP).raise_for_status()  # a_old is A's least recent
        assert a.post("/v1/models/gru/sessions").status_code == 201  # full: evicts A's own LRU
        r = a.post(f"/v1/sessions/{a_old}/steps", json=STEP)
        assert r.status_code == 410, r.text
        assert r.json()["reason"] == "evicted" and r.json()["code"] == "session_evicted"
        assert b.get(f"/v1/sessions/{a_old}").status_code == 404  # not B's business
        assert b.get(f"/v1/sessions/{b_sid}").status_code == 200  # B's session survived
        # B at capacity evicts its own; a key holding nothing in a full store gets 429.
        b.delete(f"/v1/sessions/{b_sid}")
        assert a.post("/v1/models/gru/sessions").status_code == 201  # A now holds all 3
        r = b.post("/v1/models/gru/sessions")
        assert r.status_code == 429 and r.json()["limit"] == "max_sessions", r.text
        assert "max" not in r.json() and "3" not in r.json()["error"]  # nothing about the store's size


def test_grpc_needs_a_valid_key_and_sequences_belong_to_it(server: ServiceProcess) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
    x = np.asarray([[[20.0, 500.0, 12.0]]], np.float32)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    try:
        assert client.is_server_live() and client.is_server_ready()  # health: no key
        for headers in (None, {"x-api-key": "wrong-key-0123456789"}):
            with pytest.raises(InferenceServerException) as refused:
                client.infer("lstm", [tensor], headers=headers)
            assert "UNAUTHENTICATED" in str(refused.value.status()), refused.value
            with pytest.raises(InferenceServerException):
                client.get_model_metadata("lstm", headers=headers)
        for headers in ({"x-api-key": KEY_A}, {"authorization": f"Bearer {KEY_B}"}):
            assert client.infer("lstm", [tensor], headers=headers).as_numpy("output").shape == (1, 1, 2)
        # A sequence started with key A is not key B's sequence 99.
        client.infer("lstm", [tensor], sequence_id=99, sequence_start=True, headers={"x-api-key": KEY_A})
        with pytest.raises(InferenceServerException) as other:
            client.infer("lstm", [tensor], sequence_id=99, headers={"authorization": f"Bearer {KEY_B}"})
        assert "was not started" in str(other.value)
        client.infer("lstm", [tensor], sequence_id=99, sequence_end=True, headers={"x-api-key": KEY_A})
    finally:
        client.close()

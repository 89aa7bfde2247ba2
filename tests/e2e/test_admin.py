"""Hot reload, unload, admin auth and the per-model session limit, on a real server."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from tests.support.models import export_model, make_repository
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

KEY = "test-admin-key-0123"
AUTH = {"X-API-Key": KEY}
STEP = {"inputs": [[20.0, 500.0, 12.0]]}


@pytest.fixture
def repo(tmp_path):
    return make_repository(tmp_path / "repo")


@pytest.fixture
def admin_server(repo, tmp_path):
    env = {"SEQSERVE_ADMIN_KEY": KEY, "SEQSERVE_MAX_SESSIONS_PER_MODEL": "5"}
    with ServiceProcess(repo, tmp_path, env) as proc:
        yield proc


def test_admin_needs_the_key(admin_server):
    with httpx.Client(base_url=admin_server.admin_url) as admin:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            r = admin.post("/v1/admin/reload", headers=headers)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert admin.post("/v1/admin/reload", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        listing = admin.get("/v1/admin/sessions", headers=AUTH).json()
        assert listing == {"sessions": [], "count": 0}


def test_reload_new_version_pins_old_sessions(admin_server, repo):
    with (
        httpx.Client(base_url=admin_server.url, timeout=30) as c,
        httpx.Client(base_url=admin_server.admin_url, timeout=30) as admin,
    ):
        old = c.post("/v1/models/gru/sessions", json={}).json()["session_id"]
        assert c.post(f"/v1/sessions/{old}/steps", json=STEP).json()["version"] == 1
        export_model(repo, "gru", 2, "gru", seed=11)
        (repo / "gru" / "3").mkdir()
        (repo / "gru" / "3" / "model.onnx").write_bytes(b"not an onnx file")  # broken: refused
        report = admin.post("/v1/admin/reload", headers=AUTH).json()
        assert report["loaded"] == ["gru/2"]
        assert "gru/3" in report["failed"] and "gru/3" not in str(c.get("/v1/models/gru").json()["versions"])
        new = c.post("/v1/models/gru/sessions", json={}).json()
        assert new["version"] == 2
        # The old session stays on version 1 and keeps working.
        r = c.post(f"/v1/sessions/{old}/steps", json=STEP)
        assert r.status_code == 200 and r.json()["version"] == 1
        # A broken file is not retried on every reload, only when it changes.
        assert admin.post("/v1/admin/reload", headers=AUTH).json()["failed"] == {}


def test_removed_version_unloads_only_when_unused(admin_server, repo):
    with (
        httpx.Client(base_url=admin_server.url, timeout=30) as c,
        httpx.Client(base_url=admin_server.admin_url, timeout=30) as admin,
    ):
        sid = c.post("/v1/models/lstm/sessions", json={"version": 1}).json()["session_id"]
        shutil.rmtree(repo / "lstm" / "1")
        report = admin.post("/v1/admin/reload", headers=AUTH).json()
        assert report["kept"] == ["lstm/1"] and report["unloaded"] == []
        assert c.post(f"/v1/sessions/{sid}/steps", json=STEP).status_code == 200
        r = admin.post("/v1/admin/models/lstm/versions/1/unload", headers=AUTH)
        assert r.status_code == 409 and r.json()["code"] == "version_in_use"
        assert c.delete(f"/v1/sessions/{sid}").status_code == 204
        report = admin.post("/v1/admin/reload", headers=AUTH).json()
        assert report["unloaded"] == ["lstm/1"]
        assert [v["version"] for v in c.get("/v1/models/lstm").json()["versions"]] == [2]


def test_explicit_unload(admin_server):
    with (
        httpx.Client(base_url=admin_server.url, timeout=30) as c,
        httpx.Client(base_url=admin_server.admin_url, timeout=30) as admin,
    ):
        r = admin.post("/v1/admin/models/lstm/versions/1/unload", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"unloaded": ["lstm/1"]}
        assert c.post("/v1/models/lstm/predict", json={"inputs": [STEP["inputs"]], "version": 1}).status_code == 404
        assert admin.post("/v1/admin/models/lstm/versions/7/unload", headers=AUTH).status_code == 404


def test_sessions_per_model_limit(admin_server):
    with httpx.Client(base_url=admin_server.url, timeout=30) as c:
        ids = [c.post("/v1/models/gru/sessions", json={}).json()["session_id"] for _ in range(5)]
        r = c.post("/v1/models/gru/sessions", json={})
        assert r.status_code == 429 and r.json()["limit"] == "max_sessions_per_model"
        assert c.post(f"/v1/sessions/{ids[0]}/fork").status_code == 429
        assert c.post("/v1/models/lstm/sessions", json={}).status_code == 201  # other models unaffected
        c.delete(f"/v1/sessions/{ids[0]}")
        assert c.post("/v1/models/gru/sessions", json={}).status_code == 201


def test_polling_picks_up_new_versions(repo, tmp_path):
    with ServiceProcess(repo, tmp_path, {"SEQSERVE_RELOAD_INTERVAL_SECONDS": "0.3"}) as proc:
        export_model(repo, "gru", 2, "gru", seed=12)
        deadline = time.monotonic() + 15
        with httpx.Client(base_url=proc.url) as c:
            while time.monotonic() < deadline:
                if c.get("/v1/models/gru").json()["latest"] == 2:
                    break
                time.sleep(0.2)
            assert c.get("/v1/models/gru").json()["latest"] == 2

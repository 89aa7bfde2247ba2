"""CORS is off unless origins are configured; when configured, it covers the hot routes too."""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

ORIGIN = "https://dashboard.example"
STEP = {"inputs": [[20.0, 500.0, 12.0]]}


def _session(c: httpx.Client) -> str:
    return c.post("/v1/models/gru/sessions", json={}).json()["session_id"]


def test_no_cors_by_default(server):
    with httpx.Client(base_url=server.url) as c:
        sid = _session(c)
        r = c.post(f"/v1/sessions/{sid}/steps", json=STEP, headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        pre = c.options(
            f"/v1/sessions/{sid}/steps",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in pre.headers


def test_configured_origins_get_cors_headers_on_every_route(repository, tmp_path):
    env = {"SEQSERVE_CORS_ORIGINS": f'["{ORIGIN}"]'}
    with ServiceProcess(repository, tmp_path, env) as proc, httpx.Client(base_url=proc.url) as c:
        sid = _session(c)
        for path, body in (
            (f"/v1/sessions/{sid}/steps", STEP),
            ("/v1/models/gru/predict", {"inputs": [STEP["inputs"]]}),
        ):
            r = c.post(path, json=body, headers={"Origin": ORIGIN})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
            other = c.post(path, json=body, headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers

"""SEQSERVE_HTTP_PROTOCOL: our coalescing protocol (the default) and uvicorn's own both serve
predictions and session steps over a real socket; the header limit shows which one answered."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

ROW = [20.0, 500.0, 12.0]
HEADER_LIMIT = 4096
PAD = {"x-pad": "a" * (2 * HEADER_LIMIT)}


@pytest.mark.parametrize("mode", ["coalescing", "uvicorn"])
def test_mode_serves_predict_and_steps(repository: Path, tmp_path: Path, mode: str) -> None:
    env = {"SEQSERVE_HTTP_PROTOCOL": mode, "SEQSERVE_MAX_HEADER_BYTES": str(HEADER_LIMIT)}
    with ServiceProcess(repository, tmp_path, env) as proc, httpx.Client(base_url=proc.url, timeout=30) as c:
        predicted = c.post("/v1/models/gru/predict", json={"inputs": [[ROW, ROW]]})
        assert predicted.status_code == 200, predicted.text
        sid = c.post("/v1/models/gru/sessions", json={}).json()["session_id"]
        steps = [c.post(f"/v1/sessions/{sid}/steps", json={"inputs": [ROW]}) for _ in range(2)]
        assert [s.status_code for s in steps] == [200, 200], [s.text for s in steps]
        # A session stepped one row at a time ends where the stateless predict of both rows does.
        assert steps[-1].json()["outputs"][-1] == pytest.approx(predicted.json()["outputs"][0][-1], rel=1e-5)
        padded = c.get("/v2/health/live", headers=PAD)
        if mode == "coalescing":
            assert padded.status_code == 431 and padded.json()["code"] == "headers_too_large"
        else:
            assert padded.status_code == 200  # uvicorn's protocol has no header limit of ours


def test_unknown_mode_is_refused() -> None:
    from pydantic import ValidationError

    from service.core.settings import Settings

    with pytest.raises(ValidationError):
        Settings(http_protocol="h11")  # type: ignore[arg-type]

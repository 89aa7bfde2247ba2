"""The quality gate on a live server: a newer version that training did not promote is loaded
by hot reload but does not become the default; unpinned predictions, new sessions and V2 keep
the previous version until the gate changes (manifest.json edited, picked up by the poll)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.models import export_model, gate
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

X = [[[20.0, 500.0, 12.0], [21.0, 480.0, 13.0]]]
FLAT = [v for row in X[0] for v in row]
V2_INPUT = {"inputs": [{"name": "input", "shape": [1, 2, 3], "datatype": "FP32", "data": FLAT}]}


def until(c: httpx.Client, check: Callable[[dict], bool], what: str) -> dict:
    """The model listing once `check` holds (the server polls the repository)."""
    deadline = time.monotonic() + 20
    while True:
        info = c.get("/v1/models/g").json()
        if check(info):
            return info
        assert time.monotonic() < deadline, f"{what}: {info}"
        time.sleep(0.2)


def served(c: httpx.Client) -> tuple[int, int, int]:
    """(predict, new session, V2 infer) versions for requests that name none."""
    predict = c.post("/v1/models/g/predict", json={"inputs": X})
    session = c.post("/v1/models/g/sessions", json={})
    infer = c.post("/v2/models/g/infer", json=V2_INPUT)
    assert predict.status_code == 200 and session.status_code == 201 and infer.status_code == 200
    return predict.json()["version"], session.json()["version"], int(infer.json()["model_version"])


def test_unpromoted_version_is_not_the_default_until_promoted(tmp_path):
    cell = "gru"
    repo = tmp_path / "repo"
    export_model(repo, "g", 1, cell, seed=1, gate_verdict=gate(True, 1.0, 2.0))
    with (
        ServiceProcess(repo, tmp_path, {"SEQSERVE_RELOAD_INTERVAL_SECONDS": "0.2"}) as proc,
        httpx.Client(base_url=proc.url, timeout=30) as c,
    ):
        assert served(c) == (1, 1, 1)
        export_model(repo, "g", 2, cell, seed=2, gate_verdict=gate(False, 3.0, 2.0))
        info = until(c, lambda i: i["latest"] == 2, "v2 loaded")
        assert info["default"] == 1 and "highest promoted" in info["default_reason"] and "warning" not in info
        v2 = info["versions"][1]
        assert v2["promoted"] is False and v2["gate"]["reason"] == "worse than seasonal naive"
        assert info["versions"][0]["gate"]["promoted"] is True
        assert served(c) == (1, 1, 1)  # the previous version keeps serving by default
        # Asked for by number, the unpromoted version is served.
        assert c.post("/v1/models/g/predict", json={"inputs": X, "version": 2}).json()["version"] == 2
        assert c.post("/v1/models/g/sessions", json={"version": 2}).json()["version"] == 2
        assert c.post("/v2/models/g/versions/2/infer", json=V2_INPUT).json()["model_version"] == "2"
        meta = c.get("/v2/models/g").json()["parameters"]
        assert meta["default_version"] == "1" and meta["promoted"] == {"1": True, "2": False}
        assert meta["gate"]["2"]["best_baseline"] == "seasonal_naive"
        config = c.get("/v2/models/g/versions/2/config").json()["parameters"]
        assert config["seqserve.default_version"] == {"string_value": "1"}
        assert config["seqserve.promoted"] == {"string_value": "false"}
        assert json.loads(config["seqserve.gate"]["string_value"])["reason"] == "worse than seasonal naive"

        # An operator promotes v2 in its manifest: the next poll makes it the default.
        (repo / "g" / "2" / "manifest.json").write_text(json.dumps({"gate": gate(True, 1.5, 2.0)}))
        until(c, lambda i: i["default"] == 2, "v2 promoted")
        assert served(c) == (2, 2, 2)

        # Nothing promoted: the highest version serves, and the listing warns.
        for v in (1, 2):
            (repo / "g" / str(v) / "manifest.json").write_text(json.dumps({"gate": gate(False)}))
        info = until(c, lambda i: "warning" in i, "none promoted")
        assert info["default"] == 2 and "no loaded version passed the quality gate" in info["warning"]
        assert served(c) == (2, 2, 2)
    assert "g/2 is not promoted" in proc.log()

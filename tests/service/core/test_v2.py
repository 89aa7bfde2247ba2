"""Unit tests behind the V2 routes: sessions under a given id (what a V2 sequence is), and the
V2 tensor codec (service/api/codecs.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from service.api import codecs
from service.core import v2 as inference
from service.core.engine import StepRequest
from service.core.errors import BadRequest, NotFound
from service.core.metrics import Metrics
from service.core.services import build_services
from service.core.settings import Settings
from tests.support.models import make_repository


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture
async def services(repository: Path):
    svc = build_services(Settings(model_repository=repository), Metrics(), codecs.STEP_REPLY)
    await svc.store.start()
    yield svc
    await svc.store.close()
    svc.executor.shutdown(wait=True)


async def test_create_with_given_id_replaces_the_old_session(services) -> None:
    manager = services.sessions
    first = await manager.create("gru", session_id="v2:gru:1")
    assert first.session_id == "v2:gru:1"
    body = orjson.loads((await services.engine.step(StepRequest("v2:gru:1", [[20.0, 500.0, 12.0]] * 3))).payload)
    assert body["position"] == 3
    again = await manager.create("gru", 1, session_id="v2:gru:1")  # a restart: back to zero
    assert again.position == 0
    record = await manager.get("v2:gru:1")
    assert record.position == 0 and all(not s.any() for s in record.state)
    assert await services.store.count() == 1
    random = await manager.create("gru")
    assert random.session_id != "v2:gru:1" and len(random.session_id) >= 20


def test_sequence_parameters() -> None:
    assert inference._sequence({}) == (None, False, False)
    assert inference._sequence({"sequence_id": 0}) == (None, False, False)
    assert inference._sequence({"sequence_id": 5, "sequence_start": True}) == ("5", True, False)
    assert inference._sequence({"sequence_id": "abc", "sequence_end": True}) == ("abc", False, True)
    for bad in (
        {"sequence_start": True},
        {"sequence_id": -1},
        {"sequence_id": 2**64},
        {"sequence_id": 1.5},
        {"sequence_id": True},
        {"sequence_id": "x" * 200},
        {"sequence_id": 3, "sequence_end": "yes"},
    ):
        with pytest.raises(BadRequest):
            inference._sequence(bad)


async def test_decode_inputs(services) -> None:
    model = services.registry.get("lstm")
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    spec = {"name": "input", "shape": [1, 2, 3], "datatype": "FP32", "data": x.ravel().tolist()}
    arrays = codecs.decode_inputs([spec], b"", model, 16, 100)
    np.testing.assert_array_equal(arrays["input"], x)
    binary = {**{k: v for k, v in spec.items() if k != "data"}, "parameters": {"binary_data_size": 24}}
    arrays = codecs.decode_inputs([binary], x.tobytes(), model, 16, 100)
    np.testing.assert_array_equal(arrays["input"], x)
    with pytest.raises(BadRequest, match="2 steps; at most 1"):
        codecs.decode_inputs([spec], b"", model, 16, 1)
    with pytest.raises(BadRequest, match="batch 1; at most 0"):
        codecs.decode_inputs([spec], b"", model, 0, 100)
    for value, found in (("NaN", 'a string \\("NaN"\\)'), (None, "null"), (True, "true")):
        bad = {**spec, "data": [value, *spec["data"][1:]]}
        with pytest.raises(BadRequest, match=f"data must hold only numbers \\(FP32\\), found {found}"):
            codecs.decode_inputs([bad], b"", model, 16, 100)
    with pytest.raises(BadRequest, match="no input claims"):
        codecs.decode_inputs([binary], x.tobytes() + b"1234", model, 16, 100)


def test_options_position_timeout_priority() -> None:
    options = inference.parse_options({"sequence_id": 4, "sequence_position": 7, "timeout": 2500, "priority": 0})
    assert options == inference.Options("4", False, False, 7, 0.0025)
    assert inference.parse_options({"timeout": 0}).timeout_s is None  # 0: no timeout, as Triton
    assert inference.parse_options({"sequence_id": "a", "sequence_start": True, "sequence_position": 0}).position == 0
    for bad, words in (
        ({"sequence_position": 3}, "needs a sequence_id"),
        ({"sequence_id": 1, "sequence_position": -1}, "non-negative"),
        ({"sequence_id": 1, "sequence_position": True}, "non-negative"),
        ({"sequence_id": 1, "sequence_start": True, "sequence_position": 2}, "starts at position 0"),
        ({"priority": 1}, "single priority level"),
        ({"priority": "high"}, "single priority level"),
        ({"timeout": -5}, "microseconds"),
        ({"timeout": 1.5}, "microseconds"),
        ({"timeout": 10**13}, "microseconds"),
    ):
        with pytest.raises(BadRequest, match=words):
            inference.parse_options(bad)


def test_grpc_status_of_each_error() -> None:
    import grpc

    from service.core.errors import (
        DeadlineExceeded,
        LimitExceeded,
        ModelNotFound,
        NotReady,
        PositionConflict,
        SessionExists,
        TooManySessions,
    )
    from service.grpc.service import status_of

    code = grpc.StatusCode
    assert status_of(inference.Error("x")) == code.INVALID_ARGUMENT
    assert status_of(LimitExceeded("x")) == code.INVALID_ARGUMENT
    assert status_of(ModelNotFound("x")) == code.NOT_FOUND
    assert status_of(PositionConflict("x")) == code.ABORTED
    assert status_of(SessionExists("x")) == code.ALREADY_EXISTS
    assert status_of(TooManySessions("x")) == code.RESOURCE_EXHAUSTED
    assert status_of(NotReady("x")) == code.UNAVAILABLE
    assert status_of(DeadlineExceeded("x")) == code.DEADLINE_EXCEEDED


def test_statistics_count_requests_and_executions() -> None:
    from service.core.stats import StatsBook

    book = StatsBook()
    stats = book.of("gru", 1)
    assert book.of("gru", 1) is stats
    stats.request(rows=2, ns=500, ok=True)
    stats.request(rows=1, ns=100, ok=False)
    stats.execution(rows=3, ns=300, queued_ns=40, requests=2)
    doc = stats.as_dict()
    assert doc["inference_count"] == 2 and doc["execution_count"] == 1
    assert doc["inference_stats"]["success"] == {"count": 1, "ns": 500}
    assert doc["inference_stats"]["fail"] == {"count": 1, "ns": 100}
    assert doc["inference_stats"]["queue"] == {"count": 2, "ns": 40}
    assert doc["batch_stats"] == [
        {"batch_size": 3, "compute_input": {"count": 0, "ns": 0}, "compute_infer": {"count": 1, "ns": 300},
         "compute_output": {"count": 0, "ns": 0}}
    ]  # fmt: skip


async def test_readiness_is_built_once_for_http_and_grpc(repository: Path, tmp_path: Path) -> None:
    """not_ready(): no model loaded, or (only when configured to gate on it) the session store
    down; None when ready. Both transports answer from it."""
    empty = build_services(Settings(model_repository=tmp_path), Metrics(), codecs.STEP_REPLY)
    assert await inference.not_ready(empty) == "no model is loaded"
    await empty.store.close()
    down = "redis://127.0.0.1:1/0"
    for gate, expected in ((False, None), (True, "session store unavailable")):
        settings = Settings(model_repository=repository, session_store=down, ready_requires_store=gate)
        svc = build_services(settings, Metrics(), codecs.STEP_REPLY)
        assert await inference.not_ready(svc) == expected
        await svc.store.close()
        svc.executor.shutdown(wait=True)


def test_model_metadata_and_readiness_documents(services) -> None:
    registry = services.registry
    meta = inference.model_metadata(registry, "lstm", None)
    assert meta["versions"] == ["1", "2"] and meta["platform"] == inference.PLATFORM
    assert [t["name"] for t in meta["inputs"]] == ["input", "h0", "c0"]
    assert meta["parameters"]["default_version"] == str(registry.default_version("lstm")[0])
    one = inference.model_metadata(registry, "lstm", "1")
    assert one["versions"] == ["1"] and list(one["parameters"]["gate"]) == ["1"]
    assert inference.model_ready(registry, "gru", "1") == {"name": "gru", "version": "1", "ready": True}
    with pytest.raises(NotFound):
        inference.model_ready(registry, "gru", "7")
    assert inference.server_metadata("9.9")["extensions"] == list(inference.EXTENSIONS)

"""A session's state is bound to the exact graph it was created with: when its model version is
replaced by another graph (a rebuilt repository), its steps are refused with 410
model_changed, before anything runs, and healthy sessions stepping at the same time (batched
together) are unaffected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import onnx
import orjson
import pytest

from models.repository import scan_repository
from service.api import codecs
from service.core.engine import StepRequest
from service.core.errors import ModelChanged
from service.core.metrics import Metrics
from service.core.registry import load_model
from service.core.services import build_services
from service.core.settings import Settings
from tests.support.counting import counting_graph, export_counting


@pytest.fixture
async def services(tmp_path: Path):
    export_counting(tmp_path / "repo", "count", 1, width=2)
    svc = build_services(Settings(model_repository=tmp_path / "repo", inline_max_cost=0), Metrics(), codecs.STEP_REPLY)
    await svc.store.start()
    yield svc
    await svc.store.close()
    svc.executor.shutdown(wait=True)


def rebuild(svc, tmp_path: Path, graph: onnx.ModelProto) -> None:
    """Version 1 is now `graph`: written over the file and loaded, as a reload would."""
    path = tmp_path / "repo" / "count" / "1" / "model.onnx"
    onnx.save(graph, str(path))
    (entry,) = scan_repository(tmp_path / "repo")
    svc.registry.register(load_model(entry, svc.settings))


async def step(svc, sid: str, reading: float) -> dict:
    return orjson.loads((await svc.engine.step(StepRequest(sid, [[reading]]))).payload)


@pytest.mark.parametrize("layout", ["other-width", "same-width-other-file"])
async def test_a_session_whose_model_changed_is_refused_and_neighbours_are_not(services, tmp_path, layout) -> None:
    svc = services
    old = (await svc.sessions.create("count")).session_id
    assert (await step(svc, old, 5.0))["outputs"] == [[1.0, 5.0]]
    if layout == "other-width":
        graph = counting_graph(width=3)
    else:
        graph = counting_graph(width=2)
        extra = graph.metadata_props.add()
        extra.key, extra.value = "rebuilt", "yes"  # same layout, another file: other weights in real life
    rebuild(svc, tmp_path, graph)

    fresh = [(await svc.sessions.create("count")).session_id for _ in range(5)]
    results = await asyncio.gather(*(step(svc, sid, 2.0) for sid in fresh), step(svc, old, 2.0), return_exceptions=True)
    refused = results[-1]
    assert isinstance(refused, ModelChanged), refused
    assert refused.status == 410 and refused.code == "model_changed"
    assert refused.details["model"] == "count" and refused.details["version"] == 1
    for result in results[:-1]:
        assert result["outputs"] == [[1.0, 2.0]], result
    streamed = await svc.engine.apply([StepRequest(old, [[1.0]]), StepRequest(old, [[1.0]])])  # a WebSocket batch
    assert all(isinstance(r, ModelChanged) for r in streamed), streamed
    assert (await svc.sessions.get(old)).position == 1  # nothing was applied


async def test_an_older_record_without_fingerprint_is_checked_by_its_state_layout(services, tmp_path) -> None:
    svc = services
    record = await svc.sessions.create("count")
    entry = svc.store._entries[record.session_id]
    entry.fingerprint = ""  # written before sessions carried fingerprints
    await step(svc, record.session_id, 1.0)  # same layout: fine
    rebuild(svc, tmp_path, counting_graph(width=3))
    with pytest.raises(ModelChanged):
        await step(svc, record.session_id, 1.0)

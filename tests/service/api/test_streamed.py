"""Streamed replies (service/api/streamed.py) are byte for byte the replies encoded whole: for
the generic walk over arrays and lazily built rows, and for every reply that streams (a session
step, a bulk request, a predict, a V2 inference), with quantiles, anomaly rows and forecast
times, and with slices far smaller than the real ones so that every boundary is crossed."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from service.api import codecs, streamed
from service.api.codecs import STEP_REPLY, EntryError, bulk_body, bulk_reply, infer_response
from service.api.models import predict_reply
from service.api.streamed import AsText, Rows, Streamed, chunked, json_body, pieces, whole
from service.core import v2 as inference
from service.core.engine import StepRequest, StepResult
from service.core.errors import InvalidInput, SessionNotFound
from service.core.predict import Predicted
from service.core.registry import LoadedModel, ModelRegistry
from service.core.settings import Settings
from tests.support.quantile_model import export_quantile_model

START = 631_152_000.0  # 1990-01-01T00:00:00Z


@pytest.fixture(autouse=True)
def tiny_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few values per orjson call and small chunks: many slice boundaries in small replies."""
    monkeypatch.setattr(streamed, "SLICE_VALUES", 5)


class Clocked:
    """A loaded model that knows its sampling period (hourly): its forecasts get times."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model

    @property
    def period_seconds(self) -> float:
        return 3600.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    root = tmp_path_factory.mktemp("probe")
    export_quantile_model(root)
    registry = ModelRegistry(Settings(model_repository=root))
    registry.load_all()
    return registry.get("probe")


def models(registry: ModelRegistry, probe: LoadedModel) -> list[Any]:
    plain = registry.get("lstm")
    return [plain, Clocked(plain), probe, Clocked(probe)]


def _result(model: Any, readings: int, rng: np.random.Generator, position: int = 0) -> StepResult:
    outputs = rng.standard_normal((readings, model.output_width)).astype(np.float32)
    if model.anomaly:  # seen, outside_80, outside_95 are flags
        outputs[:, -4:-1] = rng.integers(0, 2, (readings, 3))
        outputs[0, -4] = 0.0
    start = START if isinstance(model, Clocked) else None
    return StepResult("s-1", model, position + readings, outputs, None, start=start, codec=STEP_REPLY)


def joined(body: bytes | Streamed) -> bytes:
    assert isinstance(body, Streamed)
    return body.join()


def test_pieces_are_orjson_of_the_whole_value() -> None:
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((7, 3, 2)).astype(np.float32)
    value = {
        "a": rng.standard_normal((23, 4)).astype(np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "flat": rng.standard_normal(31).astype(np.float32),
        "strided": grid[..., 1],  # not contiguous
        "one": np.float32(1.5),
        "rows": Rows(11, lambda lo, hi: [[f"t{i}", i] for i in range(lo, hi)], 2),
        "none": None,
        "seqs": [rng.standard_normal((n, 2)).astype(np.float32) for n in (1, 9, 4)],
        "nested": {"x": [Rows(3, lambda lo, hi: list(range(lo, hi)))], "y": 'é"\\'},
        "list": [1, "two", None],
    }
    expected = orjson.dumps(whole(value), option=orjson.OPT_SERIALIZE_NUMPY)
    assert b"".join(pieces(value)) == expected
    assert b"".join(chunked(pieces(value), 16)) == expected
    assert all(len(c) < 16 + 200 for c in chunked(pieces(value), 16))
    assert joined(json_body(value, True)) == json_body(value, False) == expected


@pytest.mark.parametrize("readings", [2, 3, 57])
def test_a_streamed_step_reply_is_the_encoded_one(registry: ModelRegistry, probe: LoadedModel, readings: int) -> None:
    rng = np.random.default_rng(readings)
    for model in models(registry, probe):
        result = _result(model, readings, rng, position=5)
        assert STEP_REPLY.streams(result, 1)
        assert joined(STEP_REPLY.body(result, 1)) == result.payload
        assert STEP_REPLY.body(result, 0) == result.payload  # 0: never streamed
        assert STEP_REPLY.body(result, result.outputs.size + 1) == result.payload
        body = orjson.loads(result.payload)
        assert ("forecast_times" in body) is isinstance(model, Clocked)
        assert ("anomaly" in body) is bool(model.anomaly)


def test_a_one_reading_step_is_never_streamed(registry: ModelRegistry) -> None:
    result = _result(registry.get("lstm"), 1, np.random.default_rng(0))
    assert not STEP_REPLY.streams(result, 1) and STEP_REPLY.body(result, 1) == result.payload


def test_a_streamed_bulk_reply_is_the_joined_one(registry: ModelRegistry, probe: LoadedModel) -> None:
    rng = np.random.default_rng(1)
    items: list[StepRequest | EntryError] = []
    outcomes: list[StepResult | Exception] = []
    for n, model in enumerate(models(registry, probe) * 2):
        items.append(StepRequest(f"s-{n}", None))
        outcomes.append(_result(model, 1 + 20 * (n % 3), rng))
    items.insert(2, EntryError("bad", InvalidInput("each entry needs inputs")))
    items.append(StepRequest("gone", None))
    outcomes.append(SessionNotFound("session 'gone' does not exist", session_id="gone"))
    items.append(StepRequest("bug", None))
    outcomes.append(RuntimeError("a bug"))
    whole_body = bulk_body(items, outcomes)
    assert bulk_reply(items, outcomes, 0) == whole_body
    big = sum(o.outputs.size for o in outcomes if isinstance(o, StepResult))
    assert bulk_reply(items, outcomes, big + 1) == whole_body
    streamed_body = joined(bulk_reply(items, outcomes, 30))  # some entries streamed, some whole
    # the bug's 500 carries a fresh request id each time: compare without it
    cut = whole_body.rindex(b'{"session_id":"bug"')
    assert streamed_body[:cut] == whole_body[:cut]
    assert orjson.loads(streamed_body)["results"][-1]["status"] == 500


def test_a_streamed_predict_reply_is_the_encoded_one(registry: ModelRegistry, probe: LoadedModel) -> None:
    rng = np.random.default_rng(2)
    for model in models(registry, probe):
        lengths = (3, 40, 1)
        rows = [rng.standard_normal((n, model.output_width)).astype(np.float32) for n in lengths]
        state = {name: rng.standard_normal((1, 3, 4)).astype(np.float32) for name in model.state_names}
        start = START if isinstance(model, Clocked) else None
        if model.extra_outputs:
            parts = [model.unpack(r) for r in rows]
            quantiles = [q for _, q, _ in parts] if model.quantile_keys else None
            anomaly = [a for _, _, a in parts] if model.anomaly else None
            result = Predicted(model, [o for o, _, _ in parts], state, quantiles, anomaly, start)  # type: ignore[arg-type]
        else:
            result = Predicted(model, rows, state, start=start)
        reply = predict_reply(result)
        expected = json_body(reply, False)
        assert joined(json_body(reply, True)) == expected
        decoded = orjson.loads(expected)
        assert ("forecast_times" in decoded) is isinstance(model, Clocked)
        if isinstance(model, Clocked):
            assert decoded["forecast_times"] == result.times
            assert decoded["forecast_times"][1][0][0] == "1990-01-01T01:00:00Z"


@pytest.mark.parametrize("binary", [False, True])
def test_a_streamed_v2_reply_is_the_encoded_one(registry: ModelRegistry, binary: bool, monkeypatch) -> None:
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 7)
    rng = np.random.default_rng(3)
    model = registry.get("lstm")
    tensors = {
        "output": rng.standard_normal((2, 9, model.output_width)).astype(np.float32),
        "hn": rng.standard_normal((2, 2, 16)).astype(np.float32),
    }
    labels = inference.Labels(START, 3600.0, 3, batch=2, readings=9, first=5)
    for result in (inference.Result(model, tensors, 14), inference.Result(model, tensors, None, labels)):
        wanted = [("output", binary), ("hn", False)]
        whole_body, header = infer_response(result, "r-1", wanted, 0)
        body, streamed_header = infer_response(result, "r-1", wanted, 1)
        assert isinstance(whole_body, bytes) and streamed_header == header
        assert joined(body) == whole_body
        assert isinstance(body, Streamed) and (body.length == len(whole_body)) is binary
        decoded = orjson.loads(whole_body[:header] if binary else whole_body)
        if result.labels is not None:  # the times as one JSON string, as the whole list encodes
            assert decoded["parameters"]["forecast_times"] == orjson.dumps(result.times).decode()
            assert orjson.loads(decoded["parameters"]["forecast_times"])[1][0][0] == "1990-01-01T06:00:00Z"


def test_as_text_is_the_escaped_json_of_its_value() -> None:
    """Quotes and backslashes in the slices are escaped as in the whole string."""
    rows = [[f'"{i}"\\', i] for i in range(30)]
    value = {"t": AsText([Rows(30, lambda lo, hi: rows[lo:hi], 2)])}
    expected = orjson.dumps({"t": orjson.dumps([rows]).decode()})
    assert b"".join(pieces(value)) == orjson.dumps(whole(value)) == expected


def test_after_runs_once_the_body_is_written() -> None:
    calls: list[int] = []
    body = json_body({"a": np.arange(20, dtype=np.float32)}, True, after=lambda: calls.append(1))
    assert calls == []
    joined(body)
    assert calls == [1]
    json_body({"a": 1}, False, after=lambda: calls.append(2))
    assert calls == [1, 2]


def test_a_bulk_body_serialised_in_one_call_is_each_entry_encoded_and_joined(
    registry: ModelRegistry, probe: LoadedModel
) -> None:
    """bulk_body serialises every entry's object in one orjson call: the bytes are each
    entry's own encoding (a step's payload, an error's body) joined by commas, for every kind
    of reply (plain, with forecast times, with quantiles and anomaly rows) and for errors."""
    rng = np.random.default_rng(5)
    items: list[Any] = []
    outcomes: list[Any] = []
    for n, model in enumerate(models(registry, probe)):
        for readings in (1, 3):
            items.append(StepRequest(f"s-{n}-{readings}", None))
            result = _result(model, readings, rng, position=n)
            result.session_id = items[-1].session_id
            outcomes.append(result)
    items.append(EntryError("bad", InvalidInput("each entry needs a session_id string", field="session_id")))
    items.append(StepRequest("gone", None))
    outcomes.append(SessionNotFound("session 'gone' does not exist", session_id="gone"))
    items.append(StepRequest("bug", None))
    outcomes.append(RuntimeError("a bug"))
    body = codecs.bulk_body(items, outcomes)
    results = iter(outcomes)
    each = [codecs._bulk_item(i, None if isinstance(i, EntryError) else next(results)) for i in items]
    assert body == b'{"results":[' + b",".join(each) + b"]}"
    assert each[0] == outcomes[0].payload and orjson.loads(body)["results"][-3]["status"] == 422

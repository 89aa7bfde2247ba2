"""service/core/predict.py without a server: a validated body becomes arrays for the model,
equal-length and ragged batches give what one ONNX Runtime call per sequence gives, and the
final state comes back only when asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from service.api import codecs
from service.core import predict
from service.core.errors import InvalidInput, NotFound
from service.core.metrics import Metrics
from service.core.services import Services, build_services
from service.core.settings import Settings
from tests.support.models import make_repository, raw_inputs


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture
async def services(repository: Path) -> AsyncIterator[Services]:
    svc = build_services(Settings(model_repository=repository), Metrics(), codecs.STEP_REPLY)
    yield svc
    await svc.store.close()
    svc.executor.shutdown(wait=True)


def one_by_one(svc: Services, name: str, sequences: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The witness: each sequence alone through ONNX Runtime from a fresh state."""
    model = svc.registry.get(name)
    outs, finals = [], []
    for seq in sequences:
        out, final = model.run(seq[None].astype(np.float32), model.initial_state(1))
        outs.append(out[0])
        finals.append(final)
    states = [np.concatenate([f[k] for f in finals], axis=1) for k in range(len(model.state_names))]
    return outs, states


@pytest.mark.parametrize("lengths", [(7, 7, 7), (3, 9, 5)], ids=["equal", "ragged"])
async def test_predict_equals_each_sequence_alone(services: Services, lengths: tuple[int, ...]) -> None:
    rng = np.random.default_rng(4)
    sequences = [raw_inputs(rng, n) for n in lengths]
    body = {"inputs": [s.tolist() for s in sequences], "return_state": True}
    request = predict.prepare(services, "lstm", body)
    assert [s.shape for s in request.sequences] == [(n, 3) for n in lengths]
    result = await predict.predict(services, request)
    outs, states = one_by_one(services, "lstm", sequences)
    assert result.model is services.registry.get("lstm")
    for got, want in zip(result.outputs, outs, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert result.state is not None and list(result.state) == ["h", "c"]
    for got, want in zip(result.state.values(), states, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


async def test_state_only_when_asked_and_explicit_state_is_used(services: Services) -> None:
    rng = np.random.default_rng(5)
    x = raw_inputs(rng, 4)
    first = await predict.predict(services, predict.prepare(services, "gru", {"inputs": [x.tolist()]}))
    assert first.state is None
    whole = await predict.predict(
        services, predict.prepare(services, "gru", {"inputs": [np.concatenate([x, x]).tolist()]})
    )
    # two halves: the second from the first's final state equals the whole sequence
    half = await predict.predict(
        services, predict.prepare(services, "gru", {"inputs": [x.tolist()], "return_state": True})
    )
    assert half.state is not None
    state = {k: v.tolist() for k, v in half.state.items()}
    second = await predict.predict(services, predict.prepare(services, "gru", {"inputs": [x.tolist()], "state": state}))
    np.testing.assert_allclose(second.outputs[0], whole.outputs[0][4:], rtol=0, atol=1e-5)


def test_prepare_refuses_what_the_model_cannot_take(services: Services) -> None:
    with pytest.raises(NotFound):
        predict.prepare(services, "nope", {"inputs": [[[1.0, 2.0, 3.0]]]})
    with pytest.raises(InvalidInput):
        predict.prepare(services, "lstm", {"inputs": [[[1.0, 2.0]]]})  # 2 features, not 3
    with pytest.raises(InvalidInput):  # explicit state and a start time: two origins
        body = {"inputs": [[[1.0, 2.0, 3.0]]], "state": {"h": [[0.0] * 16] * 2}, "start_time": "2024-01-01"}
        predict.prepare(services, "gru", body)


def test_model_documents(services: Services) -> None:
    listing = predict.model_list(services.registry)
    assert [m["name"] for m in listing["models"]] == services.registry.names()
    info = predict.model_info(services.registry, "lstm")
    assert info["latest"] == max(services.registry.versions("lstm"))
    assert [v["version"] for v in info["versions"]] == services.registry.versions("lstm")
    assert info["default"] == services.registry.default_version("lstm")[0]


@pytest.fixture(scope="module")
def hourly_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.models import export_forecaster

    root = tmp_path_factory.mktemp("hourly")
    export_forecaster(root, "fc", 1, "lstm", seed=3)  # an hourly clock, horizon 2
    return root


async def test_a_start_time_whose_forecasts_pass_year_9999_is_bad_input(hourly_repository: Path) -> None:
    """9999-12-31T23:00 plus a reading and its leads is year 10000: refused before the model
    runs (naming start_time), at predict and at session creation, not a ValueError after it."""
    svc = build_services(Settings(model_repository=hourly_repository), Metrics(), codecs.STEP_REPLY)
    try:
        for start in ("9999-12-31T23:00:00Z", "9999-12-31T22:00:00Z"):
            with pytest.raises(InvalidInput, match="too late") as caught:
                predict.prepare(svc, "fc", {"inputs": [[[1.0, 0.0]]], "start_time": start})
            assert caught.value.details["field"] == "start_time"
            with pytest.raises(InvalidInput, match="too late"):
                await svc.sessions.create("fc", start_time=start)
        late = {"inputs": [[[1.0, 0.0]] * 23], "start_time": "9999-12-31T00:00:00Z"}
        with pytest.raises(InvalidInput, match="too late"):  # reading 23 at 22:00, its lead 2 at 24:00
            predict.prepare(svc, "fc", late)
        late["inputs"] = [[[1.0, 0.0]] * 5]
        prepared = predict.prepare(svc, "fc", late)  # 5 readings + 2 leads: still year 9999
        done = await predict.predict(svc, prepared)
        assert done.times is not None and done.times[0][-1][-1] == "9999-12-31T06:00:00Z"
        await svc.sessions.create("fc", start_time="9999-12-31T21:00:00Z")  # its first leads: 22:00, 23:00
    finally:
        await svc.store.close()
        svc.executor.shutdown(wait=True)

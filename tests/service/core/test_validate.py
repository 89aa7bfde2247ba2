from __future__ import annotations

import numpy as np
import pytest

from service.core.errors import InvalidInput, LimitExceeded
from service.core.validate import parse_batch, parse_state, parse_steps
from tests.support.models import make_config

CFG = make_config("lstm", layers=2, hidden=4)


def test_parse_steps_gives_float32_contiguous():
    arr = parse_steps([[1, 2, 3], [4.5, 5, 6]], CFG, 10)
    assert arr.dtype == np.float32 and arr.shape == (2, 3) and arr.flags.c_contiguous


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1, 2]], "3 features"),
        ([[1, 2, 3], [1, 2]], "ragged"),
        ([], "non-empty"),
        ([[["a"]]], "numbers"),
        ([[1, 2, None]], "numbers"),
        ([[1, 2, True]], "must hold only numbers, found true"),
        ([[1, 2, None]], "must hold only numbers, found null"),
        ([[1, 2, "NaN"]], r'must hold only numbers, found a string \("NaN"\): JSON has no NaN'),
        ([[1, 2, "3.5"]], r'found a string \("3.5"\): send numbers unquoted'),
        ([[1, 2, "abc"]], r'found a string \("abc"\)$'),
        ([[1e39, 0, 0]], "infinite"),
        ([[float("nan"), 0, 0]], "NaN"),
        ("x", "JSON array"),
    ],
)
def test_parse_steps_rejects(value, message):
    with pytest.raises(InvalidInput, match=message):
        parse_steps(value, CFG, 10)


def test_step_limit():
    with pytest.raises(LimitExceeded) as err:
        parse_steps([[1, 2, 3]] * 11, CFG, 10)
    assert err.value.details["limit"] == "max_steps_per_request"


def test_parse_batch_allows_ragged_sequences_and_limits_batch():
    seqs = parse_batch([[[1, 2, 3]], [[1, 2, 3], [4, 5, 6]]], CFG, max_batch=2, max_steps=10)
    assert [s.shape for s in seqs] == [(1, 3), (2, 3)]
    with pytest.raises(LimitExceeded, match="max_batch_size"):
        parse_batch([[[1, 2, 3]]] * 3, CFG, max_batch=2, max_steps=10)


def test_parse_state_shapes():
    h = np.zeros((2, 4)).tolist()
    state = parse_state({"h": h, "c": h}, CFG, None)
    assert [s.shape for s in state] == [(2, 1, 4), (2, 1, 4)]
    with pytest.raises(InvalidInput, match=r"state\.c is missing"):
        parse_state({"h": h}, CFG, None)
    with pytest.raises(InvalidInput, match="shape"):
        parse_state({"h": h, "c": h}, CFG, 3)


def test_one_feature_is_singular():
    from dataclasses import replace

    from models.config import Normalization

    one = replace(
        CFG, input_size=1, features=("demand",), normalization=Normalization((0.0,), (1.0,), (0.0, 0.0), (1.0, 1.0))
    )
    with pytest.raises(InvalidInput) as err:
        parse_steps([[1.0, 2.0]], one, 10)
    assert str(err.value) == "inputs: each step needs 1 feature ['demand'], got 2"


def test_a_non_number_is_named_in_json_terms_not_numpy_dtype_codes():
    """A client never sees a NumPy dtype code ('U', 'O'): the first offending value is named."""
    for value in ([[1.0, 2.0, "NaN"]], [[1.0, 2.0, 3.0], [1.0, 2.0, "x"]], [[None, 1, 2]], [[{}, 1, 2]]):
        with pytest.raises(InvalidInput) as info:
            parse_steps(value, CFG, 10)
        assert "'U'" not in info.value.message and "found " in info.value.message, info.value.message


@pytest.mark.parametrize("position", [10**30, 1e30, 2**53, -1, float("inf")])
def test_position_out_of_range_is_said_with_the_range(position):
    """WebSocket and bulk steps are checked by the engine: 10**30 arrives as the float 1e+30."""
    from service.core.engine import check_position

    with pytest.raises(InvalidInput) as info:
        check_position(position)
    assert "is out of range: it must be an integer from 0 to 9007199254740991" in info.value.message
    check_position(2**53 - 1)
    for bad in (0.5, "0", True):
        with pytest.raises(InvalidInput, match="must be an integer from 0 to"):
            check_position(bad)


def test_a_body_that_is_not_utf8_is_said_so_in_the_clients_terms():
    import orjson

    from service.core.errors import json_problem

    raw = b"\x00\xff" * 3
    with pytest.raises(orjson.JSONDecodeError) as info:
        orjson.loads(raw)
    said = json_problem(info.value, raw)
    assert said == "it is not UTF-8 text (byte 0xff at offset 1 is not valid UTF-8; JSON must be UTF-8)"
    assert "surrogates" not in said


def test_a_model_forecasting_in_logs_refuses_zero_and_negative_readings_of_its_target():
    """The domain comes from the config: explicit (`positive_target`, written by training) or,
    for an older manifest, derived from its forecaster spec; other columns are not checked."""
    from dataclasses import replace

    from service.core.validate import check_positive

    explicit = replace(CFG, extra={"positive_target": {"index": 1, "name": "orders", "reason": "forecasts in logs"}})
    assert parse_steps([[-1, 2, -3]], explicit, 10).shape == (1, 3)
    with pytest.raises(InvalidInput) as info:
        parse_batch([[[0, 2, 0]], [[1, 2, 3], [1, 0, 3]]], explicit, 8, 10, "elec")
    assert info.value.message == (
        "inputs[1][1][1]: model elec forecasts in logs and accepts only positive values of orders; got 0"
    )
    old = replace(CFG, extra={"forecaster": {"log": False, "transform": "holt_winters_mult", "target_index": 0}})
    with pytest.raises(InvalidInput, match="multiplicative seasons and accepts only positive values of temp; got -5"):
        check_positive(np.array([[[1, 1, 1], [-5, 1, 1]]], np.float32), old, "input")
    plain = replace(CFG, extra={"forecaster": {"log": False, "transform": "holt_winters", "target_index": 0}})
    assert plain.positive_target is None and parse_steps([[0, 0, 0]], plain, 10).shape == (1, 3)

"""Large predict bodies decoded sequence by sequence: the same result as decoding the whole
body, or a refusal (a 4xx naming why; None in the helpers below) instead of decoding it whole."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.split import LazySequences, split_or_refuse
from service.core.errors import ServiceError


def split_array(raw: bytes, key: str, opener: str) -> tuple[dict, list[bytes]] | None:
    """split_or_refuse, a refusal as None."""
    try:
        return split_or_refuse(raw, key, opener)
    except ServiceError:
        return None


def split_inputs(raw: bytes) -> tuple[dict, list[bytes]] | None:
    return split_array(raw, "inputs", "[")


numbers = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False))
sequences = st.lists(st.lists(st.lists(numbers, min_size=1, max_size=3), min_size=1, max_size=4), max_size=4)
extras = st.dictionaries(
    st.sampled_from(["version", "state", "return_state", "note", "in[puts", "x"]),
    st.one_of(st.integers(), st.booleans(), st.text(max_size=8), st.just("inputs"), st.just({"inputs": [[1]]})),
    max_size=3,
)


def _check(raw: bytes) -> None:
    found = split_inputs(raw)
    if found is None:
        return
    whole = orjson.loads(raw)
    rest, pieces = found
    assert [orjson.loads(p) for p in pieces] == whole["inputs"]
    assert list(LazySequences(pieces)) == whole["inputs"] and len(LazySequences(pieces)) == len(pieces)
    whole["inputs"] = []
    assert rest == whole


@settings(max_examples=300, deadline=None)
@given(sequences, extras, st.sampled_from([None, 2]), st.booleans())
def test_split_agrees_with_whole_decoding(inputs, extra, indent, inputs_first):
    body = {"inputs": inputs, **extra} if inputs_first else {**extra, "inputs": inputs}
    raw = json.dumps(body, indent=indent).encode()
    _check(raw)
    if inputs:
        assert split_inputs(raw) is not None  # ordinary bodies are split, escapes in strings or not


def test_doubtful_bodies_are_left_to_the_whole_decoder():
    for raw in [
        b'{"inputs": [[[1]], 5]}',  # a stray value between sequences
        b'{"inputs": [[[1]] [[2]]]}',  # a missing comma
        b'{"inputs": [[[1]],, [[2]]]}',
        b'{"inputs": [{"a": 1}]}',
        b'{"inputs": 5}',
        b'{"inputs": [[[1]]], "inputs": [[[2]]]}',  # duplicate key
        b'{"inputs": [[[1]]], "\\u0069nputs": [[[2]]]}',  # the key again, spelled with an escape
        b'{"inputs": [[[1]]], "note": "\\\\"x"}',  # an even run: the string ends before x
        b"[[[[1]]]]",
        b'{"inputs": [[[1]]}',
    ]:
        assert split_inputs(raw) is None, raw
    assert split_inputs(b'{"inputs": []}') == ({"inputs": []}, [])


def test_escapes_in_strings_are_understood():
    """Escaped quotes, backslash runs and \\u escapes around brackets: split like any other body,
    with the values the whole decoding gives."""
    for raw in [
        b'{"note": "\\"", "inputs": [[[1]]]}',
        b'{"note": "a\\"[b\\\\", "inputs": [[[1]], [[2], [3]]], "x": "]\\\\\\"}"}',
        b'{"\\u0069nputs": [[[9]]], "inputs": [[[1]]]}',  # the escaped spelling first: the last one wins
        b'{"version": 1, "inputs": [[[1.5, -2e3]]], "start_time": "1990-01-01T00:00:00\\u005a"}',
        b'{"note": "\\\\", "inputs": [[[1]]]}',
    ]:
        found = split_inputs(raw)
        assert found is not None, raw
        _check(raw)
        assert [orjson.loads(p) for p in found[1]] == orjson.loads(raw)["inputs"]


entries = st.lists(
    st.fixed_dictionaries(
        {"session_id": st.text("abc-", min_size=1, max_size=6), "inputs": sequences.map(lambda s: s[0] if s else [])},
        optional={"position": st.integers(0, 9), "note": st.just({"steps": [{"x": 1}]})},
    ),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(entries, extras, st.sampled_from([None, 2]))
def test_bulk_entries_split_agrees_with_whole_decoding(steps, extra, indent):
    """The bulk body's `steps`, split entry by entry (objects, nested arrays inside each)."""
    raw = json.dumps({**extra, "steps": steps}, indent=indent).encode()
    found = split_array(raw, "steps", "{")
    assert found is not None  # every such body is split, escapes (in the extras' text) or not
    rest, pieces = found
    assert [orjson.loads(p) for p in pieces] == steps
    assert rest == {**extra, "steps": []}


def test_bulk_bodies_in_doubt_are_left_to_the_whole_decoder():
    for raw in [
        b'{"steps": [{"session_id": "a"}, [1]]}',  # an array among the entries
        b'{"steps": [{"session_id": "a"}, 5]}',
        b'{"steps": [{"session_id": "a"} {"session_id": "b"}]}',
        b'{"steps": {"session_id": "a"}}',
        b'{"steps": [{"session_id": "a"}], "st\\u0065ps": []}',  # the key again, spelled with an escape
    ]:
        assert split_array(raw, "steps", "{") is None, raw
    raw = b'{"steps": [{"session_id": "a\\"}b"}, {"session_id": "\\u0061[", "inputs": [[1]]}]}'
    found = split_array(raw, "steps", "{")
    assert found is not None and [orjson.loads(p) for p in found[1]] == orjson.loads(raw)["steps"]


def test_a_large_body_the_scan_cannot_split_is_refused_naming_why() -> None:
    """split_or_refuse: a body the scan cannot split is a 4xx that says what is wrong, found
    without decoding the body whole."""
    import pytest

    from service.api.split import decode_element
    from service.core.errors import InvalidInput, MalformedJSON

    cases = [
        (b'{"inputs": [[[1]], 5]}', InvalidInput, "separated by single commas"),
        (b'{"inputs": [[[1]] [[2]]]}', InvalidInput, "separated by single commas"),
        (b'{"inputs": [{"a": 1}]}', InvalidInput, r"must be a JSON array \(a sequence\)"),
        (b'{"inputs": 5}', InvalidInput, "inputs must be a JSON array"),
        (b'{"inputs": [[[1]]], "inputs": [[[2]]]}', InvalidInput, "more than once"),
        (b'{"inputs": [[[1]]], "\\u0069nputs": [[[2]]]}', InvalidInput, "more than once"),
        (b'{"version": 1}', InvalidInput, "inputs is required"),
        (b"[[[[1]]]]", InvalidInput, "must be a JSON object"),
        (b'{"inputs": [[[1]]}', MalformedJSON, "not valid JSON"),
        (b'{"inputs": [[[1]]', MalformedJSON, "never closed"),
        (b'{"inputs": [[[1]]], "version": }', MalformedJSON, "not valid JSON outside inputs"),
    ]
    for raw, error, words in cases:
        with pytest.raises(error, match=words):
            split_or_refuse(raw, "inputs", "[")
    rest, pieces = split_or_refuse(b'{"inputs": [[[1]], [[2, 3]]], "version": 2}', "inputs", "[")
    assert rest == {"inputs": [], "version": 2} and pieces == [b"[[1]]", b"[[2, 3]]"]
    with pytest.raises(MalformedJSON, match=r"inputs\[1\] is not valid JSON"):
        list(LazySequences([b"[[1]]", b"[[1,]]"]))
    with pytest.raises(MalformedJSON, match=r"steps\[4\] is not valid JSON"):
        decode_element(b'{"session_id": }', "steps", 4)
    with pytest.raises(InvalidInput, match="must be a JSON object \\(an entry\\)"):
        split_or_refuse(b'{"steps": [{"session_id": "a"}, [1]]}', "steps", "{")


def test_error_messages_quote_a_bounded_slice_of_the_body() -> None:
    import pytest

    from service.api.split import split_or_refuse
    from service.core.errors import MalformedJSON

    raw = b'{"inputs": [[[1]]], "note": "' + b"x" * 100_000 + b'\\q"}'  # an invalid escape far in
    with pytest.raises(MalformedJSON) as caught:
        split_or_refuse(raw, "inputs", "[")
    assert len(caught.value.message) < 300

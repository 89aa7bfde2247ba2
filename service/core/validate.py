"""Turning client JSON into the arrays a model takes, and checking them, with numpy.

Validation is done on whole arrays, not per float in Python: one np.asarray call converts
and shape-checks a request, and the error names what is wrong (ragged rows, wrong feature
count, non-finite values) in the client's terms.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from models.config import ModelConfig
from models.times import FIRST, LAST, TimeFormatError, TimeRangeError, check_forecastable, parse_time
from service.core.errors import InvalidInput, LimitExceeded, PayloadTooLarge, ServiceError

F32_MAX = float(np.finfo(np.float32).max)
# A session's position is kept exactly by every store (Redis scripts count in doubles): an
# integer from 0 to 2**53 - 1. A JSON integer beyond the 64-bit range reaches us as a float.
MAX_POSITION = 2**53 - 1


def as_array(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, list):
        raise InvalidInput(f"{what} must be a JSON array of numbers", field=what)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise InvalidInput(f"{what} is ragged: every row must have the same length", field=what) from None
    if array.dtype.kind not in "fiu" or holds_bool(value, array.ndim):
        raise InvalidInput(f"{what} must hold only numbers, found {first_non_number(value, array.ndim)}", field=what)
    # Range-check before the cast (float32 overflow would turn into inf with a warning);
    # cheaper than a np.errstate context on every request.
    if array.dtype.kind == "f" and array.size and not (np.isfinite(array).all() and np.abs(array).max() <= F32_MAX):
        raise InvalidInput(f"{what} holds NaN, infinite or out-of-range values", field=what)
    return array.astype(np.float32)


def first_non_number(value: list[Any], depth: int) -> str:
    """The first value of a (shape-checked) nested list that is not a number, described in JSON
    terms: 'a string ("NaN")', 'null', 'true'. Only on the error path."""
    flat: Any = value
    for _ in range(max(depth, 1) - 1):
        flat = chain.from_iterable(flat)
    for item in flat:
        if isinstance(item, bool) or item is None:
            return {None: "null", True: "true", False: "false"}[item]
        if isinstance(item, str):
            quoted = item if len(item) <= 40 else item[:37] + "..."
            try:
                number = float(item)
            except ValueError:
                return f'a string ("{quoted}")'
            if number != number or number in (float("inf"), float("-inf")):
                return f'a string ("{quoted}"): JSON has no NaN or infinity, and a reading must be a finite number'
            return f'a string ("{quoted}"): send numbers unquoted'
        if isinstance(item, list):
            return "an array nested deeper than the expected shape"
        if isinstance(item, dict):
            return "an object"
        if not isinstance(item, int | float):
            return f"a {type(item).__name__}"
    return "a value that is not a number"


def holds_bool(value: list[Any], depth: int) -> bool:
    """numpy reads true/false as 1/0 when mixed with numbers; JSON booleans are not readings.
    One C-level pass over the (already shape-checked) nested lists, ~30 ns per value."""
    flat: Any = value
    for _ in range(depth - 1):
        flat = chain.from_iterable(flat)
    return bool in set(map(type, flat))


def parse_steps(value: Any, config: ModelConfig, max_steps: int, what: str = "inputs", model: str = "") -> np.ndarray:
    """[time][features] -> float32 [T, F], checked against the model's input domain."""
    if isinstance(value, list) and len(value) > max_steps:
        raise LimitExceeded(
            f"{what} has {len(value)} steps; at most {max_steps} per request (max_steps_per_request)",
            field=what,
            limit="max_steps_per_request",
            max=max_steps,
        )
    array = as_array(value, what)
    if array.ndim != 2 or array.shape[0] == 0:
        raise InvalidInput(
            f"{what} must be a non-empty [time][features] array; got shape {list(array.shape)}",
            field=what,
        )
    check_features(array.shape[1], config, what)
    check_positive(array, config, what, model)
    return np.ascontiguousarray(array)


def check_positive(
    array: np.ndarray, config: ModelConfig, what: str, model: str = "", error: type[ServiceError] = InvalidInput
) -> None:
    """Refuse 0 and negative readings of the target of a model that accepts only positive ones
    (it forecasts in logs or with multiplicative seasons: models/forecast_spec.py
    positive_reason), before anything runs: such a reading would wreck a session's state or
    give forecasts and quantiles that disagree. `array` is [time][features] or
    [batch][time][features]; the message names the first offending element."""
    domain = config.positive_target
    if domain is None or not array.size:
        return
    column = array[..., domain.index]
    if bool((column > 0).all()):
        return
    at = np.unravel_index(int(np.flatnonzero(~(column > 0))[0]), column.shape)
    where = what + "".join(f"[{int(i)}]" for i in at) + f"[{domain.index}]"
    who = f"model {model}" if model else "this model"
    raise error(
        f"{where}: {who} {domain.reason} and accepts only positive values of {domain.name}; got {float(column[at]):g}",
        field=what,
        target=domain.name,
        domain="positive",
    )


def check_reply_size(values: int, limit: int, figures: str) -> None:
    """Refuse (413, before anything runs) a request whose reply would hold more than `limit`
    output values: nothing else bounds batch x steps x outputs, and a small request to a model
    with many outputs (a 48-step horizon) can ask for a reply a hundred times its size."""
    if values > limit:
        raise PayloadTooLarge(
            f"the reply would hold {values:,} output values ({figures}); at most {limit:,} per request "
            "(max_response_values): send fewer sequences or steps per request",
            limit="max_response_values",
            max=limit,
            values=values,
        )


def check_features(count: int, config: ModelConfig, what: str) -> None:
    if count != config.input_size:
        raise InvalidInput(
            f"{what}: each step needs {config.input_size} feature{'' if config.input_size == 1 else 's'} "
            f"{list(config.feature_names)}, got {count}",
            field=what,
            expected=config.input_size,
        )


def parse_batch(value: Any, config: ModelConfig, max_batch: int, max_steps: int, model: str = "") -> list[np.ndarray]:
    """[batch][time][features] -> list of [T_i, F]; sequences may differ in length."""
    if not isinstance(value, list) or not value:
        raise InvalidInput("inputs must be a non-empty [batch][time][features] array", field="inputs")
    if len(value) > max_batch:
        raise LimitExceeded(
            f"inputs has {len(value)} sequences; at most {max_batch} per request (max_batch_size)",
            field="inputs",
            limit="max_batch_size",
            max=max_batch,
        )
    return [parse_steps(seq, config, max_steps, f"inputs[{i}]", model) for i, seq in enumerate(value)]


def parse_state(value: Any, config: ModelConfig, batch: int | None) -> tuple[np.ndarray, ...]:
    """{"h": [rows][width] or [rows][batch][width], ...} -> float32 [rows, B, width] per state
    tensor in graph order (B = 1 for sessions, which take the per-session form)."""
    names = config.state_names
    if not isinstance(value, dict):
        raise InvalidInput(f"state must be an object with keys {list(names)}", field="state")
    unknown = value.keys() - set(names)
    if unknown:
        raise InvalidInput(
            f"state has unknown keys {sorted(unknown)}; this model's state tensors are {list(names)}",
            field="state",
        )
    arrays = []
    for spec in config.state_specs:
        name = spec.name
        if name not in value:
            raise InvalidInput(f"state.{name} is missing; this model needs all of {list(names)}", field="state")
        array = as_array(value[name], f"state.{name}")
        if batch is None:
            expected: tuple[int, ...] = (spec.rows, spec.width)
            if array.shape != expected:
                raise InvalidInput(
                    f"state.{name} must have shape {list(expected)} ([rows][width]), got {list(array.shape)}",
                    field=f"state.{name}",
                    expected=list(expected),
                )
            array = array[:, None, :]
        else:
            expected = (spec.rows, batch, spec.width)
            if array.shape != expected:
                raise InvalidInput(
                    f"state.{name} must have shape {list(expected)} ([rows][batch][width]), got {list(array.shape)}",
                    field=f"state.{name}",
                    expected=list(expected),
                )
        arrays.append(np.ascontiguousarray(array))
    return tuple(arrays)


def parse_start_time(
    value: Any, what: str = "start_time", day_first: bool | None = None, *, any_order: bool = False
) -> float | None:
    """The time of a stream's first reading -> unix seconds (None when not given), in the formats
    training reads a time column in (models/times.py): ISO dates and date-times with or without
    an offset (UTC without), `1949-01`, `2010/01/01 00:00`, quarters (`1990Q1`), years, month
    names (`Jan 1949`, `1 Jan 1949`), day/month/year dates, epoch seconds. `day_first`: the
    order of day/month/year dates the model was trained on (its manifest's `time.day_first`;
    None: unknown, so `01/02/1949` alone is ambiguous). `any_order`: only check the value is a
    time in some order (a request checked before its model is known; the model's order is
    applied once it is). Anything else is refused, naming the field and the formats."""
    if value is None:
        return None
    try:
        seconds = parse_time(value, day_first)
    except TimeFormatError as exc:
        if not any_order:
            raise InvalidInput(f"{what}: {exc}", field=what) from None
        for order in (True, False):
            try:
                parse_time(value, order)
                return None
            except TimeFormatError:
                pass
        raise InvalidInput(f"{what}: {exc}", field=what) from None
    if not FIRST <= seconds <= LAST:  # years 1-9999
        raise InvalidInput(f"{what} {str(value)[:64]!r} is out of range (years 1-9999)", field=what)
    return seconds


def check_start_range(
    start: float | None, period_seconds: float | None, periods: int, what: str = "start_time"
) -> None:
    """Refuse a start time whose last forecast, `periods` periods on (readings - 1 + horizon),
    would be for a time past year 9999: it could not be labelled, so the request is bad input,
    said before the model runs."""
    if start is None or period_seconds is None:
        return
    try:
        check_forecastable(start, periods, period_seconds)
    except TimeRangeError as exc:
        raise InvalidInput(
            f"{what} is too late for this model: {exc} (its forecasts run {periods} periods of "
            f"{period_seconds:g} s on)",
            field=what,
        ) from None


def check_one_origin(state: Any, start_time: Any) -> None:
    """A stream starts either from a given state or fresh (at `start_time`), not both: the
    state already holds the phase the start time would set."""
    if state is not None and start_time is not None:
        raise InvalidInput(
            "give either state (resume a stream) or start_time (start a fresh one), not both",
            field="state",
            fields=["state", "start_time"],
        )

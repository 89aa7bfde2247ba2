from __future__ import annotations

import pytest

from models.config import Clock, ConfigError, ModelConfig, Normalization
from models.times import parse_time


def test_json_round_trip():
    cfg = ModelConfig(
        cell="gru",
        input_size=2,
        hidden_size=8,
        output_size=3,
        num_layers=2,
        head="classification",
        features=("u", "v"),
        outputs=("a", "b", "c"),
        normalization=Normalization((0.0, 1.0), (1.0, 2.0)),
        extra={"window": 24},
    )
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.state_names == ("h",)
    assert ModelConfig(cell="lstm", input_size=1, hidden_size=4, output_size=1).state_names == ("h", "c")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "rnn"}, "cell"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"features": ("a", "b")}, "feature names"),
        ({"dropout": 1.5}, "dropout"),
        ({"normalization": Normalization((0.0,), (0.0,))}, "positive"),
    ],
)
def test_invalid_configs_are_refused(kwargs, message):
    base = {"cell": "lstm", "input_size": 1, "hidden_size": 4, "output_size": 1}
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{**base, **kwargs})


def test_unknown_fields_are_refused():
    with pytest.raises(ConfigError, match="unknown"):
        ModelConfig.from_dict({"cell": "lstm", "input_size": 1, "hidden_size": 4, "output_size": 1, "x": 1})


def test_a_monthly_clock_gives_every_day_of_a_month_that_months_phase() -> None:
    """Month-start training (first row 1949-01-01): 1950-01-31 is January, not February; a
    month-end model (first row 1949-01-31): 1949-01 and 1949-01-31 agree, 1949-02-01 is next."""
    month = 2_629_746.0
    start = Clock("phase", month, parse_time("1949-01-01") - month / 2, 12)
    assert start.phase(parse_time("1950-01-31")) == start.phase(parse_time("1950-01")) == 0.0
    assert start.phase(parse_time("1950-02-01")) == 1.0
    assert start.phase(parse_time("2149-12-31T23:59:59Z")) == 11.0  # centuries on, still the calendar
    end = Clock("phase", month, parse_time("1949-01-31") - month / 2, 12)
    assert end.phase(parse_time("1949-01")) == end.phase(parse_time("1949-01-31")) == 0.0
    assert end.phase(parse_time("1949-02-01")) == end.phase(parse_time("1949-02-28")) == 1.0
    quarter = Clock("phase", 3 * month, parse_time("1990-03-31") - 1.5 * month, 4)
    assert quarter.phase(parse_time("1990Q1")) == 0.0 and quarter.phase(parse_time("1990-04-01")) == 1.0
    hourly = Clock("phase", 3600.0, parse_time("2014-01-01") - 1800.0, 24)
    assert hourly.phase(parse_time("2014-01-02T05:00:00Z")) == 5.0

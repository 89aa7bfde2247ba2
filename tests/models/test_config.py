from __future__ import annotations

import pytest

from models.config import ConfigError, ModelConfig, Normalization


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

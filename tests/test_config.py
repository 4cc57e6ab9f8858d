"""Config overrides: parsing to declared types, strict keys and limits."""

from __future__ import annotations

import pytest

from kexp import registry
from kexp.config import apply_overrides, flatten, from_dict, to_dict
from kexp.errors import ConfigError


@pytest.fixture(scope="module")
def sine_config():
    return registry.load("lstm_sine").CONFIG


def test_overrides_parse_to_declared_types(sine_config):
    cfg = apply_overrides(
        sine_config,
        [
            "train.epochs=5",
            "train.learning_rate=2e-3",
            "train.deterministic=true",
            "model.cell=gru",
            "data.train_range=10,150",
            "data.function=sin_x_pow",
        ],
    )
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.train.learning_rate == pytest.approx(2e-3)
    assert cfg.train.deterministic is True
    assert cfg.model.cell == "gru"
    assert cfg.data.train_range == (10.0, 150.0)
    assert cfg.data.function == "sin_x_pow"
    # The default is untouched: configs are immutable.
    assert sine_config.train.epochs == 30


def test_flatten_lists_every_key(sine_config):
    flat = flatten(sine_config)
    assert flat["train.epochs"] == 30
    assert flat["data.feature_length"] == 32
    assert "eval.horizon" in flat


def test_round_trip_through_json_dict(sine_config):
    cfg = apply_overrides(sine_config, ["model.units=16", "data.val_range=100,150"])
    assert from_dict(sine_config, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=5", "unknown key 'train.epoch'; valid keys of train: epochs, batch_size"),
        ("trian.epochs=5", "unknown section 'trian' in --set 'trian.epochs=5'; valid sections: data, model, train, eval"),
        ("train.epochs", "--set 'train.epochs': expected key=value"),
        ("epochs=5", "key must be section.name"),
        ("train.epochs=five", "train.epochs: received 'five'; allowed: an integer"),
        ("train.epochs=2.5", "train.epochs: received '2.5'; allowed: an integer"),
        ("train.epochs=0", "train.epochs: received 0; allowed: a value >= 1"),
        ("train.batch_size=-3", "train.batch_size: received -3; allowed: a value >= 1"),
        ("train.learning_rate=0", "train.learning_rate: received 0.0; allowed: a value > 0"),
        ("train.learning_rate=nan", "train.learning_rate: received 'nan'; allowed: a finite number"),
        ("train.deterministic=maybe", "train.deterministic: received 'maybe'; allowed: true or false"),
        ("train.optimizer=adagrad", "train.optimizer: received 'adagrad'; allowed: one of adam, sgd"),
        ("data.feature_length=7", "data.feature_length: received 7; allowed: an even integer >= 2"),
        ("data.train_range=5", "data.train_range: received '5'; allowed: 2 comma-separated float values"),
        ("data.train_range=100,0", "data.train_range: received 100.0,0.0; allowed: lo < hi"),
    ],
)
def test_bad_overrides_name_key_value_and_allowed(sine_config, override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(sine_config, [override])
    text = str(info.value)
    assert message in text
    assert "\n" not in text

"""Config overrides: parsing to declared types, strict keys and limits."""

from __future__ import annotations

import re

import pytest

from kexp import registry
from kexp.config import apply_overrides, from_dict, to_dict
from kexp.config_values import shown
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


def test_round_trip_through_json_dict(sine_config):
    cfg = apply_overrides(sine_config, ["model.units=16", "data.val_range=100,150"])
    assert from_dict(sine_config, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=5", "unknown key 'train.epoch'; did you mean train.epochs? valid keys of train: epochs, batch_size"),
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
        # Upper bounds: an int64 step counter, memory, 32-bit NumPy seeding.
        ("train.epochs=10000000000000000000", "train.epochs: received 10000000000000000000; "
                                              "allowed: a value >= 1 and <= 1000000"),
        ("train.batch_size=16777217", "train.batch_size: received 16777217; allowed: a value >= 1 and <= 16777216"),
        ("train.steps_per_execution=100001", "train.steps_per_execution: received 100001; "
                                             "allowed: a value >= 0 and <= 100000"),
        ("train.shuffle_buffer=10000001", "train.shuffle_buffer: received 10000001; "
                                          "allowed: a value >= 1 and <= 10000000"),
        ("train.seed=4294967296", "train.seed: received 4294967296; allowed: a value >= 0 and <= 4294967295"),
        ("train.seed=-1", "train.seed: received -1; allowed: a value >= 0 and <= 4294967295"),
        # Echoed values are cut to 80 characters.
        ("train.epochs=" + "9" * 4000, "train.epochs: received " + "9" * 77 + "...; allowed: a value >= 1"),
        ("train.epochs=" + "9" * 5000, "train.epochs: received '" + "9" * 76 + "...; allowed: an integer"),
        ("train.learning_rate=" + "x" * 10_000, "train.learning_rate: received '" + "x" * 76 + "...; allowed: a number"),
        ("train.deterministic=" + "x" * 10_000, "train.deterministic: received '" + "x" * 76 + "...; allowed: true"),
        ("train.optimizer=" + "x" * 10_000, "train.optimizer: received '" + "x" * 76 + "...; allowed: one of adam"),
        ("data.train_range=" + "1," * 5000, "data.train_range: received '1,1,1,"),
        ("train." + "x" * 10_000 + "=1", "unknown key 'train.xxxx"),
        ("x" * 10_000 + ".epochs=1", "unknown section 'xxxx"),
        ("x" * 10_000, "--set 'xxxx"),
        # Sizes an experiment's data may ask for.
        ("data.train_range=0,1e12", "data.train_range: received 0.0,1000000000000.0; allowed: at most 10,000,000 "
                                    "samples per range ((hi - lo) / data.interval = 1e+13 at interval 0.1)"),
        ("data.interval=1e-6", "data.train_range: received 0.0,100.0; allowed: at most 10,000,000 samples per range"),
        ("data.train_range=0,100000", "data.train_range: received 0.0,100000.0; allowed: at most 100,000,000 "
                                      "windowed values"),
        ("eval.horizon=1e12", "eval.horizon: received 1000000000000.0; allowed: at most 1,000,000 rollout samples"),
        ("data.feature_length=" + "2" * 400, "data.feature_length: received 2222"),
        ("model.units=" + "9" * 30, "model.units: received 999999999999999999999999999999; allowed: a value >= 1"),
        ("train.epochs=2_0", "train.epochs: received '2_0'; allowed: an integer"),
        ("train.epochs=\u0663", "train.epochs: received '\u0663'; allowed: an integer"),
        ("train.learning_rate=1_0", "train.learning_rate: received '1_0'; allowed: a number"),
    ],
)
def test_bad_overrides_name_key_value_and_allowed(sine_config, override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(sine_config, [override])
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert len(text) < 300, text[:400]


def test_large_but_real_sizes_are_allowed(sine_config):
    cfg = apply_overrides(sine_config, ["data.train_range=0,10000", "data.stride=4", "train.epochs=1000000",
                                        "train.batch_size=16777216", "train.seed=4294967295"])
    assert cfg.data.train_range == (0.0, 10000.0) and cfg.train.seed == 2**32 - 1


@pytest.mark.parametrize(
    "name, override, message",
    [
        ("heart_mlp", "data.grid=5000", "data.grid: received 5000; allowed: a value >= 20 and <= 4096"),
        ("heart_mlp", "data.num_train=" + "9" * 20, "data.num_train: received 99999999999999999999; allowed"),
        ("heart_mlp", "data.box=1e300", "data.box: received 1e+300; allowed: a value > 1.52 and <= 1000"),
        ("heart_mlp", "model.hidden=64,1000000", "model.hidden: received '64,1000000'; allowed: a value >= 1"),
        ("gan_gaussian_1d", "data.num_samples=100000000", "data.num_samples: received 100000000; allowed"),
        ("gan_gaussian_1d", "data.mu=1e300", "data.mu: received 1e+300; allowed"),
        ("gan_gaussian_1d", "model.d_steps=1000000", "model.d_steps: received 1000000; allowed"),
        ("xor", "data.repeats=1000000000", "data.repeats: received 1000000000; allowed: a value >= 1 and <= 1000000"),
        ("xor", "model.hidden=1000000000", "model.hidden: received 1000000000; allowed"),
        ("mlp", "data.image_size=100000", "data.image_size: received 100000; allowed: a value >= 0 and <= 1024"),
        ("mlp", "model.hidden=1000000000", "model.hidden: received 1000000000; allowed"),
        ("dcgan_digits", "model.num_samples=1000000000", "model.num_samples: received 1000000000; allowed"),
        ("dcgan_digits", "model.g_filters=100000", "model.g_filters: received 100000; allowed"),
    ],
)
def test_experiment_size_keys_are_bounded(name, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_overrides(registry.load(name).CONFIG, [override])


@pytest.mark.parametrize(
    "data, message",
    [
        ("abc", "config: received 'abc'; allowed: a JSON object of sections"),
        ([1, 2], "config: received [1, 2]; allowed: a JSON object of sections"),
        ({"train": "abc"}, "train: received 'abc'; allowed: a JSON object of key: value"),
        ({"train": [1]}, "train: received [1]; allowed: a JSON object of key: value"),
        ({"train": {"epochs": {"a": 1}}}, "train.epochs: received {'a': 1}; allowed: a string, number, true/false"),
        ({"train": {"epochs": None}}, "train.epochs: received None; allowed"),
        ({"data": {"train_range": [0, [1]]}}, "data.train_range: received [0, [1]]; allowed"),
        ({"train": {"epochs": "x" * 10_000}}, "train.epochs: received '" + "x" * 76 + "...; allowed: an integer"),
        ({"x" * 10_000: 1}, "'xxxx"),
        ({"train": {"seed": 2**32}}, "train.seed: received 4294967296; allowed: a value >= 0 and <= 4294967295"),
    ],
)
def test_from_dict_of_the_wrong_shape_is_a_config_error(sine_config, data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(sine_config, data)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and len(text) < 300, text[:400]


def test_shown_cuts_long_values_to_80_characters():
    assert shown("abc") == "'abc'"
    assert shown("x" * 1000) == "'" + "x" * 76 + "..."
    assert len(shown(list(range(10_000)))) == 80
    assert shown(10 ** 5000) == "<an integer of 16610 bits>"  # past Python's int-to-str limit


def test_a_custom_section_from_a_config_subclass_takes_overrides_and_round_trips():
    import dataclasses

    from kexp import ExperimentConfig, TrainConfig, param
    from kexp.config import apply_overrides, from_dict, to_dict

    @dataclasses.dataclass(frozen=True)
    class Noise:
        sigma: float = param(0.1, ge=0, le=10, help="noise added to the targets")

    @dataclasses.dataclass(frozen=True)
    class MyConfig(ExperimentConfig):
        noise: Noise = dataclasses.field(default_factory=Noise)

    config = apply_overrides(MyConfig(data=None, model=None, train=TrainConfig(epochs=5)), ["noise.sigma=0.3"])
    assert config.noise.sigma == 0.3
    assert from_dict(MyConfig(data=None, model=None), to_dict(config)) == config
    with pytest.raises(ConfigError, match="noise.sigma: received 11.0; allowed: a value >= 0 and <= 10"):
        apply_overrides(config, ["noise.sigma=11"])


@pytest.mark.parametrize("changes, message", [
    ({"epochs": -1}, "train.epochs: received -1; allowed: a value >= 1"),
    ({"epochs": True}, "train.epochs: received True (bool); allowed: an integer"),
    ({"optimizer": "bogus"}, "train.optimizer: received 'bogus'; allowed: one of adam"),
    ({"batch_size": 0}, "train.batch_size: received 0; allowed: a value >= 1"),
    ({"steps_per_execution": -2}, "train.steps_per_execution: received -2; allowed: a value >= 0"),
    ({"learning_rate": "0.1"}, "train.learning_rate: received '0.1' (str); allowed: a finite number"),
])
def test_settings_made_in_python_are_checked_like_set_values(changes, message, tmp_path):
    import dataclasses

    import kexp
    from kexp import TrainConfig

    with pytest.raises(ConfigError) as info:
        with kexp.open_run("py", logdir=tmp_path, train=dataclasses.replace(TrainConfig(), **changes)):
            pass
    assert str(info.value).startswith(message)
    assert list(tmp_path.iterdir()) == []  # refused before any folder

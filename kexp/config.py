"""Typed experiment configs and strict `--set key=value` overrides.

A config is a tree of frozen dataclasses: one `ExperimentConfig` whose fields
(`data`, `model`, `train`, ...) are section dataclasses. Fields declare their
limits with `param(...)`, so parsing and validation need no per-experiment code:

    >>> cfg = ExperimentConfig(data=SomeData(), model=SomeModel(), train=TrainConfig())
    >>> cfg = apply_overrides(cfg, ["train.epochs=5", "model.units=128"])

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from typing import Any, Iterable, Mapping, Sequence

from kexp.config_values import allowed, key_name, of_type, parse_value, shown, type_name, within
from kexp.errors import ConfigError

_MISSING = dataclasses.MISSING


def param(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    help: str = "",
    none_ok: bool = False,
) -> Any:
    """Declares a config field with its default, limits and help text.

    Args:
        default: Default value; its declared annotation gives the parse type.
        ge: Inclusive lower bound (numbers; for tuples, every element).
        gt: Exclusive lower bound.
        le: Inclusive upper bound.
        lt: Exclusive upper bound.
        choices: The allowed values (strings usually).
        help: One line shown by `kexp show`.
        none_ok: None is allowed too (set in Python; `--set` gives a value).

    Returns:
        A `dataclasses.field` carrying the limits in its metadata.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "help": help, "none_ok": none_ok}
    if isinstance(default, (list, dict, set)):
        raise TypeError(f"param default must be immutable; received {default!r}")
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings every experiment's training shares; read by the harness."""

    # Upper bounds keep every count inside an int64 step counter and the
    # machine's memory, so an absurd value fails here, not inside TensorFlow.
    epochs: int = param(10, ge=1, le=1_000_000, help="passes over the training data")
    batch_size: int = param(32, ge=1, le=2**24, help="per-replica batch; global = this x replicas")
    learning_rate: float = param(1e-3, gt=0, help="optimizer step size")
    optimizer: str = param("adam", choices=("adam", "sgd", "momentum", "rmsprop", "adamw"))
    lr_schedule: str = param("constant", choices=("constant", "cosine"),
                             help="cosine decays the learning rate to 0 over all training steps")
    # NumPy's legacy seeding (keras.utils.set_random_seed) takes 32 bits.
    seed: int = param(0, ge=0, le=2**32 - 1, none_ok=True,
                      help="seeds Python, NumPy, TensorFlow and data shuffling (None, in Python: seed nothing)")
    deterministic: bool = param(False, help="enable TensorFlow op determinism (slower)")
    steps_per_execution: int = param(
        0, ge=0, le=100_000, help="batches per compiled call; 0 picks one from the epoch length"
    )
    jit_compile: str = param(
        "auto", choices=("auto", "true", "false"),
        help="XLA; auto: on CPU, on for dense-only nets of >= 50k parameters and for LSTM/GRU nets (no Embedding or "
        "Masking, no padded or streamed batches) in fits of >= 1,000 steps, of Keras' own layers and functions only; "
        "Keras' choice on GPU; results.json fits.FIT.jit_compile_set_by says why",
    )
    fuse_steps: bool = param(
        True, help="run a compiled call's batches in one loop inside it (Keras' own train_step or one declared "
        "fusable, e.g. kexp's GAN; one replica; data of fixed shapes)",
    )
    precision: str = param(
        "global", choices=("global", "auto", "float32", "mixed_float16", "mixed_bfloat16"),
        help="Keras dtype policy while the run builds and trains models (mixed_float16 suits GPUs); global: the "
        "policy in force when the run opens (keras.mixed_precision.set_global_policy; float32 unless set); "
        "auto: mixed_bfloat16 on a CPU with avx512_bf16 or amx_bf16 and no GPU, else float32",
    )
    shuffle: bool = param(True, help="reshuffle training data every epoch")
    shuffle_buffer: int = param(10_000, ge=1, le=10_000_000, help="tf.data shuffle buffer size")
    profile_steps: tuple[int, int] = param(
        (0, 0), ge=0, le=1_000_000,
        help="profile compiled calls START,STOP (from 1) of each fit for TensorBoard's Profile tab; 0,0: off",
    )

    def check(self) -> None:
        """Raises `ConfigError` for a profile range that is not `0,0` or `START,STOP` with 1 <= START <= STOP."""
        start, stop = self.profile_steps
        if (start, stop) != (0, 0) and not 1 <= start <= stop:
            raise ConfigError(f"train.profile_steps: received {start},{stop}; allowed: 0,0 (off) or START,STOP "
                              "with 1 <= START <= STOP (compiled calls of a fit, counted from 1)")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The resolved config of one experiment: one dataclass per section.

    Experiments use the sections they need; `eval` is an optional section for
    evaluation settings (rollout horizon, grid sizes, ...). An experiment may
    subclass it with a `check(self) -> None` method, raising `ConfigError`, for
    constraints between sections (e.g. a rollout length in samples, which
    depends on `eval` and `data`); `validate` calls it last.
    """

    data: Any
    model: Any
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: Any = None

    def sections(self) -> dict[str, Any]:
        """Returns the non-empty sections by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


def to_dict(config: Any) -> dict[str, Any]:
    """Returns the config as plain JSON-ready data (tuples become lists, an int in a float field a float)."""
    data = dataclasses.asdict(config)
    _floats_as_declared(config, data)
    return _jsonable(data)


def _floats_as_declared(config: Any, data: dict[str, Any]) -> None:
    """Writes an int given to a float field (`TrainConfig(learning_rate=1)`, as Python allows) as a float.

    A field then has one type in every run's `config.json` and HParams
    session, whatever the value's spelling.
    """
    hints = _field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and isinstance(data.get(f.name), dict):
            _floats_as_declared(value, data[f.name])
        elif isinstance(value, int) and not isinstance(value, bool) and _declares_float(hints.get(f.name)):
            data[f.name] = float(value)


def _field_types(cls: type) -> dict[str, Any]:
    """Returns a dataclass's field types, resolved where Python can (a class defined inside a function may
    name types only its own scope knows: those stay as the annotation's text)."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _declares_float(declared: Any) -> bool:
    if isinstance(declared, str):
        return re.search(r"\bfloat\b", declared) is not None
    return float in (declared, *typing.get_args(declared))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def describe(config: ExperimentConfig) -> list[str]:
    """Returns `key = value  # help` lines for `kexp show`."""
    lines = []
    for section_name, section in config.sections().items():
        lines.append(f"[{section_name}]")
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            written = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
            if isinstance(written, bool):
                written = str(written).lower()
            note = allowed(f) if f.metadata else ""
            text = f.metadata.get("help", "") if f.metadata else ""
            comment = "; ".join(p for p in (text, note) if p)
            lines.append(f"{section_name}.{f.name} = {written}" + (f"  # {comment}" if comment else ""))
    return lines


def apply_overrides(config: ExperimentConfig, overrides: Iterable[str]) -> ExperimentConfig:
    """Applies `section.key=value` strings and validates the result.

    Args:
        config: The experiment's default config.
        overrides: Strings such as `"train.epochs=5"`, applied in order.

    Returns:
        A new, validated config.

    Raises:
        ConfigError: On a malformed override, an unknown section or key, a
            value of the wrong type, or a value outside its limits. The
            message is one line naming the key, the value and what is allowed.
    """
    updates: dict[str, dict[str, Any]] = {}
    sections = config.sections()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {shown(item)}: expected key=value, e.g. train.epochs=5")
        key, raw = (part.strip() for part in item.split("=", 1))
        if key.count(".") != 1:
            raise ConfigError(
                f"--set {shown(item)}: key must be section.name; sections: {', '.join(sections)}"
            )
        section_name, field_name = key.split(".")
        if section_name not in sections:
            raise ConfigError(
                f"unknown section {shown(section_name)} in --set {shown(item)}; "
                f"valid sections: {', '.join(sections)}"
            )
        section = sections[section_name]
        fields = {f.name: f for f in dataclasses.fields(section)}
        if field_name not in fields:
            close = difflib.get_close_matches(field_name, fields, n=1, cutoff=0.6)
            hint = f"did you mean {section_name}.{close[0]}? " if close else ""
            raise ConfigError(
                f"unknown key {shown(key)}; {hint}valid keys of {section_name}: {', '.join(fields)}"
            )
        hints = typing.get_type_hints(type(section))
        value = parse_value(key, raw, hints[field_name])
        updates.setdefault(section_name, {})[field_name] = value
    replaced = {
        name: dataclasses.replace(sections[name], **changes) for name, changes in updates.items()
    }
    new_config = dataclasses.replace(config, **replaced)
    validate(new_config)
    return new_config


def from_dict(config: ExperimentConfig, data: Mapping[str, Any]) -> ExperimentConfig:
    """Rebuilds a config from `to_dict` output, on top of `config`'s types.

    Args:
        config: A config of the same experiment (its defaults give the types).
        data: Nested mapping as written to `config.json`.

    Returns:
        The validated config.

    Raises:
        ConfigError: When `data` is not a mapping of sections to mappings of
            scalars (or lists of scalars), or names keys the experiment does
            not have, or holds values outside their limits.
    """
    # `data` comes from a file anyone may have edited: check its shape before
    # walking it, so a wrong shape is one line, not an AttributeError.
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: received {shown(data)}; allowed: a JSON object of sections")
    overrides = []
    for section_name, values in data.items():
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{key_name(section_name)}: received {shown(values)}; allowed: a JSON object of key: value"
            )
        for key, value in values.items():
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (str, int, float)) for v in items):
                raise ConfigError(
                    f"{key_name(section_name)}.{key_name(key)}: received {shown(value)}; "
                    "allowed: a string, number, true/false or a list of those"
                )
            text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
            overrides.append(f"{section_name}.{key}={text}")
    return apply_overrides(config, overrides)


def validate(config: ExperimentConfig) -> None:
    """Checks every field against its `param` limits, then section checks.

    A section may define `check(self) -> None` raising `ConfigError` for
    constraints between fields (e.g. a range whose start must be below its end),
    and the config itself one for constraints between sections.

    Raises:
        ConfigError: Naming the first key that is out of bounds.
    """
    for section_name, section in config.sections().items():
        hints = typing.get_type_hints(type(section))
        for f in dataclasses.fields(section):
            if not f.metadata:
                continue
            value = getattr(section, f.name)
            if value is None and f.metadata.get("none_ok"):
                continue
            if not of_type(value, hints.get(f.name)):
                # Configs built in Python skip `--set` parsing: check the type here.
                raise ConfigError(f"{section_name}.{f.name}: received {shown(value)} ({type(value).__name__}); "
                                  f"allowed: {type_name(hints.get(f.name))}")
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                if not within(f.metadata, v):
                    written = ",".join(map(str, value)) if isinstance(value, tuple) else value
                    raise ConfigError(
                        f"{section_name}.{f.name}: received {shown(written)}; allowed: {allowed(f)}"
                    )
        check = getattr(section, "check", None)
        if check is not None:
            check()
    check = getattr(config, "check", None)
    if check is not None:
        check()


@dataclasses.dataclass(frozen=True)
class ImageDataConfig:
    """Image classification data, shared by the classifier and DCGAN experiments."""

    name: str = param("digits", choices=("digits", "fashion_mnist", "mnist", "cifar10"),
                      help="digits is bundled (scikit-learn's 1,797 8x8 images, in kexp); the others load "
                           "through tensorflow-datasets")
    data_dir: str = param("", help="tensorflow-datasets folder; empty = TFDS_DATA_DIR or ~/tensorflow_datasets")
    # 1,797 digits in 10 classes: a share outside (9/1797, 1787/1797] leaves a digit out of one side
    # (kexp.data.images); these round bounds lie inside it.
    test_fraction: float = param(0.2, ge=0.0051, le=0.9944,
                                 help="held-out share of digits (seeded, stratified; each side keeps every digit)")
    image_size: int = param(0, ge=0, le=1_024, help="resize images to this side (bilinear); 0 keeps their size")

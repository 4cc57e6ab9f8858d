"""One config value: parsed from `--set` text, checked against its field's type and limits, echoed in messages.

`kexp.config` declares the configs and applies overrides with these; every
message that echoes a value a user gave (a `--set`, a `TF_CONFIG`, a config
file) cuts it with `shown`. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Mapping

from kexp.errors import ConfigError


# How a message names a list of each item type, and an example of one.
_LIST_OF = {int: ("integers", "64,64"), float: ("finite numbers", "0.1,0.2"), str: ("strings", "a,b"),
            bool: ("true/false values", "true,false")}


def ascii_int(raw: str) -> int:
    """Returns the integer `raw` writes in ASCII digits (an optional sign, surrounding spaces allowed).

    `int()` alone also takes `2_0` and other scripts' digits (`٢`), which no
    setting, port or count means. Python refuses more than 4,300 digits with a
    ValueError too.

    Raises:
        ValueError: For anything else.
    """
    if not re.fullmatch(r"[+-]?[0-9]+", raw.strip()):
        raise ValueError(raw)
    return int(raw.strip())


def parse_value(key: str, raw: str, annotation: Any) -> Any:
    """Parses one override string to the field's declared type.

    Args:
        key: Dotted key, used in error messages.
        raw: The string after `=`.
        annotation: The field's type (int, float, bool, str or tuple of those).

    Returns:
        The parsed value.

    Raises:
        ConfigError: When `raw` is not of that type.
    """
    origin = typing.get_origin(annotation)
    if origin is tuple:
        item_types = typing.get_args(annotation)
        item_type = item_types[0]
        text = raw.strip().strip("[]()")
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if len(item_types) != 2 or item_types[1] is not Ellipsis:
            if len(parts) != len(item_types):
                raise ConfigError(
                    f"{key}: received {shown(raw)}; allowed: {len(item_types)} comma-separated "
                    f"{item_type.__name__} values, e.g. {key}={','.join(str(i + 1) for i in range(len(item_types)))}"
                )
        elif not parts:
            raise ConfigError(f"{key}: received {shown(raw)}; allowed: comma-separated {item_type.__name__} values")
        try:
            return tuple(parse_value(key, p, item_type) for p in parts)
        except ConfigError:
            if len(item_types) == 2 and item_types[1] is Ellipsis:
                # One bad item of a list: say what the whole list takes, not what one item is.
                words, example = _LIST_OF.get(item_type, (f"{item_type.__name__} values", "a,b"))
                raise ConfigError(f"{key}: received {shown(raw)}; allowed: {words} separated by commas, "
                                  f"e.g. {key}={example}") from None
            raise
    if annotation is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: received {shown(raw)}; allowed: true or false")
    if annotation is int:
        try:
            return ascii_int(raw)
        except ValueError:
            raise ConfigError(f"{key}: received {shown(raw)}; allowed: an integer") from None
    if annotation is float:
        try:
            if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|nan)", raw.strip().lower()):
                raise ValueError(raw)
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{key}: received {shown(raw)}; allowed: a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}: received {shown(raw)}; allowed: a finite number")
        return value
    if annotation is str:
        return raw.strip()
    raise TypeError(f"{key}: unsupported config type {annotation!r}")


def of_type(value: Any, annotation: Any) -> bool:
    """Returns whether `value` is of a field's declared type (bool is not an int here).

    Args:
        value: The field's value, e.g. one set in Python rather than by `--set`.
        annotation: The field's type (int, float, bool, str or tuple of those; others pass).

    Returns:
        True when the value has that type (a float must also be finite).
    """
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        return isinstance(value, tuple) and all(of_type(v, item) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    return True


def type_name(annotation: Any) -> str:
    """Returns a field type as a message names it, e.g. `an integer`.

    Args:
        annotation: The field's type.

    Returns:
        Words for the type, e.g. `a tuple of int`.
    """
    if typing.get_origin(annotation) is tuple:
        return f"a tuple of {typing.get_args(annotation)[0].__name__}"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(
        annotation, str(annotation))


def shown(value: Any, limit: int = 80) -> str:
    """Returns `repr(value)` cut to `limit` characters, for echoing in a message.

    Every value an error message echoes goes through here, so that a
    100 KB `--set` value gives a short line, not a 100 KB one.

    Args:
        value: Anything a user gave.
        limit: Most characters returned.

    Returns:
        The repr, ending in `...` when cut.
    """
    try:
        text = repr(value)
    except ValueError:
        # An int past Python's 4,300-digit conversion limit has no repr.
        text = f"<an integer of {value.bit_length()} bits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_name(name: Any) -> str:
    """Returns a key name for a message: as is when it is a short identifier, else `shown(name)`.

    Args:
        name: A key read from a file or the environment (any JSON value).

    Returns:
        The name, bare or quoted and cut.
    """
    return name if isinstance(name, str) and name.isidentifier() and len(name) <= 80 else shown(name)


def within(meta: Mapping[str, Any], v: Any) -> bool:
    """Returns whether one value (a tuple's element, for tuples) is within a field's `param` limits.

    Args:
        meta: The field's metadata, as `kexp.config.param` sets it.
        v: The value.

    Returns:
        False when outside `choices` or a bound; bounds apply to numbers only.
    """
    if meta.get("choices") is not None and v not in meta["choices"]:
        return False
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True
    if meta.get("ge") is not None and not v >= meta["ge"]:
        return False
    if meta.get("gt") is not None and not v > meta["gt"]:
        return False
    if meta.get("le") is not None and not v <= meta["le"]:
        return False
    if meta.get("lt") is not None and not v < meta["lt"]:
        return False
    return True


def allowed(f: dataclasses.Field) -> str:
    """Returns a field's limits as a message names them, e.g. `a value >= 1 and <= 100`.

    Args:
        f: A dataclass field declared with `kexp.config.param`.

    Returns:
        The choices or bounds; empty when the field has none.
    """
    meta = f.metadata
    if meta.get("choices") is not None:
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    bounds = []
    for name, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if meta.get(name) is not None:
            bounds.append(f"{sym} {meta[name]}")
    return ("a value " + " and ".join(bounds)) if bounds else ""

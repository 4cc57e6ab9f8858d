"""Internal: `kexp search --space`: what each searched setting may take, checked against the config before anything runs.

    --space train.learning_rate=0.001:0.3:log   a float (or int) range, log-uniform
    --space model.hidden=2:16                   an integer range, uniform (a float key: a float range)
    --space train.optimizer=adam,sgd            a choice (`;` between values that are lists themselves)

A range is for a number setting without `choices`; both its ends must be
values `kexp run --set` accepts (its declared type and limits), the low end
below the high end, and a log range above 0. Each choice must be accepted
too, and no two may mean the same. No TensorFlow is imported here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from kexp.config_values import shown
from kexp.errors import UsageError

MAX_CHOICES = 100


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched setting.

    Attributes:
        key: The dotted config key.
        kind: `int`, `float` (ranges) or `choice`.
        low: A range's low end (None for a choice).
        high: A range's high end.
        log: Whether a range is sampled log-uniformly.
        choices: A choice's values, as `--set` text.
    """

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Returns the dimension as `search.json` and the study record it."""
        return dataclasses.asdict(self)

    def distribution(self) -> Any:
        """Returns the Optuna distribution this dimension samples from."""
        import optuna

        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def setting(self, value: Any) -> str:
        """Returns a sampled value as the `key=value` text `kexp run --set` takes."""
        return f"{self.key}={repr(float(value)) if self.kind == 'float' else value}"


def parse_space(name: str, items: Sequence[str], overrides: Sequence[str]) -> list[Dimension]:
    """Returns the dimensions `--space` items name, each checked against the experiment's config.

    Args:
        name: The experiment.
        items: `--space` strings.
        overrides: The search's `--set` strings (fixed for every trial).

    Raises:
        UsageError: No item, a malformed one, a repeated key or one also
            given with `--set`, a range on a key that is not a number
            without choices, ends `kexp run` would refuse, a low end not
            below the high end, a log range reaching 0, or a choice value
            `kexp run` would refuse (the message is that refusal's).
    """
    from kexp.runner import resolve

    if not items:
        raise UsageError("search: no --space given; allowed: one or more --space section.key=LOW:HIGH[:log] "
                         "or --space section.key=a,b,c")
    resolve(name, overrides)  # a bad --set is named as such
    set_keys = {item.split("=", 1)[0].strip() for item in overrides}
    dimensions: list[Dimension] = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"--space {shown(item)}: expected section.key=LOW:HIGH[:log] or section.key=a,b,c, "
                             "e.g. --space train.learning_rate=0.001:0.3:log")
        key, raw = (part.strip() for part in item.split("=", 1))
        if key in {d.key for d in dimensions}:
            raise UsageError(f"--space {shown(item)}: {key} is already searched; allowed: each key in one --space")
        if key in set_keys:
            raise UsageError(f"--space {shown(item)}: {key} is also given with --set; allowed: one of the two")
        check = _checker(name, overrides, item)
        if ":" in raw and "," not in raw and ";" not in raw:
            dimensions.append(_range(key, raw, item, check))
        else:
            dimensions.append(_choice(key, raw, item, check))
    return dimensions


def _checker(name: str, overrides: Sequence[str], item: str) -> Any:
    """Returns `check(key, text)`: the config `kexp run --set key=text` resolves to, its refusal as this item's."""
    from kexp.runner import resolve

    def check(key: str, text: str | None) -> Any:
        """Resolves `--set key=text` (None: checks the key alone, with its default value)."""
        try:
            if text is None:
                config = resolve(name, overrides)
                section, _, field_name = key.partition(".")
                if field_name and hasattr(getattr(config, section, None), field_name):
                    return config
                text = "0"  # an unknown key: `--set`'s refusal names it and what is valid
            return resolve(name, [*overrides, f"{key}={text}"])
        except UsageError as err:
            reason = str(err).split(": ", 1)[1] if str(err).startswith("--set ") else str(err)
            reason = reason.replace(f" in --set {shown(f'{key}={text}')}", "")  # the item is named already
            raise UsageError(f"--space {shown(item)}: {reason}") from None

    return check


def _range(key: str, raw: str, item: str, check: Any) -> Dimension:
    """Returns a range dimension from `LOW:HIGH[:log]`."""
    parts = [p.strip() for p in raw.split(":")]
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log") or not all(parts[:2]):
        raise UsageError(f"--space {shown(item)}: expected LOW:HIGH or LOW:HIGH:log, e.g. "
                         f"{key}=0.001:0.3:log")
    config = check(key, None)
    section, field_name = key.split(".", 1)
    field = {f.name: f for f in dataclasses.fields(getattr(config, section))}[field_name]
    if field.metadata.get("choices") is not None:
        raise UsageError(f"--space {shown(item)}: a range needs a number setting; {key} has choices; allowed: a "
                         f"list of them, e.g. --space {key}={','.join(map(str, field.metadata['choices'][:2]))}")
    config = check(key, parts[0])
    low = getattr(getattr(config, section), field_name)
    high = getattr(getattr(check(key, parts[1]), section), field_name)
    kind = type(low).__name__
    if isinstance(low, bool) or kind not in ("int", "float") or field.metadata.get("choices") is not None:
        what = "has choices" if field.metadata.get("choices") is not None else f"holds {type(low).__name__} values"
        raise UsageError(f"--space {shown(item)}: a range needs a number setting; {key} {what}; "
                         f"allowed: a list of values, e.g. --space {key}=a,b")
    if not low < high:
        raise UsageError(f"--space {shown(item)}: the low end {parts[0]} is not below the high end {parts[1]}; "
                         "allowed: LOW < HIGH")
    log = len(parts) == 3
    if log and not low > 0:
        raise UsageError(f"--space {shown(item)}: a log range needs LOW > 0; received {parts[0]}")
    if kind == "float" and not (math.isfinite(low) and math.isfinite(high)):
        raise UsageError(f"--space {shown(item)}: a range needs finite ends")
    return Dimension(key, kind, low=low, high=high, log=log)


def _choice(key: str, raw: str, item: str, check: Any) -> Dimension:
    """Returns a choice dimension from `a,b,c` (or `a;b` for list values)."""
    values = [v.strip() for v in raw.split(";" if ";" in raw else ",")]
    if not raw.strip() or any(not v for v in values):
        raise UsageError(f"--space {shown(item)}: an empty value; allowed: values separated by ',' "
                         "(or ';' when each value is a list), or a range LOW:HIGH[:log]")
    if len(values) > MAX_CHOICES:
        raise UsageError(f"--space {shown(item)}: {len(values)} values; allowed: at most {MAX_CHOICES}")
    section, field_name = key.split(".", 1)
    seen: dict[str, str] = {}
    for value in values:
        parsed = repr(getattr(getattr(check(key, value), section), field_name))
        if parsed in seen:
            raise UsageError(f"--space {shown(item)}: {shown(value)} is the same value as {shown(seen[parsed])}; "
                             "allowed: distinct values")
        seen[parsed] = value
    if len(values) < 2:
        raise UsageError(f"--space {shown(item)}: one value; allowed: two or more (or --set {key}={values[0]})")
    return Dimension(key, "choice", choices=tuple(values))


def from_dicts(items: Sequence[dict[str, Any]]) -> list[Dimension]:
    """Returns dimensions from their `as_dict` forms (a `search.json`, a study's record)."""
    return [Dimension(**{**item, "choices": tuple(item.get("choices", ()))}) for item in items]

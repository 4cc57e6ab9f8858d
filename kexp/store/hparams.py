"""Internal: a run's config as flat `section.key` values, as TensorBoard's HParams tab and `kexp runs` show it.

Every run of one experiment logs every key of its resolved config (not only
the ones `--set` changed), so its runs share one set of HParams columns and
line up in the table and the parallel-coordinates view. No TensorFlow here.

`flatten` keeps each value's own type (`kexp runs`, run labels, the config
text). `session_values` is what a run writes as its HParams session, with one
type per field whatever its value, and `metric_order` / `value_order` are the
order `kexp tensorboard` shows the table's columns and filter values in
(`kexp.cli.hparams_columns`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

HParamValue = bool | int | float | str

# The HParams session value naming the run's experiment: a logdir over several experiments tells them apart.
# Config keys are `section.key`, so it cannot clash with one.
EXPERIMENT = "experiment"


def flatten(config: Mapping[str, Any]) -> dict[str, HParamValue]:
    """Returns `{"section.key": value}` for a config as written to `config.json`.

    Args:
        config: `{section: {key: value}}`; sections that are None are skipped.

    Returns:
        Values TensorBoard's HParams plugin takes (bool, int, float, str):
        lists become `"a,b"` strings (as `--set` writes them), None `"None"`.
    """
    flat: dict[str, HParamValue] = {}
    for section, values in config.items():
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            flat[f"{section}.{key}"] = _scalar(value)
    return flat


def differences(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, HParamValue]:
    """Returns the flat values of `config` that differ from `defaults` (or that `defaults` lacks)."""
    base = flatten(defaults)
    return {key: value for key, value in flatten(config).items() if key not in base or base[key] != value}


def session_values(experiment: str, config: Mapping[str, Any]) -> dict[str, bool | float | str]:
    """Returns a run's HParams session values: `experiment`, then every flat config key.

    Each field has one type whatever its value, so that a column never mixes
    numbers and text across runs: lists and tuples are always the
    comma-joined string (`"8"` for a one-element tuple, as for `"64,64,64"`),
    None is `"None"`, and integers are strings too. Why strings: the HParams
    tab prints every number with five significant digits (`64` reads
    `64.000`; the plugin has no integer type, its numbers are doubles) and
    prints a string as written. A string column still filters, by ticking
    values (or a regular expression past nine values); `kexp tensorboard`
    lists them in numeric order (`value_order`). Floats stay numbers (a
    range filter and a numeric axis in the parallel-coordinates view) and
    booleans stay booleans.

    Args:
        experiment: The experiment's name.
        config: The resolved config, as written to `config.json`.
    """
    values: dict[str, bool | float | str] = {EXPERIMENT: experiment}
    for key, value in flatten(config).items():
        values[key] = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return values


def metric_order(metrics: Sequence[tuple[str, str]], bars: Sequence[str]) -> list[tuple[str, str]]:
    """Returns HParams metric columns `(tag, group)` with the quality bars first.

    First the final metrics (`metrics/NAME` at the run's root, group "") that
    are quality bars, in the order of `bars`; then the other final metrics;
    then the rest (each fit's `epoch_*` in `train/` and `validation/`) in the
    order given.

    Args:
        metrics: The columns as TensorBoard lists them.
        bars: The metric names of the experiments' `EXPECTED` bars, in order.
    """
    rank: dict[str, int] = {}
    for name in bars:
        rank.setdefault(f"metrics/{name}", len(rank))

    def key(item: tuple[int, tuple[str, str]]) -> tuple[int, int, int]:
        index, (tag, group) = item
        if group == "" and tag in rank:
            return 0, rank[tag], index
        return (1 if group == "" and tag.startswith("metrics/") else 2), 0, index

    return [metric for _, metric in sorted(enumerate(metrics), key=key)]


def value_order(values: Iterable[str]) -> list[str]:
    """Returns the distinct string values of a column, numbers (and comma-joined numbers) in numeric order first.

    `["16", "128", "8,8", "None"]` -> `["8,8", "16", "128", "None"]`: integers
    written as strings sort as numbers, tuples element by element.
    """
    def key(text: str) -> tuple[int, tuple[float, ...], str]:
        try:
            return 0, tuple(float(part) for part in text.split(",")), text
        except ValueError:
            return 1, (), text

    return sorted(set(values), key=key)


def _scalar(value: Any) -> HParamValue:
    if isinstance(value, (list, tuple)):
        return ",".join(str(_scalar(v)).lower() if isinstance(v, bool) else str(_scalar(v)) for v in value)
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)

"""Internal: the HParams plugin `kexp tensorboard` serves: the experiments' quality bars as the first metric columns.

TensorBoard's HParams plugin finds the table's metric columns itself, from
the scalars below each session (the run folder): each fit's `epoch_*` in
`train/` and `validation/`, and the run's final `metrics/NAME`. It sorts them
by name, so the learning rate and throughput come first and a bar such as
`metrics/test_mse` is past the five columns the table shows at first.

The plugin's own way to order them, an experiment summary
(`hp.hparams_config(metrics=[...])`), does not fit kexp's folders: the
plugin reads one per logdir and, when several runs hold one, picks any of
them (a different one from one start to the next), so a list written by each
run would show one run's columns and values, not all runs'; and the one place
a single list could go, beside the run folders, would be one more
TensorBoard run (and TensorBoard is pointed at `logs` as often as at
`logs/NAME`). So this plugin keeps the plugin's inferred columns, all of
them, as runs come and go, and only orders them (`kexp.store.hparams.metric_order`):
the bars of the experiments in the logdir (the keys of each one's `EXPECTED`,
experiments by name), then the other final metrics, then the fits' columns.
It also lists a string column's values in numeric order (integers are
written as strings: `kexp.store.hparams.session_values`), and gives a key
that older runs wrote as a number and newer ones as text one type.

TensorBoard started on its own (`tensorboard --logdir logs`) keeps its name order.
"""

from __future__ import annotations

import ast
import functools
import os
import posixpath
from pathlib import Path
from typing import Any

from tensorboard import default
from tensorboard.plugins.hparams import api_pb2, backend_context, hparams_plugin, metadata, plugin_data_pb2

from kexp.store import hparams

__all__ = ["bar_names", "one_type_per_key", "plugins"]


def plugins() -> list[Any]:
    """Returns TensorBoard's default plugins with its HParams plugin replaced by kexp's (for `program.TensorBoard`)."""
    return [HParamsPlugin if plugin is hparams_plugin.HParamsPlugin else plugin for plugin in default.get_plugins()]


class HParamsPlugin(hparams_plugin.HParamsPlugin):
    """TensorBoard's HParams plugin with kexp's column order (see the module docstring)."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._context = _Context(context)


class _Context(backend_context.Context):
    """The plugin's backend: its inferred metric columns reordered, string values in numeric order."""

    def _compute_metric_names(self, ctx: Any, experiment_id: str, session_runs: Any) -> list[tuple[str, str]]:
        names = super()._compute_metric_names(ctx, experiment_id, session_runs)
        experiments = self._experiments(ctx, experiment_id, set(session_runs))
        return hparams.metric_order(names, [name for experiment in experiments for name in bar_names(experiment)])

    def hparams_metadata(self, ctx: Any, experiment_id: str, run_tag_filter: Any = None) -> dict[str, dict[str, bytes]]:
        return one_type_per_key(super().hparams_metadata(ctx, experiment_id, run_tag_filter))

    def _compute_hparam_info_from_values(self, name: str, values: Any) -> Any:
        info = super()._compute_hparam_info_from_values(name, values)
        if info is not None and info.type == api_pb2.DATA_TYPE_STRING:
            ordered = hparams.value_order(value.string_value for value in info.domain_discrete.values)
            info.ClearField("domain_discrete")
            info.domain_discrete.extend(ordered)
        return info

    def _experiments(self, ctx: Any, experiment_id: str, session_runs: set[str]) -> list[str]:
        """Returns the names of the experiments the sessions ran, sorted.

        Each session says it in its `experiment` value; a run written before
        kexp logged one is named by its folder (`LOGDIR/NAME/RUN_ID`).
        """
        found = set()
        for run, tags in self.hparams_metadata(ctx, experiment_id).items():
            if run not in session_runs or metadata.SESSION_START_INFO_TAG not in tags:
                continue
            start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
            value = start.hparams.get(hparams.EXPERIMENT)
            if value is not None and value.string_value:
                found.add(value.string_value)
            else:
                parent = posixpath.dirname(run.replace(os.sep, "/"))
                found.add(posixpath.basename(parent) if parent else os.path.basename(self._logdir()))
        return sorted(found)

    def _logdir(self) -> str:
        return os.path.normpath(getattr(self.tb_context, "logdir", "") or "")


def one_type_per_key(runs: dict[str, dict[str, bytes]]) -> dict[str, dict[str, bytes]]:
    """Returns the plugin's session metadata with a key that mixes text and numbers across runs as text in all.

    Runs written before kexp wrote integers as text hold `64.0` where newer
    ones hold `"64"`; TensorBoard then sorts Python floats against strings
    (a server error on clicking the column) and reads the numbers as text
    anyway. Numbers become the text kexp writes (`64`, `0.5`), booleans `true`/`false`.

    Args:
        runs: `run -> tag -> summary metadata content`, as `hparams_metadata` returns it.
    """
    starts = {}
    for run, tags in runs.items():
        if metadata.SESSION_START_INFO_TAG in tags:
            starts[run] = plugin_data_pb2.HParamsPluginData.FromString(tags[metadata.SESSION_START_INFO_TAG])
    kinds: dict[str, set[str]] = {}
    for data in starts.values():
        for key, value in data.session_start_info.hparams.items():
            kinds.setdefault(key, set()).add(value.WhichOneof("kind") or "")
    mixed = {key for key, found in kinds.items() if "string_value" in found and len(found - {"null_value", ""}) > 1}
    if not mixed:
        return runs
    fixed = {run: dict(tags) for run, tags in runs.items()}
    for run, data in starts.items():
        for key in mixed & set(data.session_start_info.hparams):
            value = data.session_start_info.hparams[key]
            if value.WhichOneof("kind") == "number_value":
                number = value.number_value
                value.string_value = str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
            elif value.WhichOneof("kind") == "bool_value":
                value.string_value = str(value.bool_value).lower()
        fixed[run][metadata.SESSION_START_INFO_TAG] = data.SerializeToString()
    return fixed


@functools.cache
def bar_names(experiment: str) -> tuple[str, ...]:
    """Returns the metric names of an experiment's quality bars (`EXPECTED`), in order; () when it has none.

    Read from the module's source when `EXPECTED` is a literal (all bundled
    experiments), so that the server imports no experiment; otherwise the
    module is loaded. An unknown or broken experiment has none.
    """
    from kexp import registry

    try:
        spec = registry.get(experiment)
        literal = _literal_expected(spec.path)
        if literal is not None:
            return tuple(literal)
        return tuple(getattr(registry.load(experiment), "EXPECTED", None) or ())
    except Exception:  # a run of an experiment that is gone, or broken, still gets its columns
        return ()


def _literal_expected(path: Any) -> dict | None:
    """Returns a module file's top-level `EXPECTED` if it is a literal dict, else None."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, ValueError, TypeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == "EXPECTED" for target in targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None

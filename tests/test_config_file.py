"""`kexp run NAME --config FILE`: a run's config.json (or any `{section: {key: value}}` file) as settings."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli_here

from kexp import registry
from kexp.config import to_dict
from kexp.config_file import config_file_overrides
from kexp.errors import UsageError
from kexp.runner import resolve


@pytest.mark.parametrize("name", registry.discover())
def test_every_experiments_config_json_round_trips_through_config(name, tmp_path):
    """The file a run writes gives back the config it was written from, for every bundled experiment."""
    config = registry.load(name).CONFIG
    path = tmp_path / "config.json"
    path.write_text(json.dumps(to_dict(config)))
    assert resolve(name, config_file_overrides(path)) == config


def test_a_config_file_sets_values_that_set_overrides_and_labels_the_run(tmp_path, logdir):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"model": {"hidden": 4}, "train": {"epochs": 1, "learning_rate": 0.02}}))
    proc = run_cli_here("run", "xor", "--config", str(path), "--set", "train.epochs=2", "--logdir", str(logdir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = logdir / "xor" / proc.stdout.strip().splitlines()[-1].rsplit("/", 1)[1]
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["model"]["hidden"], saved["train"]["epochs"], saved["train"]["learning_rate"]) == (4, 2, 0.02)
    assert run_dir.name.endswith("-hidden=4+epochs=2+learning_rate=0.02"), run_dir.name


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "holds a JSON list; allowed: a JSON file of {section: {key: value}}"),
    ('{"train": 5}', "'train' holds a JSON int, not keys"),
    ('{"train": {"epochs": null}}', "train.epochs holds null; allowed: a number, a string, true/false"),
    ('{"train": {"epochs": {"a": 1}}}', "train.epochs holds a JSON dict"),
    ('{"train": {"epoch": 3}}', "unknown key 'train.epoch'"),
    ('{"train": {"epochs": "many"}}', "train.epochs: received 'many'; allowed: an integer"),
    ('{"train": {"epochs": 0}}', "train.epochs: received 0; allowed"),
    ('{"train": {"epochs": 3', "not valid JSON"),
])
def test_a_bad_config_file_exits_2_in_one_line_naming_it(tmp_path, logdir, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    proc = run_cli_here("run", "xor", "--config", str(path), "--logdir", str(logdir))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert list(logdir.iterdir()) == []


def test_a_missing_config_file_and_one_with_resume_are_refused(tmp_path):
    with pytest.raises(UsageError, match="--config '.*nowhere.json': missing; allowed: a JSON file"):
        config_file_overrides(tmp_path / "nowhere.json")
    proc = run_cli_here("run", "xor", "--config", str(tmp_path / "x.json"), "--resume", str(tmp_path))
    assert proc.returncode == 2 and "a resumed run keeps its saved config" in proc.stderr, proc.stderr

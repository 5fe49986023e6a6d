"""Run keys: stable across processes, sensitive to every resolved value, blind to where runs live."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from studies.config import COOLDOWN_FIELDS, RESULT_NEUTRAL_FIELDS
from sweeps.plan import plan_grid, run_key

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(tree, list) and tree:
        for i, v in enumerate(tree):
            yield from _leaves(v, path + (i,))
    else:
        yield path, tree


def _perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.0001 + 1e-9
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 1
    if isinstance(value, (list, dict)):
        return [1] if not value else None
    raise TypeError(type(value))


def test_keys_are_stable_across_processes(tmp_path):
    here = {g: [r.key for r in plan_grid(g, runs_dir=str(tmp_path)).runs] for g in ("smoke", "scaling_1b")}
    code = (
        "import json, sys; from sweeps.plan import plan_grid; "
        "print(json.dumps({g: [r.key for r in plan_grid(g, runs_dir=sys.argv[1]).runs] for g in ('smoke', 'scaling_1b')}))"
    )
    # another process, another runs folder and hash seed: the same keys
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "elsewhere")], cwd=REPO_ROOT,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == here
    assert all(len(set(keys)) == len(keys) for keys in here.values())


def _neutral(path, config) -> bool:
    unread = config["schedule"]["kind"] != "cooldown" and path[:1] == ("schedule",) and path[1] in COOLDOWN_FIELDS
    return unread or any(path[:len(prefix)] == prefix for prefix in RESULT_NEUTRAL_FIELDS)


@pytest.mark.parametrize("overrides", [[], ["schedule.kind=cooldown"]], ids=["wsd", "cooldown"])
def test_key_changes_when_any_result_determining_value_changes(tmp_path, overrides):
    """Under wsd the cooldown fields are unread, so they leave the keys of runs planned before they
    existed unchanged; under cooldown they count."""
    config = plan_grid("smoke", overrides, runs_dir=str(tmp_path)).runs[0].config
    base = run_key(config)
    checked = neutral = 0
    for path, value in _leaves(config):
        changed = copy.deepcopy(config)
        node = changed
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = _perturbed(value)
        if _neutral(path, config):
            assert run_key(changed) == base, path
            neutral += 1
        else:
            assert run_key(changed) != base, path
            checked += 1
    assert checked > 60  # every section's leaves, not a handful
    # out_dir, the tracking section's four, progress bar, refresh, checkpoint cadence, the branching
    # section's four (and under wsd the two cooldown fields)
    assert neutral >= (11 if overrides else 13)
    assert run_key(config) == base  # the key does not edit the config it hashes


def test_a_grid_pointed_at_another_tracking_store_keeps_its_keys(tmp_path):
    plain = [r.key for r in plan_grid("smoke", runs_dir=str(tmp_path)).runs]
    moved = plan_grid("smoke", ["tracking.uri=http://127.0.0.1:5999", "trainer.checkpoint_every_n_steps=3",
                                "trainer.progress_bar=false"], runs_dir=str(tmp_path))
    assert [r.key for r in moved.runs] == plain
    assert {r.config["tracking"]["uri"] for r in moved.runs} == {"http://127.0.0.1:5999"}


def test_key_follows_overrides_but_not_siblings(tmp_path):
    smoke = plan_grid("smoke", runs_dir=str(tmp_path))
    plain = {r.name: r.key for r in smoke.runs}
    first_budget = smoke.grid_config.budgets[0]
    fewer = {r.name: r.key for r in plan_grid("smoke", [f"budgets=[{first_budget}]"], runs_dir=str(tmp_path)).runs}
    assert fewer and all(plain[name] == key for name, key in fewer.items())  # other grid points do not matter
    lr = {r.name: r.key for r in plan_grid("smoke", ["optim.lr=2.5e-3"], runs_dir=str(tmp_path)).runs}
    assert not set(lr.values()) & set(plain.values())
    elsewhere = {r.name: r.key for r in plan_grid("smoke", runs_dir=str(tmp_path / "other")).runs}
    assert elsewhere == plain


def test_written_config_reads_back_to_the_same_key(tmp_path):
    from studies.config import config_yaml, load_run_config
    from omegaconf import OmegaConf

    for run in plan_grid("smoke", runs_dir=str(tmp_path)).runs[:2]:
        path = run.write_config()
        loaded = load_run_config(path)
        assert run_key(OmegaConf.to_container(OmegaConf.structured(loaded))) == run.key
        assert path.read_text() == config_yaml(loaded)  # what studies.run compares before it trains
        assert str(run.out_dir).endswith(run.key)


def test_run_key_rejects_nan():
    with pytest.raises(ValueError):
        run_key({"budget": {"flops": float("nan")}})


@pytest.mark.parametrize("grid", ["smoke", "scaling_1b", "scaling_8b", "isoflop", "smoke-branched"])
def test_planned_config_is_what_omegaconf_makes_of_the_run(tmp_path, grid):
    """The planner's fast conversion equals the schema's own (the YAML a job reads hashes the same)."""
    from omegaconf import OmegaConf

    branched = ["branching=true", "schedule.kind=cooldown"] if grid.endswith("-branched") else []
    plan = plan_grid(grid.removesuffix("-branched"), branched, runs_dir=str(tmp_path))
    runs = plan.runs + plan.trunks
    assert bool(plan.trunks) == bool(branched)
    for run in (runs[0], runs[-1]):
        slow = OmegaConf.to_container(OmegaConf.structured(run.run_config), resolve=True)
        assert json.dumps(slow, sort_keys=True) == json.dumps(run.config, sort_keys=True)  # 1 and 1.0 differ here
        assert run_key(slow) == run.key

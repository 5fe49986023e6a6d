"""A branch of a trunk is the run trained from step 0: same losses, same weights, bit for bit."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch

from run_configs import CrashAt, tiny_run_config, train_losses
from studies.config import branch_checkpoint
from studies.run import main, run

SCHEDULE = {"kind": "cooldown", "warmup_steps": 2, "max_warmup_fraction": 1.0, "cooldown_fraction": 0.25,
            "cooldown_shape": "1-sqrt"}
NO_TRACKING = {"enabled": False}


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _final_weights(out_dir):
    return torch.load(out_dir / "checkpoints" / "final.ckpt", weights_only=False)["state_dict"]


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_branches_equal_independent_runs_step_for_step(objective, tmp_path, data_cache):
    # Budgets of 5 and 8 steps: cooldowns of round(0.25 x 5) = 1 and 2 steps, branch points 4 and 6.
    trunk_dir = tmp_path / "g" / "trunk"
    trunk = tiny_run_config(trunk_dir, data_cache, objective, steps=6, tracking=NO_TRACKING,
                            schedule={**SCHEDULE, "cooldown_fraction": 0.0},
                            branching={"role": "trunk", "branch_steps": [4, 6]})
    run(trunk, until_step=4)  # one segment: stops at the first branch point
    assert branch_checkpoint(trunk_dir, 4).exists() and not (trunk_dir / "result.json").exists()
    assert sorted(train_losses(trunk_dir)) == [0, 1, 2, 3]
    run(trunk, until_step=6)  # the last segment finishes the trunk
    assert branch_checkpoint(trunk_dir, 6).exists() and (trunk_dir / "result.json").exists()

    for steps, branch_step in ((5, 4), (8, 6)):
        alone_dir, branch_dir = tmp_path / "g" / f"alone{steps}", tmp_path / "g" / f"branch{steps}"
        alone = tiny_run_config(alone_dir, data_cache, objective, steps=steps, tracking=NO_TRACKING,
                                schedule=SCHEDULE)
        run(alone)
        branch = dataclasses.replace(
            alone, out_dir=str(branch_dir),
            branching=dataclasses.replace(alone.branching, role="branch", trunk_dir=str(trunk_dir),
                                          branch_step=branch_step))
        run(branch)
        expected, got = train_losses(alone_dir), train_losses(branch_dir)
        assert sorted(got) == list(range(branch_step, steps))  # the branch trained its cooldown only
        assert got == {s: expected[s] for s in got}
        trunk_losses = train_losses(trunk_dir)
        assert {s: trunk_losses[s] for s in range(branch_step)} == {s: expected[s] for s in range(branch_step)}
        a, b = _final_weights(alone_dir), _final_weights(branch_dir)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_branch_without_its_trunk_checkpoint_trains_from_step_zero(tmp_path, data_cache, capsys):
    branch = tiny_run_config(tmp_path / "g" / "branch", data_cache, "arm", steps=5, tracking=NO_TRACKING,
                             schedule=SCHEDULE,
                             branching={"role": "branch", "trunk_dir": str(tmp_path / "missing"), "branch_step": 4})
    run(branch)
    assert "training from step 0" in capsys.readouterr().err
    assert sorted(train_losses(tmp_path / "g" / "branch")) == [0, 1, 2, 3, 4]


def test_until_step_is_refused_outside_a_trunks_branch_points(tmp_path, data_cache, capsys):
    config = tiny_run_config(tmp_path / "g" / "r", data_cache, "arm", steps=6, tracking=NO_TRACKING, schedule=SCHEDULE)
    path = tmp_path / "config.yaml"
    from studies.config import config_yaml

    path.write_text(config_yaml(config))
    assert main([str(path), "--until-step", "3"]) == 2
    assert "only a trunk stops early" in capsys.readouterr().err
    assert not (tmp_path / "g" / "r").exists()


def test_a_branch_that_crashes_resumes_from_its_own_checkpoint(tmp_path, data_cache, capsys):
    """Once a branch has a checkpoint of its own it resumes from it, as any run does, not from the trunk."""
    trunk_dir = tmp_path / "g" / "trunk"
    run(tiny_run_config(trunk_dir, data_cache, "mdm", steps=4, tracking=NO_TRACKING,
                        schedule={**SCHEDULE, "cooldown_fraction": 0.0},
                        branching={"role": "trunk", "branch_steps": [4]}))
    alone = tiny_run_config(tmp_path / "g" / "alone", data_cache, "mdm", steps=8, tracking=NO_TRACKING,
                            schedule={**SCHEDULE, "cooldown_fraction": 0.5})
    run(alone)
    branch = dataclasses.replace(alone, out_dir=str(tmp_path / "g" / "branch"), branching=dataclasses.replace(
        alone.branching, role="branch", trunk_dir=str(trunk_dir), branch_step=4))
    capsys.readouterr()
    with pytest.raises(RuntimeError, match="injected crash"):
        run(branch, callbacks=[CrashAt(7)])  # its own last.ckpt was written at step 6
    assert "starting from the trunk at step 4" in capsys.readouterr().err
    run(branch)
    assert "starting from the trunk" not in capsys.readouterr().err
    resumed = sorted((tmp_path / "g" / "branch" / "logs").glob("version_*"))[-1] / "metrics.csv"
    with open(resumed) as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle) if r.get("train/loss")] == [6, 7]
    assert train_losses(tmp_path / "g" / "branch") == {s: v for s, v in train_losses(tmp_path / "g" / "alone").items()
                                                       if s >= 4}
    a, b = _final_weights(tmp_path / "g" / "alone"), _final_weights(tmp_path / "g" / "branch")
    assert all(torch.equal(a[k], b[k]) for k in a)

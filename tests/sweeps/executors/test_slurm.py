"""sweeps/executors/slurm.py: which executor a launch picks, what a SLURM submission asks for (cluster
profile -> submitit parameters).

Only the parameters are checked here (submitit validates their names); submitting to a real
cluster is tested against the dev cluster in tests/slurm.
"""

from __future__ import annotations

import pytest
import submitit

from sweeps.executors.slurm import resolve_cluster, slurm_parameters
from sweeps.plan import plan_grid
from sweeps.profiles import load_profile


def test_profile_becomes_submitit_parameters(tmp_path):
    plan = plan_grid("scaling_1b", runs_dir=str(tmp_path))
    params = slurm_parameters(plan.profile, plan.runs[0].config["trainer"], "scaling_1b")
    assert params["slurm_partition"] == "gpu" and params["nodes"] == 4
    assert params["gpus_per_node"] == 8 and params["tasks_per_node"] == 8  # one task per GPU
    assert params["timeout_min"] == plan.profile.time_min and params["mem_gb"] == plan.profile.mem_gb
    assert "slurm_account" not in params  # null in the profile: SLURM's default
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm",
                                     slurm_max_num_timeout=plan.profile.max_num_timeout)
    executor.update_parameters(**params)  # raises on a parameter name submitit does not know


def test_cpu_profile_asks_for_no_gpus(tmp_path):
    plan = plan_grid("smoke", runs_dir=str(tmp_path), profile="dev")
    params = slurm_parameters(plan.profile, plan.runs[0].config["trainer"], "smoke")
    assert "gpus_per_node" not in params and params["slurm_partition"] == "debug"
    assert params["tasks_per_node"] == 1


def test_trainer_must_use_the_allocated_devices(tmp_path):
    plan = plan_grid("scaling_1b", ["trainer.devices=4", "trainer.global_batch_size=1280"], runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match="trainer.devices=4 but cluster profile"):
        slurm_parameters(plan.profile, plan.runs[0].config["trainer"], "scaling_1b")
    with pytest.raises(ValueError, match="trainer.num_nodes=1 but cluster profile"):
        slurm_parameters(load_profile("h100-4x8"), {"devices": 8, "num_nodes": 1}, "x")


def test_cluster_choice(tmp_path, monkeypatch, path_without_sbatch):
    assert resolve_cluster("auto") == "local"
    with pytest.raises(ValueError, match="--cluster local"):
        resolve_cluster("slurm")
    fake_bin = tmp_path / "slurm-bin"
    fake_bin.mkdir()
    sbatch = fake_bin / "sbatch"
    sbatch.write_text("#!/bin/sh\nexit 1\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}")
    assert resolve_cluster("auto") == "slurm" and resolve_cluster("local") == "local"
    # a profile without a SLURM partition (the `local` profile) runs here even with sbatch on PATH
    assert resolve_cluster("auto", slurm_profile=False) == "local"

"""Rendering of the sbatch templates (no cluster needed): resources from the profile, the multi-node
template for several nodes, and clear errors for runs that do not fit the profile."""

from __future__ import annotations

import dataclasses

import pytest

from sweeps.executors.sbatch import main, render, script_text, template_for
from sweeps.profiles import load_profile


def _script(profile, devices=8, num_nodes=4):
    return script_text(profile, {"devices": devices, "num_nodes": num_nodes}, job_name="scaling 1b",
                       select_config="CONFIG=x.yaml", log_pattern="/logs/%A_%a.out", array="0-9%8")


def test_multi_node_profile_renders_one_task_per_gpu_on_every_node():
    profile = load_profile("h100-4x8")
    text = _script(profile)
    assert template_for(profile).name == "multi_node.sbatch"
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 f"#SBATCH --time={profile.time_min}", f"#SBATCH --signal=USR1@{profile.signal_delay_s}",
                 "#SBATCH --array=0-9%8", "#SBATCH --job-name=scaling_1b", "#SBATCH --partition=gpu",
                 f"#SBATCH --mem={int(profile.mem_gb * 1024)}M"):
        assert line in text.splitlines(), line
    assert "{{" not in text.replace("{{...}}", "")
    assert "srun --kill-on-bad-exit=1" in text and "-m studies.run" in text


def test_cpu_profile_asks_for_no_gpus_and_uses_the_single_node_template():
    profile = load_profile("dev")
    text = _script(profile, devices=2, num_nodes=1)
    assert template_for(profile).name == "single_node.sbatch"
    assert "--gpus-per-node" not in text and "#SBATCH --ntasks-per-node=2" in text


def test_run_that_does_not_fit_the_profile_is_refused():
    with pytest.raises(ValueError, match="trainer.devices=4 but cluster profile"):
        _script(load_profile("h100-4x8"), devices=4, num_nodes=4)
    with pytest.raises(ValueError, match="trainer.num_nodes=1"):
        _script(load_profile("h100-4x8"), devices=8, num_nodes=1)


def test_extra_parameters_and_missing_placeholders():
    profile = dataclasses.replace(load_profile("dev"), account="proj1", additional_parameters={"exclusive": True})
    text = _script(profile, devices=1, num_nodes=1)
    assert "#SBATCH --account=proj1" in text and "#SBATCH --exclusive" in text
    with pytest.raises(ValueError, match="needs values for nodes"):
        render("#SBATCH --nodes={{nodes}}", {})


def test_cli_reports_a_missing_config(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml"), "--profile", "dev"]) == 2
    assert "does not exist" in capsys.readouterr().err

"""Tests of studies/tasks/lm_eval_cli.py: ``arm-mdm-eval`` in a fresh interpreter with no network scores
tiny trained ARM and MDM checkpoints on local multiple-choice, generation and perplexity tasks, with
lm-eval's own arguments."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from studies.tasks.lm_eval_tasks import write_task_yamls

TASKS = "toy_forward,toy_arithmetic,toy_validation"


def arm_mdm_eval(args, tmp_path, timeout=600):
    script = shutil.which("arm-mdm-eval")
    command = [script] if script else [sys.executable, "-m", "studies.tasks.lm_eval_cli"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    return subprocess.run(command + args, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


@pytest.mark.integration
@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_arm_mdm_eval_scores_a_checkpoint_on_local_tasks(objective, trained_checkpoints, toy_data, tmp_path):
    include = write_task_yamls(toy_data[0], tmp_path / "tasks")
    out = tmp_path / "out"
    model_args = f"checkpoint={trained_checkpoints[objective]},mc_samples=4,steps=8"
    done = arm_mdm_eval(["--model", "arm_mdm", "--model_args", model_args,
                         "--tasks", TASKS, "--include_path", str(include), "--device", "cpu", "--batch_size", "8",
                         "--limit", "4", "--gen_kwargs", "max_gen_toks=8", "--log_samples", "--output_path", str(out)],
                        tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("toy_forward", "toy_arithmetic", "toy_validation", "acc_bytes", "exact_match", "bits_per_byte"):
        assert row in done.stdout, done.stdout  # lm-eval's table

    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    assert 0.0 <= results["toy_forward"]["acc,none"] <= 1.0
    assert 0.0 <= results["toy_arithmetic"]["exact_match,flexible-extract"] <= 1.0
    assert results["toy_validation"]["bits_per_byte,none"] > 0
    for task in TASKS.split(","):
        (samples_file,) = out.rglob(f"samples_{task}_*.jsonl")
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        per_filter = 2 if task == "toy_arithmetic" else 1
        assert len(samples) == 4 * per_filter and {s["doc_id"] for s in samples} == {0, 1, 2, 3}
        for sample in samples:
            assert sample["resps"] and sample["doc"]
    forward = [json.loads(line) for line in next(out.rglob("samples_toy_forward_*.jsonl")).read_text().splitlines()]
    assert all(len(s["resps"]) == 4 and "acc" in s for s in forward)  # four choices, one score each
    rolling = [json.loads(line) for line in next(out.rglob("samples_toy_validation_*.jsonl")).read_text().splitlines()]
    assert all(float(s["resps"][0][0]) < 0 for s in rolling)  # a log-likelihood per document


def test_bad_model_args_are_one_line_naming_the_fix(trained_checkpoints, toy_data, tmp_path):
    include = write_task_yamls(toy_data[0], tmp_path / "tasks")
    done = arm_mdm_eval(["--model", "arm_mdm", "--model_args", f"checkpoint={trained_checkpoints['arm']},mc_sample=4",
                         "--tasks", "toy_forward", "--include_path", str(include), "--device", "cpu"], tmp_path)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("arm-mdm-eval: error: unknown model_args key(s) ['mc_sample']") and "mc_samples" in last


def test_help_does_not_import_torch(tmp_path):
    code = ("import sys; sys.argv = ['arm-mdm-eval', '--help']\n"
            "from studies.tasks import lm_eval_cli\n"
            "try:\n    lm_eval_cli.main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "from lm_eval.api.registry import model_registry\nassert 'arm_mdm' in model_registry\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "lm-eval" in done.stdout

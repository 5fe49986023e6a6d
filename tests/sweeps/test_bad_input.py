"""Bad input, across the entry points: each case exits 2 with a one-line message naming the problem
and the fix, before any training step, and leaves no run folder and no MLflow store behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from run_configs import tiny_run_config
from studies.config import config_yaml
from sweeps import launch

REPO_ROOT = Path(__file__).resolve().parents[2]
CORRUPT_TOKENIZER = "corrupt-tokenizer.json"  # written into the test's folder

# (overrides of the smoke grid, a fragment of the expected message)
LAUNCH_CASES = {
    "unknown suite": (["eval.suite=nosuch"], "unknown suite 'nosuch'"),
    "zero eval items": (["eval.limit=0"], "eval.limit=0 must be at least 1"),
    "unknown eval setting": (["eval.settings.pass_k=[1,10]"], "unknown eval.settings key(s) ['pass_k']"),
    "negative seed": (["seeds=[-1]"], "seed=-1 must be an integer"),
    "duplicate seeds": (["seeds=[0,0]"], "without duplicates"),
    "unknown precision": (["trainer.precision=bogus"], "trainer.precision='bogus'"),
    "fraction past the end": (["eval.at_fractions=[1.5]"], "not in [0, 1]"),
    "no evaluation point": (["eval.at_fractions=[]"], "eval.at_fractions is empty"),
    "glob matching nothing": (["data.source=files", "data.files=[/nonexistent/*.jsonl]"], "matches no file"),
    "files without files": (["data.source=files"], "needs data.files"),
    "hub without a name": (["data.source=hub"], "needs data.name"),
    "unknown data source": (["data.source=ftp"], "is not one of"),
    "missing tokenizer": (["data.tokenizer.path=/nonexistent/tokenizer.json"], "does not exist"),
    "corrupt tokenizer": ([f"data.tokenizer.path={CORRUPT_TOKENIZER}"], "is not a tokenizer.json"),
    "tiny BPE vocabulary": (["data.tokenizer.vocab_size=100"], "too small for a byte-level BPE"),
    "two tokenizers": (["data.tokenizer.path=/x/tokenizer.json", "data.tokenizer.pretrained=GSAI-ML/LLaDA-8B-Base"],
                       "are alternatives; set one of them"),
    "revision without a hub tokenizer": (["data.tokenizer.revision=main"], "revision needs data.tokenizer.pretrained"),
    "empty source": (["data.source=hub", "data.name=some/corpus", "data.source_tokens=0"],
                     "data.source_tokens=0.0 must be positive"),
    "no repetition allowed": (["data.max_epochs_warning=0"], "data.max_epochs_warning=0.0 must be positive"),
    "validation fraction of one": (["data.validation_fraction=1.0"], "must be in [0, 1)"),
    "qa fraction past one": (["data.toyworld.qa_fraction=1.5"], "qa_fraction=1.5"),
    "astronomical budget": (["budgets=[1e300]"], "optimizer steps, more than"),
    "negative budget": (["budgets=[-5e11]"], "must be a finite positive"),
    "budget not a number": (["budgets=[abc]"], "could not be converted"),
    "budget below one step": (["budgets=[1e3]"], "too small for one optimizer step"),
    "negative learning rate": (["optim.lr=-1"], "optim.lr=-1.0 must be a positive"),
    "zero learning rate": (["optim.lr=0"], "optim.lr=0.0 must be a positive"),
    "negative weight decay": (["optim.weight_decay=-0.1"], "optim.weight_decay=-0.1"),
    "beta of one and a half": (["optim.betas=[0.9,1.5]"], "optim.betas=[0.9, 1.5]"),
    "zero adam eps": (["optim.eps=0"], "optim.eps=0.0"),
    "negative clip norm": (["optim.grad_clip=-1"], "optim.grad_clip=-1.0"),
    "unknown schedule": (["schedule.kind=linear"], "schedule.kind must be"),
    "final ratio above the peak": (["schedule.final_ratio=2"], "schedule.final_ratio=2.0"),
    "negative warmup": (["schedule.warmup_steps=-5"], "schedule.warmup_steps=-5"),
    "drop after decay": (["schedule.drop_at=0.9", "schedule.decay_start=0.5"], "drop_at <= decay_start"),
    "unknown cooldown shape": (["schedule.kind=cooldown", "schedule.cooldown_shape=cubic"],
                               "schedule.cooldown_shape must be linear or 1-sqrt"),
    "cooldown of the whole run": (["schedule.kind=cooldown", "schedule.cooldown_fraction=1.0"],
                                  "cooldown_fraction=1.0 must lie in [0, 1)"),
    "branching under wsd": (["branching=true"], "branching=true needs schedule.kind=cooldown"),
    "branching without cooldown": (["branching=true", "schedule.kind=cooldown", "schedule.cooldown_fraction=0"],
                                   "needs schedule.cooldown_fraction > 0"),
    "cooldown inside the warmup": (["branching=true", "schedule.kind=cooldown", "schedule.cooldown_fraction=0.5",
                                    "schedule.max_warmup_fraction=0.6"], "a cooldown would start inside the warmup"),
    "evaluation before the branch point": (["branching=true", "schedule.kind=cooldown", "eval.at_fractions=[0.5,1.0]"],
                                           "which a branch does not train"),
    "mask eps of one": (["mdm.eps=1.5"], "mdm.eps=1.5"),
    "random length probability": (["mdm.random_length_prob=2"], "mdm.random_length_prob=2.0"),
    "unknown t sampler": (["mdm.t_sampling=sobol"], "mdm.t_sampling must be"),
    "bare fsdp strategy": (["trainer.strategy=fsdp"], "(FSDP2, fully_shard, is spelled fsdp2)"),
    "fsdp2 at fp16": (["trainer.strategy=fsdp2", "trainer.precision=16-mixed"], "trainer.strategy=fsdp2 runs at precision"),
    "negative loss chunk": (["trainer.loss_chunk_size=-1"], "trainer.loss_chunk_size must be 0"),
    "zero micro-batch": (["trainer.micro_batch_size=0"], "trainer.micro_batch_size=0"),
    "batch not a multiple": (["trainer.global_batch_size=6"], "is not a multiple"),
    "context past the model": (["trainer.seq_len=100000", "budgets=[1e15]"], "exceeds model.max_seq_len"),
    "no validation batches": (["trainer.val_batches=0"], "trainer.val_batches=0"),
    "no logging": (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0"),
    "negative workers": (["trainer.num_workers=-1"], "trainer.num_workers=-1"),
    "negative peak FLOP/s": (["trainer.peak_flops_per_device=-1"], "peak_flops_per_device=-1.0"),
    "no Monte Carlo samples": (["eval.mc_samples=0"], "eval.mc_samples=0"),
    "negative guidance": (["eval.cfg_scale=-1"], "eval.cfg_scale=-1.0"),
    "credentials in the URI": (["tracking.uri=http://alice:pw123@127.0.0.1:5000"], "carries credentials"),
    "unreachable server": (["tracking.uri=http://127.0.0.1:9"], "is unreachable"),
    "misspelt key": (["trainer.precison=16"], "does not exist"),
    "unknown preset": (["models=[gpt5]"], "unknown model preset 'gpt5'"),
    "two architectures as twins": (["models=[{arm: tiny, mdm: cpu-0.2m}]"], "add pairing: compute to the entry"),
    "misspelt pairing": (["models=[{arm: tiny, mdm: cpu-0.2m, pairing: flops}]"],
                         "pairing 'flops' is not one of twins, compute"),
    "unknown objective": (["objectives=[gan]"], "gan"),
    "model past the GPU memory": (["models=[{arm: arm-7b}]", "objectives=[arm]", "budgets=[1e17]",
                                   "cluster_profile=h100-1", "trainer.strategy=ddp"],
                                  "needs 152.8 GiB per device, more than the 74.5 GiB (gpu_memory_gb: 80) of profile h100-1"),
}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The test's own folder as the working directory, holding a corrupt tokenizer.json."""
    (tmp_path / CORRUPT_TOKENIZER).write_text('{"version": "1.0", "model": ')
    monkeypatch.chdir(tmp_path)
    return tmp_path


# Every case as a dry run and as a launch, except the server's reachability, which only a launch checks.
LAUNCHES = [(case, dry_run) for case in LAUNCH_CASES for dry_run in (True, False)
            if not (case == "unreachable server" and dry_run)]


@pytest.mark.parametrize("case, dry_run", LAUNCHES,
                         ids=[f"{case}-{'dry-run' if dry else 'launch'}" for case, dry in LAUNCHES])
def test_the_launcher_refuses_bad_input_with_one_line_and_writes_nothing(
        workdir, fake_command, path_without_sbatch, capsys, case, dry_run):
    overrides, message = LAUNCH_CASES[case]
    runs = workdir / "runs"
    argv = ["--grid", "smoke", "--runs-dir", str(runs), "--cluster", "local", *overrides] + (["--dry-run"] if dry_run else [])
    assert launch.main(argv, command=fake_command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err, err
    assert "\n" not in err, err  # one line, no traceback
    assert "pw123" not in err
    assert not runs.exists()


def test_credentials_in_mlflow_tracking_uri_are_refused(workdir, fake_command, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://T0KEN123@127.0.0.1:5000")
    assert launch.main(["--grid", "smoke", "--runs-dir", str(workdir / "runs"), "--dry-run"], command=fake_command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MLFLOW_TRACKING_URI=http://***@127.0.0.1:5000 carries credentials") and "\n" not in err
    assert "T0KEN123" not in err and not (workdir / "runs").exists()


# (a change to a valid run config, or a config file's text, and the expected message)
RUN_CASES = {
    "unknown suite": ({"eval": {"suite": "nosuch"}}, "unknown suite 'nosuch'"),
    "zero eval items": ({"eval": {"limit": 0}}, "eval.limit=0"),
    "fraction past the end": ({"eval": {"at_fractions": [1.5]}}, "not in [0, 1]"),
    "unknown precision": ({"trainer": {"precision": "bogus"}}, "trainer.precision='bogus'"),
    "negative seed": ({"seed": -1}, "seed=-1"),
    "glob matching nothing": ({"data": {"source": "files", "files": ["/nonexistent/*.txt"]}}, "matches no file"),
    "corrupt tokenizer": ({"data": {"tokenizer": {"path": CORRUPT_TOKENIZER}}}, "is not a tokenizer.json"),
    "credentials in the URI": ({"tracking": {"uri": "http://alice:pw123@127.0.0.1:9"}}, "carries credentials"),
    "wrong attention for the objective": ({"model": {"causal": False}}, "needs model.causal=True"),
    "misspelt key": ("trainer:\n  precison: 16\n", "precison"),
    "not a mapping": ("- just\n- a list\n", "error: "),
}


@pytest.mark.parametrize("case", RUN_CASES, ids=list(RUN_CASES))
def test_studies_run_refuses_a_bad_config_before_its_run_folder_exists(workdir, case):
    from omegaconf import OmegaConf

    change, message = RUN_CASES[case]
    out = workdir / "runs" / "g" / "r"
    cfg = tiny_run_config(out, workdir / "data", tracking={"enabled": case == "credentials in the URI"})
    path = workdir / "config.yaml"
    if isinstance(change, str):
        path.write_text(change)
    else:
        path.write_text(OmegaConf.to_yaml(OmegaConf.merge(OmegaConf.create(config_yaml(cfg)), change)))
    done = subprocess.run([sys.executable, "-m", "studies.run", str(path)], cwd=workdir, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert "pw123" not in err
    assert not (workdir / "runs").exists() and not (workdir / "data").exists()


def test_studies_run_names_a_missing_config(workdir):
    done = subprocess.run([sys.executable, "-m", "studies.run", str(workdir / "nope.yaml")], cwd=workdir,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2 and done.stderr.strip() == f"error: run config {workdir / 'nope.yaml'} does not exist"


DATA_CASES = {
    "unknown source": (["-", "source=ftp"], "data.source='ftp' is not one of"),
    "unknown key": (["-", "nosuch=1"], "Key 'nosuch' not in 'DataConfig'"),
    "missing config": (["nonexistent.yaml"], "No such file or directory"),
    "glob matching nothing": (["-", "source=files", "files=[/nope/*.txt]"], "matches no file"),
}


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_studies_data_refuses_a_bad_config_before_preparing_anything(workdir, case):
    args, message = DATA_CASES[case]
    done = subprocess.run([sys.executable, "-m", "studies.data", "prepare", *args, f"cache_dir={workdir / 'cache'}"],
                          cwd=workdir, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (workdir / "cache").exists()

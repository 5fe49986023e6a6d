"""Data preparation as a stage of a launch (sweeps/preparation.py): how much a grid prepares, the epochs
and the repetition warning of the plan, the local launch preparing each dataset once before its runs, the
emitted preparation job, and a training job that refuses to prepare a hub corpus itself."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hub_corpus import TINY_TOKENS, tiny_hub_overrides, write_hub_corpus
from studies.data.config import DataConfig
from sweeps.plan import plan_grid
from sweeps.preparation import bounded_data

REPO_ROOT = Path(__file__).resolve().parents[2]
_tiny = tiny_hub_overrides


def _launch(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "sweeps" / "launch.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_a_hub_corpus_is_bounded_by_the_largest_run_unless_the_source_is_smaller_or_a_cap_is_set():
    hub = DataConfig(source="hub", name="HuggingFaceFW/fineweb-edu")
    assert bounded_data(hub, 5_000).max_tokens == 5_000
    assert bounded_data(dataclasses.replace(hub, source_tokens=4_000), 5_000).max_tokens is None  # all of it
    assert bounded_data(dataclasses.replace(hub, source_tokens=9_000), 5_000).max_tokens == 5_000
    assert bounded_data(dataclasses.replace(hub, max_tokens=1_000), 5_000).max_tokens == 1_000  # the user's cap
    assert bounded_data(dataclasses.replace(hub, max_documents=10), 5_000).max_tokens is None
    assert bounded_data(DataConfig(), 5_000) == DataConfig()  # the toy world and local files: as they are


def test_the_data_bound_comes_from_the_whole_grid_so_a_filter_changes_no_key(tmp_path):
    overrides = ["data.source=hub", "data.name=some/corpus", "budgets=[1e15,1e16]", "models=[tiny]"]
    every = plan_grid("smoke", overrides, runs_dir=str(tmp_path))
    some = plan_grid("smoke", overrides, runs_dir=str(tmp_path), only=["budget=1e15"])
    largest = max(r.budget.tokens for r in every.runs)
    assert {r.config["data"]["max_tokens"] for r in every.runs} == {largest}
    assert {r.key for r in some.runs} < {r.key for r in every.runs}


def test_scaling_1b_dry_run_shows_the_preparation_the_epochs_and_warns_past_four(tmp_path):
    table = _launch("--grid", "scaling_1b", "--dry-run", "--runs-dir", str(tmp_path), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "epochs" in out.splitlines()[1]
    assert "data preparation" in out and "HuggingFaceFW/fineweb-edu (sample-350BT)" in out and "~350B" in out
    assert "planned (a CPU job of its own; the runs wait for it)" in out
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "more than 4 epochs" in warning and "Muennighoff" in warning and "Prabhudesai" in warning
    assert "data.max_epochs_warning" in warning and "data.max_tokens" in warning

    rows = json.loads(_launch("--grid", "scaling_1b", "--dry-run", "--runs-dir", str(tmp_path), "--format", "json",
                              cwd=tmp_path).stdout)
    epochs = {r["flops_budget"]: r["epochs"] for r in rows if r["objective"] == "arm"}
    tokens = {r["flops_budget"]: r["tokens"] for r in rows if r["objective"] == "arm"}
    for budget, value in epochs.items():
        assert value == pytest.approx(tokens[budget] / 3.5e11, rel=1e-3)
    assert epochs[1e23] > 45 and epochs[1e20] < 0.1  # 17T tokens over a 350B-token sample: ~49 passes
    assert f"{sum(1 for r in rows if r['epochs'] > 4)} run(s)" in warning
    assert len({r["dataset"] for r in rows}) == 1  # ARM and MDM read one prepared dataset


def test_raising_the_threshold_silences_the_warning_without_changing_a_key(tmp_path):
    base = _launch("--grid", "scaling_1b", "--dry-run", "--format", "json", cwd=tmp_path)
    quiet = _launch("--grid", "scaling_1b", "--dry-run", "--format", "json", "data.max_epochs_warning=100",
                    cwd=tmp_path)
    assert "warning:" in base.stderr and "warning:" not in quiet.stderr
    assert [r["run_key"] for r in json.loads(base.stdout)] == [r["run_key"] for r in json.loads(quiet.stdout)]


@pytest.mark.integration
def test_a_local_launch_prepares_the_corpus_once_before_its_runs(tmp_path):
    corpus = write_hub_corpus(tmp_path / "corpus")
    args = ["--grid", "smoke", "--cluster", "local", "--only", "objective=arm", "--no-analysis", *_tiny(corpus)]
    dry = _launch(*args, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "planned (by the launch, before the runs)" in dry.stdout
    [row] = json.loads(_launch(*args, "--dry-run", "--format", "json", cwd=tmp_path).stdout)
    assert row["epochs"] == 1.0  # prepared up to what the grid's largest run reads, no more

    first = _launch(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    prepared = [p for p in (tmp_path / "runs" / "data").iterdir() if not p.name.startswith(".")]
    assert len(prepared) == 1 and prepared[0].name.startswith("hub-")
    assert f"preparing {prepared[0].name}" in first.stdout
    run_dir = next(p for p in (tmp_path / "runs" / "smoke").iterdir() if (p / "result.json").is_file())
    assert f"data {prepared[0].resolve()}" in (run_dir / "run.log").read_text()  # the run read what was prepared

    # the other objective: its dataset is ready, so nothing is prepared again, and its epochs are known now
    other = _launch("--grid", "smoke", "--cluster", "local", "--only", "objective=mdm", "--no-analysis",
                    *_tiny(corpus), cwd=tmp_path)
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert "preparing" not in other.stdout and "| ready" not in other.stdout
    assert any(line.strip().startswith(prepared[0].name) and " ready" in line for line in other.stdout.splitlines())
    meta = json.loads((prepared[0] / "metadata.json").read_text())
    assert meta["tokens"] == TINY_TOKENS  # exactly what the grid's largest run reads


def test_a_training_job_never_prepares_a_hub_corpus_and_leaves_no_mlflow_run(tmp_path, mlflow_server):
    corpus = write_hub_corpus(tmp_path / "corpus")
    plan = plan_grid("smoke", [*_tiny(corpus)[:-1], f"tracking.uri={mlflow_server.uri}", "tracking.enabled=true"],
                     runs_dir=str(tmp_path / "runs"), only=["objective=arm"])
    config = plan.runs[0].write_config()
    done = subprocess.run([sys.executable, "-m", "studies.run", str(config)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not prepared" in done.stderr and f"python -m studies.data prepare {config}" in done.stderr
    assert "lightning" not in done.stdout.lower() + done.stderr.lower().replace("is not prepared", "")
    assert not (tmp_path / "runs" / "data").exists()  # nothing was streamed or tokenized

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name(plan.grid_config.tracking.experiment or "smoke")
    runs = client.search_runs([experiment.experiment_id]) if experiment is not None else []
    assert not [r for r in runs if r.info.status == "RUNNING"]

    # the command the message names prepares exactly the dataset the run reads
    from studies.data.layout import dataset_dir
    from studies.data.prepare import is_prepared

    prepared = subprocess.run([sys.executable, "-m", "studies.data", "prepare", str(config), "--workers", "2"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr
    data = plan.runs[0].run_config.data
    assert prepared.stdout.strip().splitlines()[-1].endswith(dataset_dir(data).name)
    assert is_prepared(dataclasses.replace(data, cache_dir=str(tmp_path / data.cache_dir)))


def test_emit_sbatch_writes_the_preparation_job_and_a_submit_script_that_chains_them(tmp_path):
    corpus = write_hub_corpus(tmp_path / "corpus")
    out = _launch("--grid", "smoke", "--profile", "dev", "--emit-sbatch", str(tmp_path / "batch"), *_tiny(corpus),
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    batch = tmp_path / "batch"
    [prepare] = list(batch.glob("prepare-hub-*.sbatch"))
    text = prepare.read_text()
    assert "#SBATCH --cpus-per-task=2" in text and "#SBATCH --partition=debug" in text
    assert "gpus" not in text and "-m studies.data prepare" in text and "--workers 2" in text
    [data] = list((batch / "data").glob("hub-*.yaml"))
    assert OmegaConf.load(data).name == str(corpus)
    submit = (batch / "submit.sh").read_text()
    assert f"sbatch --parsable {prepare.name}" in submit and 'sbatch --dependency="afterok$after" --kill-on-invalid-dep=yes array.sbatch' in submit
    assert subprocess.run(["bash", "-n", str(batch / "submit.sh")]).returncode == 0
    assert f"bash {batch / 'submit.sh'}" in out.stdout
    assert not (tmp_path / "runs" / "data").exists()  # emitting prepares nothing


def test_a_profile_with_an_impossible_preparation_job_is_refused(tmp_path):
    profile = tmp_path / "bad.yaml"
    text = (REPO_ROOT / "slurm" / "clusters" / "dev.yaml").read_text().replace("  cpus: 2", "  cpus: 0")
    profile.write_text(text)
    out = _launch("--grid", "smoke", "--profile", str(profile), "--dry-run", cwd=tmp_path)
    assert out.returncode == 2 and "prepare needs cpus >= 1" in out.stderr

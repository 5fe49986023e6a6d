"""Data preparation as a job of its own on the real local cluster: a launch over a corpus in the hub's
schema submits one CPU job that prepares it and a training job that waits for it (``afterok``) and reads
what it wrote; a second grid over the same corpus prepares nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_jobs import queue_empty, scontrol_fields, wait_for

from hub_corpus import TINY_STEPS, tiny_hub_overrides, write_hub_corpus

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 300


def _tiny(corpus: Path) -> list[str]:
    return [*tiny_hub_overrides(corpus), "--only", "objective=arm", "--profile", "dev"]


def _launch(grid: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "sweeps" / "launch.py"), "--grid", grid, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def _finished(runs: Path) -> list[Path]:
    return [p.parent for p in runs.glob("*/result.json")]


def test_a_hub_corpus_is_prepared_by_one_job_that_the_training_job_waits_for(slurm_cluster, tmp_path):
    corpus = write_hub_corpus(tmp_path / "corpus", files=3, documents_per_file=400)
    launch = _launch("smoke", "--cluster", "slurm", *_tiny(corpus), cwd=tmp_path)
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    prep_id = re.search(r"submitted the preparation of (hub-\S+) .* as SLURM job (\d+)", launch.stdout)
    train_id = re.search(r"as SLURM job (\d+), after preparation job\(s\) (\d+)", launch.stdout)
    assert prep_id and train_id, launch.stdout
    dataset, prep = prep_id.group(1), prep_id.group(2)
    assert train_id.group(2) == prep
    assert launch.stdout.count("submitted the preparation of") == 1
    # the training job waits for the preparation: SLURM holds it on the dependency
    fields = scontrol_fields(train_id.group(1))
    assert f"afterok:{prep}" in fields.get("Dependency", ""), fields
    assert fields.get("JobState") == "PENDING", fields

    # a second launch while it runs submits nothing new: the job is in the queue, the run queued
    again = _launch("smoke", "--cluster", "slurm", *_tiny(corpus), cwd=tmp_path)
    assert again.returncode == 0 and "as SLURM job" not in again.stdout, again.stdout + again.stderr
    assert any(line.strip().startswith(dataset) and f"running: SLURM job {prep}" in line
               for line in again.stdout.splitlines()) or "ready" in again.stdout, again.stdout

    try:
        wait_for(lambda: queue_empty(train_id.group(1)) and queue_empty(prep), JOB_TIMEOUT_S,
                 "the preparation and the training job leaving the queue", slurm_cluster, every=2)
    finally:
        slurm_cluster.cancel(train_id.group(1))
        slurm_cluster.cancel(prep)
    folder = tmp_path / "runs" / "data" / dataset
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["source"] == "hub" and meta["tokens"] > 0
    [run] = _finished(tmp_path / "runs" / "smoke")
    assert json.loads((run / "result.json").read_text())["steps"] == TINY_STEPS
    # the run read the job's output (a training job refuses to prepare a hub corpus itself, so it could
    # not have started before the preparation finished)
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "smoke" / "sweep" / "submitit").glob("*/*_0_log.out"))
    assert f"data {folder.resolve()}" in logs

    # a second grid over the same corpus: the dataset is ready, so no preparation job
    other = tmp_path / "other.yaml"
    shutil.copyfile(REPO_ROOT / "sweeps" / "grids" / "smoke.yaml", other)
    second = _launch(str(other), "--cluster", "slurm", *_tiny(corpus), cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "submitted the preparation" not in second.stdout
    assert any(line.strip().startswith(dataset) and " ready" in line for line in second.stdout.splitlines())
    job = re.search(r"as SLURM job (\d+)", second.stdout).group(1)
    try:
        wait_for(lambda: queue_empty(job), JOB_TIMEOUT_S, "the second grid's run leaving the queue", slurm_cluster,
                 every=2)
    finally:
        slurm_cluster.cancel(job)
    assert len(_finished(tmp_path / "runs" / "other")) == 1
    assert sorted(p.name for p in (tmp_path / "runs" / "data").iterdir()) == [dataset]  # prepared once


def test_a_failed_preparation_cancels_the_runs_that_wait_for_it(slurm_cluster, tmp_path):
    corpus = tmp_path / "corpus"
    write_hub_corpus(corpus, files=2, documents_per_file=20)
    import pyarrow.parquet as pq

    for file in (corpus / "data").glob("*.parquet"):  # the documents under another column than data.text_field
        pq.write_table(pq.read_table(file).rename_columns(["content", "id", "url", "score"]), file)
    launch = _launch("smoke", "--cluster", "slurm", *_tiny(corpus), cwd=tmp_path)
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    prep = re.search(r"submitted the preparation of \S+ .* as SLURM job (\d+)", launch.stdout).group(1)
    train = re.search(r"as SLURM job (\d+), after preparation job", launch.stdout).group(1)
    try:  # the preparation fails, and SLURM cancels the run instead of holding it pending forever
        wait_for(lambda: queue_empty(train) and queue_empty(prep), JOB_TIMEOUT_S,
                 "the failed preparation and the run waiting for it leaving the queue", slurm_cluster, every=2)
    finally:
        slurm_cluster.cancel(train)
        slurm_cluster.cancel(prep)
    status = subprocess.run([sys.executable, str(REPO_ROOT / "sweeps" / "status.py"), "--grid", "smoke",
                             *_tiny(corpus), "--format", "json"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    [row] = json.loads(status.stdout)
    assert row["state"] == "failed", row
    assert not list((tmp_path / "runs" / "data").glob("hub-*/metadata.json"))
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "smoke" / "sweep" / "submitit").glob(f"{prep}/*.err"))
    assert "no text field 'text'" in logs, logs[-2000:]

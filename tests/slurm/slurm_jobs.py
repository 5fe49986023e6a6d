"""Helpers of the tests that train through SLURM: configs, CSV losses, polling."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest


def write_run_config(cfg, path: Path) -> Path:
    """Write a RunConfig the way the launcher does (``studies.config.config_yaml``)."""
    from studies.config import config_yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_yaml(cfg))
    return path


def train_losses(out_dir: Path) -> list[tuple[int, float]]:
    """(step, train/loss) rows of every attempt's CSV log (logs/version_N), in attempt order."""
    import csv

    rows = []
    versions = sorted((Path(out_dir) / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    for version in versions:
        metrics = version / "metrics.csv"
        if not metrics.is_file():
            continue
        with open(metrics, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("train/loss"):
                    rows.append((int(row["step"]), float(row["train/loss"])))
    return rows


def wait_for(condition, timeout: float, what: str, cluster=None, every: float = 0.5):
    """Poll ``condition()`` until it returns something truthy (returned); fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen after {timeout}s" + (f"\n{cluster.describe()}" if cluster else ""))
        time.sleep(every)


def queue_empty(job_id: str) -> bool:
    """True once no task of the job (or job array) is pending or running."""
    proc = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True,
                          timeout=15, check=False)
    return proc.returncode in (0, 1) and not proc.stdout.strip()


REPO_ROOT = Path(__file__).resolve().parents[2]


def render_job(config: Path, script: Path, profile: str = "dev") -> Path:
    """The sbatch script of one run, rendered from slurm/templates by ``python -m sweeps.executors.sbatch``."""
    from sweeps.executors.sbatch import main

    assert main([str(config), "--profile", profile, "-o", str(script)]) == 0
    return script


def start_local_run(config: Path, log: Path) -> subprocess.Popen:
    """``python -m studies.run CONFIG`` outside SLURM (the reference a SLURM run is compared with)."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    handle = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "studies.run", str(config)], stdout=handle,
                            stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)


def scontrol_fields(job_id: str) -> dict:
    """``scontrol show job`` of one job as a dict (empty once the job is gone)."""
    proc = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=15,
                          check=False)
    line = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0

"""Fixtures for the sweep tests: a stand-in run command for launcher bookkeeping tests (the real
``studies.run`` is exercised end to end in test_launch_local_e2e.py) and sweep-log readers."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

FAKE_RUN = textwrap.dedent(
    """
    import json, os, pathlib, sys, time
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(sys.argv[1])
    started = time.time()
    print(f"fake run {cfg.name} ({cfg.objective})", flush=True)
    if os.environ.get("FAKE_FAIL_OBJECTIVE") == cfg.objective:
        print("fake failure", file=sys.stderr, flush=True)
        sys.exit(3)
    time.sleep(float(os.environ.get("FAKE_RUN_SECONDS", "0")))
    out = pathlib.Path(cfg.out_dir)
    (out / "result.json").write_text(json.dumps({
        "name": cfg.name, "flops": cfg.budget.flops, "started": started, "ended": time.time(),
        "threads": os.environ.get("OMP_NUM_THREADS")}))
    """
)


@pytest.fixture
def fake_command(tmp_path) -> list[str]:
    """A run command that writes result.json (or exits 3 for FAKE_FAIL_OBJECTIVE) without training."""
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    return [sys.executable, str(script)]


def _read_events(runs_dir: Path, grid: str, event: str = "submitted") -> list[dict]:
    path = Path(runs_dir) / grid / "sweep" / "submissions.jsonl"
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("event") == event]


@pytest.fixture
def read_events():
    """read_events(runs_dir, grid, event="submitted") -> the sweep log's records of that event."""
    return _read_events


@pytest.fixture
def path_without_sbatch(tmp_path, monkeypatch) -> None:
    """PATH holding only a folder with python: no sbatch, no squeue."""
    bin_dir = tmp_path / "bin-no-slurm"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(bin_dir))

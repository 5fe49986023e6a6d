"""sweeps/launch.py: the plan it prints, idempotent re-launches, --retry-failed, and bad input.

Bookkeeping tests use a stand-in run command (conftest.fake_command) so they take a second; the
real ``studies.run`` goes through the same local executor in test_launch_local_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from run_configs import SMOKE_TESTED
from sweeps import launch

REPO_ROOT = Path(__file__).resolve().parents[2]

BLOCK_HEAVY = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning', 'mlflow'):
            raise ImportError(f'{name} is blocked: planning must not import it')
sys.meta_path.insert(0, Block())
sys.argv = ['sweeps/%s'] + sys.argv[1:]
try:
    runpy.run_path('sweeps/%s', run_name='__main__')
finally:
    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'mlflow', 'submitit'))
    print('HEAVY=' + ','.join(heavy), file=sys.stderr)
"""


def _script(script: str) -> str:
    return BLOCK_HEAVY % (script, script)


@pytest.mark.parametrize("script", ["launch.py", "status.py"])
def test_dry_run_and_status_import_no_torch(tmp_path, script):
    args = ["--grid", "scaling_1b", "--runs-dir", str(tmp_path)] + (["--dry-run"] if script == "launch.py" else [])
    out = subprocess.run([sys.executable, "-c", _script(script), *args], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY=\n" in out.stderr  # not torch, lightning, mlflow, nor even submitit
    assert "arm-1b" in out.stdout and "llada-1b" in out.stdout


def test_blocker_really_blocks(tmp_path):
    code = _script("launch.py").replace("runpy.run_path", "import torch; runpy.run_path")
    out = subprocess.run([sys.executable, "-c", code, "--grid", "smoke", "--dry-run"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "torch is blocked" in out.stderr


def test_launch_script_runs_from_the_repo_root(tmp_path):
    out = subprocess.run([sys.executable, "sweeps/launch.py", "--grid", "smoke", "--dry-run", "--format", "json",
                          "--runs-dir", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    required = {"run_key", "objective", "model", "non_embedding_params", "tokens", "flops_budget", "flops", "steps"}
    assert rows and all(required <= set(r) for r in rows)
    assert all(r["flops"] == pytest.approx(6 * r["non_embedding_params"] * r["tokens"]) for r in rows)
    assert not (tmp_path / "smoke").exists()  # a dry run writes nothing


def test_dry_run_table_has_every_column_and_totals(tmp_path, capsys):
    assert launch.main(["--grid", "scaling_1b", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("key"))
    assert header.split() == ["key", "objective", "model", "N", "D", "C", "steps", "D/N", "epochs", "GPU-h", "mem", "GiB",
                              "state"]
    assert "total: 14 runs" in out and "GPU-h = D x (6N + 12 n_layers L d_model)" in out
    assert "989 TFLOP/s" in out and "dry run: nothing submitted" in out


def test_relaunch_of_a_finished_local_grid_submits_nothing(tmp_path, fake_command, read_events, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--parallel", "1", "--runs-dir", str(tmp_path), *SMOKE_TESTED]
    assert launch.main(argv, command=fake_command) == 0
    submitted = read_events(tmp_path, "smoke")
    assert len(submitted) == 6 and all(e["executor"] == "local" for e in submitted)
    assert all((tmp_path / "smoke" / e["run_key"] / "result.json").is_file() for e in submitted)
    assert all((tmp_path / "smoke" / e["run_key"] / "config.yaml").is_file() for e in submitted)
    first = capsys.readouterr().out
    assert "[1/6] arm-tiny-1e+11" in first and "[6/6]" in first and "finished in" in first
    assert "fake run arm-tiny-1e+11" in first  # the run's own output is streamed live

    assert launch.main(argv, command=fake_command) == 0
    assert len(read_events(tmp_path, "smoke")) == 6
    assert "nothing to do: all 6 runs of grid smoke finished" in capsys.readouterr().out


def test_failed_run_is_resubmitted_only_with_retry_failed(tmp_path, fake_command, read_events, monkeypatch, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--runs-dir", str(tmp_path), "--only", "budget=1e11", *SMOKE_TESTED]
    monkeypatch.setenv("FAKE_FAIL_OBJECTIVE", "mdm")
    assert launch.main(argv, command=fake_command) == 1
    out = capsys.readouterr().out
    assert "mdm-tiny-1e+11 FAILED (exit code 3)" in out
    [failed] = [e for e in read_events(tmp_path, "smoke") if e["name"].startswith("mdm")]
    assert "fake failure" in Path(failed["log"]).read_text()  # stderr is in the run's log too

    monkeypatch.delenv("FAKE_FAIL_OBJECTIVE")
    assert launch.main(argv, command=fake_command) == 1  # nothing resubmitted, failure still reported
    out = capsys.readouterr().out
    assert "pass --retry-failed" in out and failed["log"] in out
    assert len(read_events(tmp_path, "smoke")) == 2

    assert launch.main(argv + ["--retry-failed"], command=fake_command) == 0
    events = read_events(tmp_path, "smoke")
    assert len(events) == 3 and events[-1]["run_key"] == failed["run_key"]
    assert launch.main(argv, command=fake_command) == 0
    assert len(read_events(tmp_path, "smoke")) == 3


def test_run_that_exits_zero_without_result_is_failed(tmp_path, read_events, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--runs-dir", str(tmp_path), "--only", "budget=1e11",
            "--only", "objective=arm", *SMOKE_TESTED]
    assert launch.main(argv, command=[sys.executable, "-c", "pass"]) == 1
    assert "without writing result.json" in capsys.readouterr().out
    assert launch.main(argv, command=[sys.executable, "-c", "pass"]) == 1
    assert len(read_events(tmp_path, "smoke")) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # bad values of a grid's config: tests/sweeps/test_bad_input.py
        (["--grid", "nope"], "unknown grid 'nope'"),
        (["--grid", "smoke", "--cluster", "slurm"], "--cluster slurm needs SLURM's sbatch on PATH"),
    ],
)
def test_bad_input_submits_nothing(tmp_path, fake_command, path_without_sbatch, capsys, args, message):
    runs = tmp_path / "runs"
    assert launch.main(args + ["--runs-dir", str(runs)], command=fake_command) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not runs.exists()


def test_profile_missing_a_field_submits_nothing(tmp_path, fake_command, capsys):
    profile = tmp_path / "p" / "broken.yaml"
    profile.parent.mkdir()
    profile.write_text("partition: debug\nnodes: 1\n")
    runs = tmp_path / "runs"
    assert launch.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", str(runs), "--profile", str(profile)],
                       command=fake_command) == 2
    assert "missing required field(s): cpus_per_task, device" in capsys.readouterr().err
    assert not runs.exists()


def test_second_local_launch_of_a_running_grid_is_refused(tmp_path, fake_command, read_events, capsys):
    import fcntl

    lock = tmp_path / "smoke" / "sweep" / "local.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a launch in progress holds it
        code = launch.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", str(tmp_path)],
                           command=fake_command)
    assert code == 2 and "another local launch of grid smoke is running" in capsys.readouterr().err
    assert read_events(tmp_path, "smoke") == []
    # nothing else either: no sweep-log record, run folder or MLflow store (hence no parent run)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.name != "fake_run.py") == ["smoke", "smoke/sweep", "smoke/sweep/local.lock"]


@pytest.mark.parametrize("script", ["launch", "status"])
def test_overrides_may_follow_options(tmp_path, capsys, script):
    """Overrides split by options plan the same runs as the overrides written together."""
    from sweeps import status

    main = launch.main if script == "launch" else status.main
    base = ["--grid", "smoke", "--runs-dir", str(tmp_path), "--format", "json"]
    base += ["--dry-run"] if script == "launch" else []

    def planned(argv):
        assert main(argv) == 0
        return sorted((run["run_key"], run["objective"], run["flops_budget"]) for run in json.loads(capsys.readouterr().out))

    together = planned(base + ["budgets=[1e12]", "seeds=[0,1]", "--only", "objective=arm"])
    split = planned(["--grid", "smoke", "budgets=[1e12]", "--only", "objective=arm", "seeds=[0,1]"] + base[2:])
    assert split == together
    assert len(split) == 2 and {run[1:] for run in split} == {("arm", 1e12)}


def test_negative_parallel_is_refused_before_anything_runs(tmp_path, fake_command, read_events, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--parallel", "-1", "--runs-dir", str(tmp_path)]
    assert launch.main(argv, command=fake_command) == 2
    assert "--parallel must be 0 (one run per core) or more" in capsys.readouterr().err
    assert read_events(tmp_path, "smoke") == []

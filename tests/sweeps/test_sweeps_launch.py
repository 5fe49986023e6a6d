"""sweeps/launch.py: the plan it prints, idempotent re-launches, --retry-failed, and bad input.

Bookkeeping tests use a stand-in run command (conftest.fake_command) so they take a second; the
real ``studies.run`` goes through the same local executor in test_launch_local_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from run_configs import SMOKE_TESTED
from small_disk import fill
from sweeps import launcher
from sweeps.submit import resolve_cluster

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
    assert launcher.main(["--grid", "scaling_1b", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("key"))
    assert header.split() == ["key", "objective", "model", "N", "D", "C", "steps", "D/N", "epochs", "GPU-h", "mem", "GiB",
                              "state"]
    assert "total: 14 runs" in out and "GPU-h = D x (6N + 12 n_layers L d_model)" in out
    assert "989 TFLOP/s" in out and "dry run: nothing submitted" in out


def test_relaunch_of_a_finished_local_grid_submits_nothing(tmp_path, fake_command, read_events, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--parallel", "1", "--runs-dir", str(tmp_path), *SMOKE_TESTED]
    assert launcher.main(argv, command=fake_command) == 0
    submitted = read_events(tmp_path, "smoke")
    assert len(submitted) == 6 and all(e["executor"] == "local" for e in submitted)
    assert all((tmp_path / "smoke" / e["run_key"] / "result.json").is_file() for e in submitted)
    assert all((tmp_path / "smoke" / e["run_key"] / "config.yaml").is_file() for e in submitted)
    first = capsys.readouterr().out
    assert "[1/6] arm-tiny-1e+11" in first and "[6/6]" in first and "finished in" in first
    assert "fake run arm-tiny-1e+11" in first  # the run's own output is streamed live

    assert launcher.main(argv, command=fake_command) == 0
    assert len(read_events(tmp_path, "smoke")) == 6
    assert "nothing to do: all 6 runs of grid smoke finished" in capsys.readouterr().out


def test_failed_run_is_resubmitted_only_with_retry_failed(tmp_path, fake_command, read_events, monkeypatch, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--runs-dir", str(tmp_path), "--only", "budget=1e11", *SMOKE_TESTED]
    monkeypatch.setenv("FAKE_FAIL_OBJECTIVE", "mdm")
    assert launcher.main(argv, command=fake_command) == 1
    out = capsys.readouterr().out
    assert "mdm-tiny-1e+11 FAILED (exit code 3)" in out
    [failed] = [e for e in read_events(tmp_path, "smoke") if e["name"].startswith("mdm")]
    assert "fake failure" in Path(failed["log"]).read_text()  # stderr is in the run's log too

    monkeypatch.delenv("FAKE_FAIL_OBJECTIVE")
    assert launcher.main(argv, command=fake_command) == 1  # nothing resubmitted, failure still reported
    out = capsys.readouterr().out
    assert "pass --retry-failed" in out and failed["log"] in out
    assert len(read_events(tmp_path, "smoke")) == 2

    assert launcher.main(argv + ["--retry-failed"], command=fake_command) == 0
    events = read_events(tmp_path, "smoke")
    assert len(events) == 3 and events[-1]["run_key"] == failed["run_key"]
    assert launcher.main(argv, command=fake_command) == 0
    assert len(read_events(tmp_path, "smoke")) == 3


def test_run_that_exits_zero_without_result_is_failed(tmp_path, read_events, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--runs-dir", str(tmp_path), "--only", "budget=1e11",
            "--only", "objective=arm", *SMOKE_TESTED]
    assert launcher.main(argv, command=[sys.executable, "-c", "pass"]) == 1
    assert "without writing result.json" in capsys.readouterr().out
    assert launcher.main(argv, command=[sys.executable, "-c", "pass"]) == 1
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
    assert launcher.main(args + ["--runs-dir", str(runs)], command=fake_command) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not runs.exists()


def test_profile_missing_a_field_submits_nothing(tmp_path, fake_command, capsys):
    profile = tmp_path / "p" / "broken.yaml"
    profile.parent.mkdir()
    profile.write_text("partition: debug\nnodes: 1\n")
    runs = tmp_path / "runs"
    assert launcher.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", str(runs), "--profile", str(profile)],
                         command=fake_command) == 2
    assert "missing required field(s): cpus_per_task, device" in capsys.readouterr().err
    assert not runs.exists()


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


def test_second_local_launch_of_a_running_grid_is_refused(tmp_path, fake_command, read_events, capsys):
    import fcntl

    lock = tmp_path / "smoke" / "sweep" / "local.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a launch in progress holds it
        code = launcher.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", str(tmp_path)],
                             command=fake_command)
    assert code == 2 and "another local launch of grid smoke is running" in capsys.readouterr().err
    assert read_events(tmp_path, "smoke") == []
    # nothing else either: no sweep-log record, run folder or MLflow store (hence no parent run)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.name != "fake_run.py") == ["smoke", "smoke/sweep", "smoke/sweep/local.lock"]


SLEEPING_RUN = """
import os, sys, time
with open(sys.argv[1], "a") as pids:
    pids.write(f"{os.getpid()}\\n")
time.sleep(120)
"""
DRIVER = """
import sys
from sweeps import launcher
sys.exit(launcher.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", sys.argv[1], "--parallel", sys.argv[4]],
                       command=[sys.executable, sys.argv[2], sys.argv[3]]))
"""


@pytest.mark.parametrize("parallel", [1, 2])
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_a_terminated_local_launch_stops_its_runs_and_records_them(tmp_path, read_events, signal_name, parallel):
    """Killing the launcher (kill, a closed terminal) stops the runs it started instead of orphaning them."""
    import os
    import signal

    run_script, driver, pid_file = tmp_path / "sleeping_run.py", tmp_path / "driver.py", tmp_path / "run.pids"
    run_script.write_text(SLEEPING_RUN)
    driver.write_text(DRIVER)
    # The run command is [python, sleeping_run.py, run.pids] + [config]: the pid file comes first.
    launch = subprocess.Popen([sys.executable, str(driver), str(tmp_path / "runs"), str(run_script), str(pid_file),
                               str(parallel)],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or len(pid_file.read_text().split()) < parallel:
        assert time.monotonic() < deadline and launch.poll() is None, "the runs never started"
        time.sleep(0.1)
    run_pids = [int(pid) for pid in pid_file.read_text().split()]
    launch.send_signal(getattr(signal, signal_name))
    output, _ = launch.communicate(timeout=60)
    assert launch.returncode != 0
    assert output.count("interrupted; the sweep stops here") == parallel
    assert len(run_pids) == parallel
    for pid in run_pids:
        with pytest.raises(ProcessLookupError):  # the run is gone (and reaped by the launcher)
            os.kill(pid, 0)
    exits = read_events(tmp_path / "runs", "smoke", "exited")
    assert len(exits) == parallel and {e["returncode"] for e in exits} == {-2}


@pytest.mark.parametrize("script", ["launch", "status"])
def test_overrides_may_follow_options(tmp_path, capsys, script):
    """Overrides split by options plan the same runs as the overrides written together."""
    from sweeps import status

    main = launcher.main if script == "launch" else status.main
    base = ["--grid", "smoke", "--runs-dir", str(tmp_path), "--format", "json"]
    base += ["--dry-run"] if script == "launch" else []

    def planned(argv):
        assert main(argv) == 0
        return sorted((run["run_key"], run["objective"], run["flops_budget"]) for run in json.loads(capsys.readouterr().out))

    together = planned(base + ["budgets=[1e12]", "seeds=[0,1]", "--only", "objective=arm"])
    split = planned(["--grid", "smoke", "budgets=[1e12]", "--only", "objective=arm", "seeds=[0,1]"] + base[2:])
    assert split == together
    assert len(split) == 2 and {run[1:] for run in split} == {("arm", 1e12)}


LIVE_BAR_RUN = """
import sys
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

with Progress(TextColumn("Epoch 0"), BarColumn(), MofNCompleteColumn()) as progress:
    task = progress.add_task("train", total=20)
    for _ in range(20):
        progress.update(task, advance=1, refresh=True)
"""


def test_a_local_run_draws_its_progress_bar_live_into_the_pipe(tmp_path, capsys):
    """The run writes into a pipe; its rich bar (Lightning's) still updates step by step, on this
    terminal and in run.log, instead of appearing once at the end."""
    script = tmp_path / "bar.py"
    script.write_text(LIVE_BAR_RUN)
    argv = ["--grid", "smoke", "--runs-dir", str(tmp_path), "--only", "objective=arm", "--only", "budget=1e11",
            "--no-analysis", "--cluster", "local"]
    launcher.main(argv + SMOKE_TESTED, command=[sys.executable, str(script)])
    [log] = (tmp_path / "smoke").glob("*/run.log")
    text = log.read_text()
    assert "10/20" in text and "20/20" in text


def test_parallel_local_runs_share_the_cores_and_start_largest_first(tmp_path, fake_command, read_events,
                                                                    monkeypatch, capsys):
    from sweeps.local import cpu_count

    monkeypatch.setenv("FAKE_RUN_SECONDS", "1.5")
    argv = ["--grid", "smoke", "--cluster", "local", "--parallel", "2", "--runs-dir", str(tmp_path),
            "--no-analysis", *SMOKE_TESTED]
    assert launcher.main(argv, command=fake_command) == 0
    out = capsys.readouterr().out
    assert "6 runs, 2 at a time" in out and "fake run" not in out  # run output goes to each run.log only
    results = [json.loads(p.read_text()) for p in (tmp_path / "smoke").glob("*/result.json")]
    assert len(results) == 6
    assert {r["threads"] for r in results} == {str(max(1, cpu_count() // 2))}
    by_start = sorted(results, key=lambda r: r["started"])
    # the two largest runs start together, first; at most two runs overlap at any moment
    assert {r["flops"] for r in by_start[:2]} == {max(r["flops"] for r in results)}
    assert by_start[1]["started"] < by_start[0]["ended"]
    for r in results:
        overlapping = [o for o in results if o["started"] < r["started"] < o["ended"]]
        assert len(overlapping) <= 1
    for log in (tmp_path / "smoke").glob("*/run.log"):
        assert "fake run" in log.read_text()
    assert len(read_events(tmp_path, "smoke", "exited")) == 6


def test_negative_parallel_is_refused_before_anything_runs(tmp_path, fake_command, read_events, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--parallel", "-1", "--runs-dir", str(tmp_path)]
    assert launcher.main(argv, command=fake_command) == 2
    assert "--parallel must be 0 (one run per core) or more" in capsys.readouterr().err
    assert read_events(tmp_path, "smoke") == []


PTY_DRIVER = """
import sys
from sweeps import launcher
sys.exit(launcher.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", sys.argv[1], "--parallel", "2",
                        "--only", "budget=1e11", "--no-analysis", "models=[tiny]", "budgets=[1e11,3e11,1e12]"],
                       command=[sys.executable, sys.argv[2]]))
"""


def test_parallel_progress_is_one_line_redrawn_in_place_on_a_terminal(tmp_path, fake_command):
    """On a terminal the running runs' progress is a single line rewritten in place, cleared before
    each start or finish line, so the terminal does not fill with progress lines."""
    import os
    import pty

    driver = tmp_path / "driver.py"
    driver.write_text(PTY_DRIVER)
    primary, secondary = pty.openpty()
    # 8 s runs and a redraw every 2 s: three redraws on an idle machine, two even if the loop stalls 2 s
    env = {**os.environ, "FAKE_RUN_SECONDS": "8", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, str(driver), str(tmp_path / "runs"), fake_command[1]], cwd=REPO_ROOT,
                            stdin=secondary, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the launcher exited
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=60) == 0
    text = output.decode()
    redraws = text.count("\r\x1b[K  running: ")
    assert redraws >= 2
    assert "\n  running: " not in text  # never a progress line of its own
    # a finish line after a shown progress line first clears it
    assert "\r\x1b[K[1/2] arm-tiny-1e+11 finished in" in text or "\r\x1b[K[2/2] mdm-tiny-1e+11 finished in" in text
    assert text.count("finished in") == 2


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_full_disk_fails_the_runs_not_the_launcher(small_disk, fake_command, capsys, parallel):
    runs = small_disk / "runs"
    argv = ["--grid", "smoke", "--cluster", "local", "--runs-dir", str(runs), "--only", "budget=1e11",
            "--parallel", str(parallel), "tracking.enabled=false", *SMOKE_TESTED]
    filler = fill(small_disk)
    assert launcher.main(argv, command=fake_command) == 1  # no traceback: each run fails with the reason
    out = capsys.readouterr().out
    assert out.count("FAILED: could not start") == 2 and "No space left on device" in out
    assert "local sweep done: 0 finished, 2 failed" in out
    filler.unlink()  # the disk is freed: the same launch now runs both
    assert launcher.main(argv, command=fake_command) == 0
    assert "local sweep done: 2 finished, 0 failed" in capsys.readouterr().out

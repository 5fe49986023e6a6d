"""sweeps/executors/local.py: runs as subprocesses of this machine, one at a time with their output
streamed live, or several at once sharing the cores, largest first; a full disk fails runs, not the
launch.

Each test launches the smoke grid through ``sweeps.launch.main`` with a stand-in run command
(conftest.fake_command) or a small script.
"""

from __future__ import annotations

import json
import sys

import pytest

from run_configs import SMOKE_TESTED
from small_disk import fill
from sweeps import launch


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
    launch.main(argv + SMOKE_TESTED, command=[sys.executable, str(script)])
    [log] = (tmp_path / "smoke").glob("*/run.log")
    text = log.read_text()
    assert "10/20" in text and "20/20" in text


def test_parallel_local_runs_share_the_cores_and_start_largest_first(tmp_path, fake_command, read_events,
                                                                    monkeypatch, capsys):
    from sweeps.executors.local import cpu_count

    monkeypatch.setenv("FAKE_RUN_SECONDS", "1.5")
    argv = ["--grid", "smoke", "--cluster", "local", "--parallel", "2", "--runs-dir", str(tmp_path),
            "--no-analysis", *SMOKE_TESTED]
    assert launch.main(argv, command=fake_command) == 0
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


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_full_disk_fails_the_runs_not_the_launcher(small_disk, fake_command, capsys, parallel):
    runs = small_disk / "runs"
    argv = ["--grid", "smoke", "--cluster", "local", "--runs-dir", str(runs), "--only", "budget=1e11",
            "--parallel", str(parallel), "tracking.enabled=false", *SMOKE_TESTED]
    filler = fill(small_disk)
    assert launch.main(argv, command=fake_command) == 1  # no traceback: each run fails with the reason
    out = capsys.readouterr().out
    assert out.count("FAILED: could not start") == 2 and "No space left on device" in out
    assert "local sweep done: 0 finished, 2 failed" in out
    filler.unlink()  # the disk is freed: the same launch now runs both
    assert launch.main(argv, command=fake_command) == 0
    assert "local sweep done: 2 finished, 0 failed" in capsys.readouterr().out

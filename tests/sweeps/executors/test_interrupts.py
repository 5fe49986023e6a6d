"""sweeps/executors/interrupts.py: a local launch stopped by a signal stops the runs it started and
records them, instead of leaving them running on their own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]

SLEEPING_RUN = """
import os, sys, time
with open(sys.argv[1], "a") as pids:
    pids.write(f"{os.getpid()}\\n")
time.sleep(120)
"""
# The guard matters: data preparation's worker pool imports the main module afresh in each worker.
DRIVER = """
import sys
from sweeps import launch
if __name__ == "__main__":
    sys.exit(launch.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", sys.argv[1], "--parallel", sys.argv[4]],
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
    launcher = subprocess.Popen([sys.executable, str(driver), str(tmp_path / "runs"), str(run_script), str(pid_file),
                                 str(parallel)],
                                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or len(pid_file.read_text().split()) < parallel:
        if launcher.poll() is not None or time.monotonic() > deadline:
            launcher.kill()
            pytest.fail(f"the runs never started; the launch printed:\n{launcher.communicate()[0]}")
        time.sleep(0.1)
    run_pids = [int(pid) for pid in pid_file.read_text().split()]
    launcher.send_signal(getattr(signal, signal_name))
    output, _ = launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    assert output.count("interrupted; the sweep stops here") == parallel
    assert len(run_pids) == parallel
    for pid in run_pids:
        with pytest.raises(ProcessLookupError):  # the run is gone (and reaped by the launcher)
            os.kill(pid, 0)
    exits = read_events(tmp_path / "runs", "smoke", "exited")
    assert len(exits) == parallel and {e["returncode"] for e in exits} == {-2}

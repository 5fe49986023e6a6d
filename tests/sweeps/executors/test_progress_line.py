"""sweeps/executors/progress_line.py: on a terminal, a parallel local sweep's progress is one line
redrawn in place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

# The guard matters: data preparation's worker pool imports the main module afresh in each worker.
PTY_DRIVER = """
import sys
from sweeps import launch
if __name__ == "__main__":
    sys.exit(launch.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", sys.argv[1], "--parallel", "2",
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

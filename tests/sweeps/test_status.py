"""sweeps/status.py: where the runs of a grid stand, as a table or JSON, around a corrupt sweep log."""

from __future__ import annotations

import json

from run_configs import SMOKE_TESTED
from sweeps import launch, status
from sweeps.plan import plan_grid
from sweeps.sweep_log import SweepLog


def _rows(capsys) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def test_status_after_a_partly_failed_local_launch(tmp_path, fake_command, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL_OBJECTIVE", "mdm")
    launch.main(["--grid", "smoke", "--cluster", "local", "--runs-dir", str(tmp_path), "--only", "budget=1e11",
                 *SMOKE_TESTED],
                command=fake_command)
    capsys.readouterr()
    assert status.main(["--grid", "smoke", "--runs-dir", str(tmp_path), "--format", "json", *SMOKE_TESTED]) == 0
    rows = _rows(capsys)
    assert rows["arm-tiny-1e+11"]["state"] == "finished"
    failed = rows["mdm-tiny-1e+11"]
    assert failed["state"] == "failed" and "exited with code 3" in failed["detail"]
    assert failed["log"].endswith("run.log") and "fake failure" in open(failed["log"]).read()
    assert {rows[n]["state"] for n in rows if "1e+11" not in n} == {"planned"}

    assert status.main(["--grid", "smoke", "--runs-dir", str(tmp_path), *SMOKE_TESTED]) == 0
    table = capsys.readouterr().out
    assert "1 finished, 1 failed, 4 planned" in table and failed["log"] in table


CORRUPT_LINES = {
    "a JSON array": b"[1, 2, 3]\n",
    "a JSON string": b"\"submitted\"\n",
    "a submission without job_id": b'{"event": "submitted", "run_key": "K", "executor": "local"}\n',
    "bytes that are not UTF-8": b"\xff\xfe\x00garbage\n",
    "a line cut short": b'{"event": "submitted", "run_key": "ab',
}


def test_a_corrupt_sweep_log_is_read_around_never_a_traceback(tmp_path, fake_command, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--runs-dir", str(tmp_path), "--only", "budget=1e11",
            "--no-analysis", *SMOKE_TESTED]
    assert launch.main(argv, command=fake_command) == 0
    path = SweepLog(plan_grid("smoke", SMOKE_TESTED, runs_dir=str(tmp_path)).sweep_dir).path
    with open(path, "ab") as f:
        for line in CORRUPT_LINES.values():
            f.write(line)
    capsys.readouterr()
    assert status.main(["--grid", "smoke", "--runs-dir", str(tmp_path), *SMOKE_TESTED]) == 0
    captured = capsys.readouterr()
    assert "2 finished, 4 planned" in captured.out
    assert f"{len(CORRUPT_LINES)} line(s) that are not sweep records were skipped" in captured.err
    assert launch.main(argv, command=fake_command) == 0  # finished runs found; nothing resubmitted
    assert "nothing to do" in capsys.readouterr().out


def test_status_of_a_bad_grid_is_an_error(tmp_path, capsys):
    assert status.main(["--grid", "smok", "--runs-dir", str(tmp_path)]) == 2
    assert "Did you mean smoke" in capsys.readouterr().err

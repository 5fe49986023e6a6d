"""The sweep folder's lab notebook: an append-only JSONL of every submission and every local exit.

``<runs_dir>/<grid>/sweep/submissions.jsonl`` holds one JSON object per line:

- ``{"event": "submitted", "run_key", "name", "job_id", "executor", "time", "log", ...}`` when a run
  is handed to an executor (a SLURM job id such as ``1234_0``, or ``local-<host>-<pid>``);
- ``{"event": "exited", "run_key", "job_id", "returncode", "elapsed_s", "time"}`` when a local run's
  process ends (SLURM jobs report through submitit's files and ``squeue`` instead).

Lines are only ever appended, so the history of a grid (retries included) stays readable. Reading
is defensive: a line that is not a record (cut short by a crash, edited by hand, not UTF-8, a JSON
value that is not an object, a submission without its job id) is skipped and counted, never fatal.

A local run's record also holds ``process``, the identity of its process (boot id and start time):
a PID alone may belong to an unrelated process after the run died, and must not keep it "running".
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

SUBMISSIONS = "submissions.jsonl"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Submission:
    """The latest submission of one run, with its exit when the executor reported one."""

    run_key: str
    job_id: str
    executor: str
    time: str
    record: dict
    exit: Optional[dict] = None
    attempts: int = 1


REQUIRED = {"submitted": ("run_key", "job_id", "executor"), "exited": ("run_key", "job_id")}


def _record(line: str) -> Optional[dict]:
    """The record on one line, or None when the line is not a usable record."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    needed = REQUIRED.get(rec.get("event"), ())
    if not all(isinstance(rec.get(name), str) and rec[name] for name in needed):
        return None
    return rec


def process_identity(pid: int) -> Optional[str]:
    """``boot-id:start-time`` of a live process (Linux /proc), None where it cannot be read.

    A PID is reused once its process is gone; the start time (clock ticks since boot) together with
    the boot id names one process for good."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start_ticks = f.read().rsplit(") ", 1)[1].split()[19]
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}:{start_ticks}"


@dataclass
class SweepLog:
    sweep_dir: Path
    skipped: int = field(default=0, init=False)  # unusable lines seen by the last read

    @property
    def path(self) -> Path:
        return Path(self.sweep_dir) / SUBMISSIONS

    def append(self, record: dict) -> dict:
        record = {"time": now(), **record}
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return record

    def submitted(self, run_key: str, name: str, job_id: str, executor: str, **extra) -> dict:
        return self.append(
            {"event": "submitted", "run_key": run_key, "name": name, "job_id": job_id, "executor": executor, **extra}
        )

    def exited(self, run_key: str, job_id: str, returncode: int, elapsed_s: float) -> dict:
        return self.append(
            {"event": "exited", "run_key": run_key, "job_id": job_id, "returncode": returncode,
             "elapsed_s": round(elapsed_s, 3)}
        )

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        self.skipped = 0
        for line in self.path.read_bytes().decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            rec = _record(line)
            if rec is None:
                self.skipped += 1  # the rest of the history stays readable
            else:
                out.append(rec)
        return out

    def skipped_note(self) -> str | None:
        """The note that the last read skipped lines, or None when it skipped none."""
        if not self.skipped:
            return None
        return f"note: {self.path}: {self.skipped} line(s) that are not sweep records were skipped"

    def latest(self) -> dict[str, Submission]:
        """The last submission of every run key, joined with its exit record if there is one."""
        return latest_submissions(self.records())


def latest_submissions(records: Iterable[dict]) -> dict[str, Submission]:
    """The last submission of every run key in ``records`` (``SweepLog.records``), joined with its exit
    record if there is one."""
    latest: dict[str, Submission] = {}
    attempts: dict[str, int] = {}
    for rec in records:
        key = rec.get("run_key")
        if rec.get("event") == "submitted":
            attempts[key] = attempts.get(key, 0) + 1
            latest[key] = Submission(key, rec["job_id"], rec["executor"], str(rec.get("time", "")), rec, None,
                                     attempts[key])
        elif rec.get("event") == "exited" and key in latest and latest[key].job_id == rec.get("job_id"):
            latest[key].exit = rec
    return latest


def local_job_id(pid: int) -> str:
    return f"local-{socket.gethostname()}-{pid}"


__all__ = ["SUBMISSIONS", "Submission", "SweepLog", "latest_submissions", "local_job_id", "now", "process_identity"]

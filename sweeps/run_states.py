"""Where each run of a plan stands: planned, queued, running, finished, failed (or unknown).

Evidence, strongest first:

1. ``<out_dir>/result.json`` exists: the run finished (``studies.run`` writes it last).
2. The sweep log's latest submission of the run key:
   - local: an ``exited`` record with a non-zero code (or zero without result.json) is a failure;
     no exit record and a live process on this host is running; a vanished process is a failure.
   - SLURM: ``squeue`` lists the job (pending: queued; running: running); otherwise submitit's result
     pickle tells a raised exception (failed); a job gone from the queue without a result failed.
3. No submission: planned.

Reads files and calls ``squeue`` at most once; imports no torch and no submitit.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence

from studies.config import RESULT_FILE
from sweeps.sweep_log import Submission, SweepLog, latest_submissions, process_identity

RUNNING_SLURM = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING"}
# The training bar of Lightning: tqdm ("Epoch 0:  45%|###  | 45/100 [") or rich ("Epoch 0/-2 ━━ 45/100 0:01:02").
_BAR = re.compile(rb"Epoch \d+[^\r\n]*?\b(\d+)/(\d+)\b")


@dataclass
class RunStatus:
    state: str
    job_id: Optional[str] = None
    executor: Optional[str] = None
    log: Optional[str] = None
    progress: Optional[str] = None
    detail: str = ""
    attempts: int = 0


def log_progress(log: Optional[str], steps: Optional[int] = None) -> Optional[str]:
    """The last ``done/total`` of a Lightning progress bar in the log's tail, e.g. ``45/100 (45%)``."""
    if not log or not os.path.isfile(log):
        return None
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 8192))
            tail = f.read()
    except OSError:
        return None
    hits = _BAR.findall(tail)
    if not hits:
        return None
    done, total = (int(x) for x in hits[-1])
    total = steps or total
    return f"{done}/{total} ({done / total:.0%})" if total else None


def squeue_states(job_ids: Iterable[str]) -> Optional[dict[str, str]]:
    """SLURM state of each listed job still in the queue (array tasks one by one); None without squeue."""
    ids = sorted({j for j in job_ids if j})
    if not ids or shutil.which("squeue") is None:
        return None if ids else {}
    parents = sorted({j.split("_")[0] for j in ids})
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(parents)],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _local_status(sub: Submission, out_dir: Path, steps: int) -> RunStatus:
    base = dict(job_id=sub.job_id, executor="local", log=sub.record.get("log"), attempts=sub.attempts)
    if sub.exit is not None:
        code = sub.exit.get("returncode")
        why = f"exited with code {code}" if code else f"exited without writing {RESULT_FILE}"
        return RunStatus("failed", detail=why, **base)
    pid, host = sub.record.get("pid"), sub.record.get("host")
    if host != socket.gethostname():
        return RunStatus("unknown", detail=f"started on host {host}; cannot check its process from here", **base)
    recorded = sub.record.get("process")  # absent from records written before it was kept
    if isinstance(pid, int) and _pid_alive(pid) and (recorded is None or process_identity(pid) == recorded):
        return RunStatus("running", progress=log_progress(base["log"], steps), **base)
    return RunStatus("failed", detail="its process ended without an exit record (killed?)", **base)


def _slurm_status(sub: Submission, queue: Optional[dict[str, str]], steps: int) -> RunStatus:
    base = dict(job_id=sub.job_id, executor="slurm", log=sub.record.get("log"), attempts=sub.attempts)
    if queue is not None and sub.job_id in queue:
        slurm_state = queue[sub.job_id]
        if slurm_state in RUNNING_SLURM:
            return RunStatus("running", progress=log_progress(base["log"], steps), detail=slurm_state, **base)
        return RunStatus("queued", detail=slurm_state, **base)
    outcome = _submitit_outcome(sub.record.get("result_pickle"))
    if outcome is not None:
        kind, payload = outcome
        if kind == "error":
            last = str(payload).strip().splitlines()[-1:] or [""]
            return RunStatus("failed", detail=f"raised: {last[0][:160]}", **base)
        return RunStatus("failed", detail=f"job succeeded but wrote no {RESULT_FILE}", **base)
    if queue is None:
        return RunStatus("unknown", detail="squeue is not available here", **base)
    return RunStatus("failed", detail="left the SLURM queue without a result (cancelled, timed out or node failure)", **base)


def _submitit_outcome(path: Optional[str]):
    """submitit writes ("success", value) or ("error", traceback string) to its result pickle."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            outcome = pickle.load(f)
    except Exception:  # noqa: BLE001 - a half-written or unreadable pickle tells us nothing
        return None
    return tuple(outcome) if isinstance(outcome, (tuple, list)) and len(outcome) == 2 else None


def run_states(runs, latest: dict[str, Submission]) -> dict[str, RunStatus]:
    """Status of every planned run (``sweeps.plan.PlannedRun``), keyed by run key."""
    slurm_ids = [latest[r.key].job_id for r in runs if r.key in latest and latest[r.key].executor == "slurm"]
    queue = squeue_states(slurm_ids) if slurm_ids else {}
    out: dict[str, RunStatus] = {}
    for run in runs:
        sub = latest.get(run.key)
        if run.done():  # result.json; a trunk segment (sweeps.branching): its branch checkpoint
            out[run.key] = RunStatus(
                "finished",
                job_id=sub.job_id if sub else None,
                executor=sub.executor if sub else None,
                log=sub.record.get("log") if sub else None,
                attempts=sub.attempts if sub else 0,
            )
        elif sub is None:
            out[run.key] = RunStatus("planned")
        elif sub.executor == "local":
            out[run.key] = _local_status(sub, run.out_dir, run.budget.steps)
        else:
            out[run.key] = _slurm_status(sub, queue, run.budget.steps)
    return out


class PlanStates(NamedTuple):
    log: SweepLog
    records: list[dict]  # the sweep log's records, read once
    latest: dict[str, Submission]  # the last submission of every run key in the log
    states: dict[str, RunStatus]  # by run key: the plan's runs and the parts asked for


def plan_states(plan, say, parts: Sequence = ()) -> PlanStates:
    """The plan's sweep log read once, and the status of the plan's runs and of ``parts`` (a branched
    grid's trunk segments), for which ``squeue`` is asked once. ``say`` gets the log's note on skipped
    lines."""
    log = SweepLog(plan.sweep_dir)
    records = log.records()
    note = log.skipped_note()
    if note:
        say(note)
    latest = latest_submissions(records)
    return PlanStates(log, records, latest, run_states([*plan.runs, *parts], latest))


__all__ = ["PlanStates", "RunStatus", "log_progress", "plan_states", "run_states", "squeue_states"]

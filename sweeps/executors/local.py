"""The local executor: planned runs as subprocesses of this machine, one or several at a time.

``python -m studies.run <out_dir>/config.yaml`` per run, with the resolved config written first and
every start and exit recorded in the sweep log (``sweeps.sweep_log``) so that a re-launch knows what
exists. Each run's output goes to ``<out_dir>/run.log``.

- One run at a time: its output also streams live to this terminal, Lightning's progress bar
  included, and the run may use every core.
- ``parallel`` runs at a time: the cores are shared out (``OMP_NUM_THREADS`` = cores // parallel),
  the largest runs start first (so the sweep ends with small runs filling the gaps), and this
  terminal gets a line per start and exit plus a line, redrawn every few seconds, with each running
  run's progress as read from its log (``sweeps.executors.progress_line``). Small CPU models gain:
  two one-thread runs of the smoke grid's model train about 1.3 times as many tokens per second as
  one two-thread run.

A run may wait for another (``after``: a branch for its trunk segment, a segment for the one before
it, ``sweeps.branching``); it starts as soon as that one finished, and fails without starting when
that one failed.

Ctrl-C, SIGTERM or SIGHUP stop every running run (each recorded as failed with exit code -2) and
the sweep (``sweeps.executors.interrupts``). A failed run does not stop the sweep; its exit code is
recorded and reported.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional, Sequence

from studies.config import RESULT_FILE
from sweeps.executors.interrupts import Interrupts
from sweeps.executors.progress_line import ProgressLine
from sweeps.run_command import RUN_COMMAND, with_repo_on_path
from sweeps.run_states import log_progress
from sweeps.sweep_log import SweepLog, local_job_id, process_identity


@dataclass
class LocalOutcome:
    run_key: str
    name: str
    returncode: int
    elapsed_s: float
    log: Path
    finished: bool  # exit code 0 and result.json written


def cpu_count() -> int:
    """Cores this process may use (its affinity mask, as a container or ``taskset`` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_parallel(parallel: int, runs: int) -> int:
    """How many runs go at once: ``parallel`` (0 = one per core), never more than there are runs."""
    if parallel < 0:
        raise ValueError(f"parallel runs must be 0 (one per core) or more, got {parallel}")
    wanted = parallel or cpu_count()
    return max(1, min(wanted, runs))


def _env(threads: Optional[int]) -> dict:
    env = with_repo_on_path(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The run writes into a pipe or file, where rich (which draws Lightning's bar) would print the bar
    # once, at the end. These make it draw live, at this terminal's width; the bar's last state in
    # run.log is also where sweeps/status.py reads a running local run's progress.
    env.update(TTY_COMPATIBLE="1", TTY_INTERACTIVE="1",
               COLUMNS=os.environ.get("COLUMNS") or str(shutil.get_terminal_size().columns))
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def _fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class _Started:
    """One run's subprocess, from its start to its exit record."""

    def __init__(self, run, index: int, total: int, log: SweepLog, command: Sequence[str], env: dict,
                 stdout, say):
        self.run, self.index, self.total, self.log, self.say = run, index, total, log, say
        self.label = f"[{index}/{total}] {run.name}"
        config = run.write_config()
        self.log_path = run.out_dir / "run.log"
        say(f"{self.label} ({run.key}) ... running; log: {self.log_path}", flush=True)
        self.start = time.monotonic()
        self.proc = subprocess.Popen([*command, str(config), *run.extra_args], stdout=stdout, stderr=subprocess.STDOUT,
                                     env=env, cwd=os.getcwd())
        self.job_id = local_job_id(self.proc.pid)
        try:
            log.submitted(run.key, run.name, self.job_id, "local", pid=self.proc.pid, host=socket.gethostname(),
                          process=process_identity(self.proc.pid), log=str(self.log_path), config=str(config))
        except OSError as error:  # a full disk: the run goes on, unrecorded; its result.json still counts
            say(f"{self.label}: its start could not be recorded in {log.path} ({error})", flush=True)

    def progress(self) -> str:
        return f"{self.run.name} {log_progress(str(self.log_path), self.run.budget.steps) or 'starting'}"

    def stop(self) -> None:
        """Terminate (then kill) the run and record it as interrupted."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.exited(self.run.key, self.job_id, -2, time.monotonic() - self.start)
        self.say(f"{self.label} interrupted; the sweep stops here", flush=True)

    def finish(self, code: int) -> LocalOutcome:
        elapsed = time.monotonic() - self.start
        try:
            self.log.exited(self.run.key, self.job_id, code, elapsed)
        except OSError as error:  # a full disk must not stop the sweep; status reads the run folder
            self.say(f"{self.label}: its exit could not be recorded in {self.log.path} ({error})", flush=True)
        finished = code == 0 and self.run.done()
        if finished:
            self.say(f"{self.label} finished in {_fmt_seconds(elapsed)}", flush=True)
        elif code == 0:
            output = "its branch checkpoint" if self.run.role == "segment" else RESULT_FILE
            self.say(f"{self.label} FAILED: exited 0 without writing {output} after "
                     f"{_fmt_seconds(elapsed)}; log: {self.log_path}", flush=True)
        else:
            self.say(f"{self.label} FAILED (exit code {code}) after {_fmt_seconds(elapsed)}; "
                     f"log: {self.log_path}", flush=True)
        return LocalOutcome(self.run.key, self.run.name, code, elapsed, self.log_path, finished)


def _not_started(run, index: int, total: int, error, say) -> LocalOutcome:
    """A run whose folder, config or log could not be written (a full disk), or whose prerequisite
    failed: failed, the sweep goes on."""
    say(f"[{index}/{total}] {run.name} FAILED: could not start ({error})", flush=True)
    return LocalOutcome(run.key, run.name, -1, 0.0, run.out_dir / "run.log", False)


def _blocked(run, after: dict, outcomes_by_key: dict) -> str | None:
    """Why ``run`` cannot start (its prerequisite failed), or None."""
    needed = after.get(run.key)
    if needed is not None and needed in outcomes_by_key and not outcomes_by_key[needed].finished:
        return f"{outcomes_by_key[needed].name} failed before it"
    return None


def _take_next(queue: list, after: dict, outcomes_by_key: dict):
    """Remove and return the first queued ``(index, run)`` whose prerequisite has ended, with why it
    cannot start (None when it can); ``(None, None)`` when every queued run waits for a running one."""
    for item in queue:
        needed = after.get(item[1].key)
        if needed is None or needed in outcomes_by_key:
            queue.remove(item)
            return item, _blocked(item[1], after, outcomes_by_key)
    return None, None


def run_local(
    runs: Sequence,
    log: SweepLog,
    *,
    command: Sequence[str] = RUN_COMMAND,
    stream: Optional[IO[bytes]] = None,
    say=print,
    parallel: int = 1,
    after: Optional[dict] = None,
) -> list[LocalOutcome]:
    """Run ``command + [config] + run.extra_args`` for every run, ``parallel`` at a time (0 = one per
    core). ``after`` maps a run key to the key of the run it waits for; ``runs`` lists that one first."""
    interrupts = Interrupts()
    keys = {run.key for run in runs}
    after = {k: v for k, v in (after or {}).items() if v in keys}  # a prerequisite done already: none
    with interrupts.installed():
        parallel = resolve_parallel(parallel, len(runs))
        if parallel == 1:
            return _one_at_a_time(runs, log, command, stream, say, interrupts, after)
        return _side_by_side(runs, log, command, stream, say, parallel, interrupts, after)


def _one_at_a_time(runs, log, command, stream, say, interrupts: Interrupts, after: dict) -> list[LocalOutcome]:
    """Each run's output is teed to its run.log and to ``stream`` (this terminal), live."""
    stream = stream if stream is not None else sys.stdout.buffer
    outcomes: list[LocalOutcome] = []
    by_key: dict[str, LocalOutcome] = {}
    env = _env(threads=None)
    for index, run in enumerate(runs, 1):
        blocked = _blocked(run, after, by_key)
        if blocked:
            outcomes.append(by_key.setdefault(run.key, _not_started(run, index, len(runs), blocked, say)))
            continue
        try:
            run.out_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(run.out_dir / "run.log", "ab")
        except OSError as error:
            outcomes.append(_not_started(run, index, len(runs), error, say))
            continue
        with log_file:
            started = None
            try:
                with interrupts.deferred():
                    started = _Started(run, index, len(runs), log, command, env, subprocess.PIPE, say)
                while True:
                    chunk = os.read(started.proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    if log_file is not None:
                        try:
                            log_file.write(chunk)
                            log_file.flush()
                        except OSError as error:  # a full disk: the terminal still gets the output
                            say(f"\n[{index}/{len(runs)}] {run.name}: run.log stopped ({error})", flush=True)
                            log_file = None
                    stream.write(chunk)
                    stream.flush()
                code = started.proc.wait()
            except KeyboardInterrupt:
                if started is not None:
                    started.stop()
                raise
            except OSError as error:
                if started is not None:
                    raise
                outcomes.append(by_key.setdefault(run.key, _not_started(run, index, len(runs), error, say)))
                continue
        outcomes.append(by_key.setdefault(run.key, started.finish(code)))
    return outcomes


def _side_by_side(runs, log, command, stream, say, parallel: int, interrupts: Interrupts,
                  after: dict) -> list[LocalOutcome]:
    """``parallel`` runs at once, largest first (runs others wait for before all), each writing to
    its own run.log; a run whose prerequisite has not finished waits."""
    env = _env(threads=max(1, cpu_count() // parallel))
    awaited = set(after.values())
    queue = sorted(enumerate(runs, 1), key=lambda item: (item[1].key not in awaited, -item[1].budget.flops))
    by_key: dict[str, LocalOutcome] = {}
    line = ProgressLine(stream if stream is not None else sys.stdout.buffer, say)
    line.say(f"running {len(runs)} runs, {parallel} at a time with {env['OMP_NUM_THREADS']} thread(s) each, "
             "largest first; each run's output goes to its log", flush=True)
    active: list[tuple[_Started, IO[bytes]]] = []
    outcomes: dict[int, LocalOutcome] = {}
    next_report = time.monotonic() + line.every
    try:
        while queue or active:
            while len(active) < parallel:
                item, blocked = _take_next(queue, after, by_key)
                if item is None:
                    break
                index, run = item
                if blocked:
                    outcomes[index] = by_key[run.key] = _not_started(run, index, len(runs), blocked, line.say)
                    continue
                handle = None
                try:
                    run.out_dir.mkdir(parents=True, exist_ok=True)
                    with interrupts.deferred():
                        handle = open(run.out_dir / "run.log", "ab")
                        active.append((_Started(run, index, len(runs), log, command, env, handle, line.say), handle))
                except OSError as error:
                    if handle is not None:
                        handle.close()
                    outcomes[index] = by_key[run.key] = _not_started(run, index, len(runs), error, line.say)
            time.sleep(0.2)
            for item in list(active):
                started, handle = item
                code = started.proc.poll()
                if code is not None:
                    handle.close()
                    active.remove(item)
                    outcomes[started.index] = by_key[started.run.key] = started.finish(code)
            if active and time.monotonic() >= next_report:
                line.show("  running: " + "; ".join(started.progress() for started, _ in active))
                next_report = time.monotonic() + line.every
    except KeyboardInterrupt:
        for started, handle in active:
            started.stop()
            handle.close()
        raise
    finally:
        line.clear()
    return [outcomes[index] for index in sorted(outcomes)]


__all__ = ["LocalOutcome", "cpu_count", "resolve_parallel", "run_local"]

"""Executors: hand planned runs to this machine (one subprocess after another) or to SLURM (submitit).

Both write each run's resolved config to ``<out_dir>/config.yaml`` first and record every submission
in the sweep log (``sweeps.records``) so that a re-launch knows what exists.

- Local: ``python -m studies.run <out_dir>/config.yaml`` per run, in order; the run's output streams
  live to this terminal (Lightning's progress bar included) and to ``<out_dir>/run.log``.
- SLURM: one submitit job array (``executor.batch()``) of ``sweeps.job.RunJob``, a ``Checkpointable``
  that runs ``studies.run.main`` in the job and requeues itself on preemption or time-out; the run
  resumes from its own ``last.ckpt``. Resources come from the cluster profile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional, Sequence

from sweeps.profiles import ClusterProfile, check_resources
from sweeps.records import SweepLog, local_job_id

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_COMMAND = (sys.executable, "-m", "studies.run")


def resolve_cluster(choice: str, slurm_profile: bool = True) -> str:
    """``auto`` is SLURM when ``sbatch`` is on PATH and the cluster profile is a SLURM one, else
    local: the ``local`` profile (``executor: local``) describes this machine, so the smoke grid runs
    here even where a SLURM client is installed. ``slurm`` without sbatch is an error."""
    if choice not in ("auto", "slurm", "local"):
        raise ValueError(f"--cluster must be slurm, local or auto, got {choice!r}")
    has_sbatch = shutil.which("sbatch") is not None
    if choice == "slurm" and not has_sbatch:
        raise ValueError(
            "--cluster slurm needs SLURM's sbatch on PATH, and there is none on this machine: run on a "
            "login node, start the dev cluster (slurm/dev-cluster), or use --cluster local"
        )
    if choice == "auto":
        return "slurm" if has_sbatch and slurm_profile else "local"
    return choice


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _live_progress_env() -> dict:
    """Environment that lets a run draw Lightning's live progress bar into a pipe.

    The run's output reaches the terminal (and ``run.log``) through this process, so the run sees a
    pipe; rich, which draws Lightning's bar, would then print the bar once, when the run ends. These
    variables make it draw as on a terminal of this terminal's width, and the bar's last state in
    ``run.log`` is where ``sweeps/status.py`` reads a running local run's progress.
    """
    return {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1",
            "COLUMNS": os.environ.get("COLUMNS") or str(shutil.get_terminal_size().columns)}


def _fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class LocalOutcome:
    run_key: str
    name: str
    returncode: int
    elapsed_s: float
    log: Path
    finished: bool  # exit code 0 and result.json written


@contextlib.contextmanager
def _termination_as_interrupt():
    """SIGTERM and SIGHUP (``kill``, a closed terminal, a job scheduler's stop) stop a local sweep the
    way Ctrl-C does: the running run is terminated and recorded, never left running on its own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_local(
    runs: Sequence,
    log: SweepLog,
    *,
    command: Sequence[str] = RUN_COMMAND,
    stream: Optional[IO[bytes]] = None,
    say=print,
) -> list[LocalOutcome]:
    """Run ``command + [config]`` for every run, one after another, teeing output to ``run.log``.

    A failed run does not stop the sweep; its exit code is recorded and reported. Ctrl-C, SIGTERM or
    SIGHUP stops the current run (recorded as failed) and the sweep.
    """
    with _termination_as_interrupt():
        return _run_local(runs, log, command, stream, say)


def _run_local(runs, log, command, stream, say) -> list[LocalOutcome]:
    stream = stream if stream is not None else sys.stdout.buffer
    outcomes: list[LocalOutcome] = []
    total = len(runs)
    for index, run in enumerate(runs, 1):
        config = run.write_config()
        log_path = run.out_dir / "run.log"
        say(f"[{index}/{total}] {run.name} ({run.key}) ... running; log: {log_path}", flush=True)
        start = time.monotonic()
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [*command, str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env={**_env(), **_live_progress_env()}, cwd=os.getcwd(),
            )
            job_id = local_job_id(proc.pid)
            log.submitted(run.key, run.name, job_id, "local", pid=proc.pid, host=socket.gethostname(),
                          log=str(log_path), config=str(config))
            try:
                while True:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    log_file.write(chunk)
                    log_file.flush()
                    stream.write(chunk)
                    stream.flush()
                code = proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.exited(run.key, job_id, -2, time.monotonic() - start)
                say(f"[{index}/{total}] {run.name} interrupted; the sweep stops here", flush=True)
                raise
        elapsed = time.monotonic() - start
        log.exited(run.key, job_id, code, elapsed)
        finished = code == 0 and (run.out_dir / "result.json").is_file()
        if finished:
            say(f"[{index}/{total}] {run.name} finished in {_fmt_seconds(elapsed)}", flush=True)
        elif code == 0:
            say(f"[{index}/{total}] {run.name} FAILED: exited 0 without writing result.json after "
                f"{_fmt_seconds(elapsed)}; log: {log_path}", flush=True)
        else:
            say(f"[{index}/{total}] {run.name} FAILED (exit code {code}) after {_fmt_seconds(elapsed)}; "
                f"log: {log_path}", flush=True)
        outcomes.append(LocalOutcome(run.key, run.name, code, elapsed, log_path, finished))
    return outcomes


def slurm_parameters(profile: ClusterProfile, trainer: dict, job_name: str) -> dict:
    """submitit ``update_parameters`` keywords for one run: resources from the profile, one task per
    device; the job runs from the submission directory with the repository importable."""
    check_resources(profile, trainer["devices"], trainer["num_nodes"])
    params = dict(
        name=job_name,
        timeout_min=profile.time_min,
        nodes=profile.nodes,
        tasks_per_node=trainer["devices"],
        cpus_per_task=profile.cpus_per_task,
        mem_gb=profile.mem_gb,
        slurm_signal_delay_s=profile.signal_delay_s,
        slurm_array_parallelism=profile.array_parallelism,
        slurm_setup=[
            f"cd {os.getcwd()}",
            f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}",
            *profile.setup,
        ],
    )
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    optional = {"slurm_partition": profile.partition, "slurm_account": profile.account,
                "slurm_qos": profile.qos, "slurm_constraint": profile.constraint}
    params.update({k: v for k, v in optional.items() if v})
    if profile.additional_parameters:
        params["slurm_additional_parameters"] = dict(profile.additional_parameters)
    return params


def submit_slurm(runs: Sequence, log: SweepLog, profile: ClusterProfile, grid: str, say=print) -> list:
    """Submit ``runs`` as one submitit job array; returns the submitit jobs."""
    import submitit

    from sweeps.job import RunJob

    folder = Path(log.sweep_dir) / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=profile.max_num_timeout)
    executor.update_parameters(**slurm_parameters(profile, runs[0].config["trainer"], f"{grid}"))
    configs = [run.write_config() for run in runs]
    try:
        with executor.batch():
            jobs = [executor.submit(RunJob(str(config))) for config in configs]
    except Exception as exc:  # noqa: BLE001 - surface sbatch's own message, submit nothing else
        message = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
        if isinstance(message, bytes):
            message = message.decode(errors="replace")
        raise RuntimeError(f"sbatch refused the job array for grid {grid!r}: {str(message).strip()}") from exc
    for run, job in zip(runs, jobs):
        paths = job.paths
        # the resolved config also sits next to the job's submitit files, for whoever reads the logs
        paths.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.config_path, paths.folder / f"{job.job_id}_config.yaml")
        log.submitted(run.key, run.name, job.job_id, "slurm", log=str(paths.stderr), stdout=str(paths.stdout),
                      result_pickle=str(paths.result_pickle), config=str(run.config_path))
        say(f"submitted {run.name} ({run.key}) as SLURM job {job.job_id}", flush=True)
    return jobs


__all__ = ["LocalOutcome", "RUN_COMMAND", "resolve_cluster", "run_local", "slurm_parameters", "submit_slurm"]

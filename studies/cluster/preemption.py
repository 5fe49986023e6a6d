"""Runs under SLURM: ranks from the SLURM environment, and preemption or time limits that lose nothing.

A run started by ``srun`` (one task per device, plain ``sbatch`` or submitit) gets Lightning's
``SLURMEnvironment``, which reads rank, world size and the main node from ``SLURM_PROCID``,
``SLURM_NTASKS`` and ``SLURM_NODELIST``: the same code path for one CPU node and 32 GPUs.

Signals. SLURM sends a signal ``N`` seconds before the time limit (``#SBATCH --signal=USR1@N``; submitit
asks for ``USR2@N``), ``scancel --signal=USR1 JOB`` sends one by hand, and SIGTERM precedes a kill.
The run then saves ``checkpoints/last.ckpt`` (model, optimizer, LR schedule, loop progress, RNG
state, the data position of ``studies.data.loader``; the MLflow run id already lives in
``tracking.json``) and the job is requeued; the next start resumes from that checkpoint.

Why the work is deferred to a step boundary. Lightning's own ``SLURMEnvironment(auto_requeue=True)``
saves inside the signal handler, i.e. wherever the main thread happens to be: between an optimizer
update and the step counter's increment the checkpoint holds updated weights with the old step (the
resumed run repeats a step and its losses diverge), and under DDP one rank enters the checkpoint's
barrier from the handler while another waits in a gradient all-reduce. Here the handler only
records the signal; after the next optimizer step every rank agrees (``reduce_boolean_decision``)
and all save together, a state from which an uninterrupted run is reproduced exactly. The requeue
itself is SLURM's: under submitit the handler submitit installed (``Checkpointable``: it resubmits
the job and calls ``scontrol requeue``), otherwise ``scontrol requeue`` as Lightning does it. Lightning
is given ``SLURMEnvironment(auto_requeue=False)`` so that only one party ever requeues.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import lightning as L

SUBMITIT_SIGNAL = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")


class Requeued(SystemExit):
    """Raised on every rank after the checkpoint is saved and the job requeued: the process ends
    (exit code 0; 128 + signal outside SLURM, where nothing was requeued) and the requeued job
    resumes from the checkpoint."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def under_slurm() -> bool:
    """True inside a SLURM job step whose tasks Lightning should take its ranks from."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def under_submitit() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


def cluster_plugins() -> list:
    """Trainer plugins for the cluster the run is on: SLURM's environment without Lightning's requeue."""
    if not under_slurm():
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def slurm_job_id() -> Optional[str]:
    """The id ``scontrol requeue`` needs: ``ARRAYJOB_TASK`` for an array task, else the job id."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    return job_id if job_id and re.fullmatch(r"[0-9_]+", job_id) else None


def requeue_slurm_job(job_id: str) -> bool:
    """``scontrol requeue JOB``: SLURM ends the job's processes and starts it again (``--requeue``)."""
    proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        print(f"[studies.cluster.preemption] scontrol requeue {job_id} failed ({proc.returncode}): {proc.stderr.strip()}",
              file=sys.stderr, flush=True)
    return proc.returncode == 0


class CheckpointAndRequeue(L.Callback):
    """On a requeue signal: after the next optimizer step save ``checkpoint`` on all ranks; once that
    step is logged (before the next batch trains), requeue and exit.

    ``signals`` default to SIGUSR1 and SIGTERM (plain sbatch) or submitit's signal and SIGTERM (under
    submitit). A signal arriving during the final step is ignored: the run is about to finish.
    """

    def __init__(self, checkpoint: Path | str, signals: Optional[list[int]] = None) -> None:
        self.checkpoint = Path(checkpoint)
        self.submitit = under_submitit()
        if signals is None:
            first = getattr(signal, "SIG" + SUBMITIT_SIGNAL) if self.submitit else signal.SIGUSR1
            signals = [first, signal.SIGTERM]
        self.signals = [signal.Signals(s) for s in signals]
        self.received: Optional[signal.Signals] = None
        self._previous: dict = {}
        self._step_at_start = -1
        self._saved_at: Optional[int] = None  # step of the checkpoint saved for the requeue

    # -- signal handling: only record -------------------------------------------------------
    def _record(self, signum, frame) -> None:
        if self.received is None or self.received == signal.SIGTERM:
            self.received = signal.Signals(signum)
        print(f"[studies.cluster.preemption] received {signal.Signals(signum).name}: checkpoint and requeue after "
              "the current optimizer step", file=sys.stderr, flush=True)

    def _install(self) -> None:
        """Point our signals at ``_record``, remembering the handler each had before the run."""
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only; a run in a thread cannot be requeued
        for sig in self.signals:
            current = signal.getsignal(sig)
            if current != self._record:
                self._previous.setdefault(sig, current)
                signal.signal(sig, self._record)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        self._previous = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._install()  # early: a signal during start-up must not kill the process

    def on_train_start(self, trainer, pl_module) -> None:
        self._install()  # again: the Trainer has meanwhile put its own SIGTERM handler in place

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()

    # -- at the step boundary: agree and save; requeue when the step is fully recorded ----------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._saved_at is not None or trainer.global_step == self._step_at_start:
            return  # already saved, or inside a gradient accumulation (not a consistent point)
        requested = self.received is not None
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested or trainer.global_step >= trainer.max_steps:
            return
        trainer.save_checkpoint(self.checkpoint)  # the state ModelCheckpoint would save here
        self._saved_at = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_at_start = trainer.global_step
        if self._saved_at is not None:
            self._leave(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._saved_at is not None:
            self._leave(trainer)

    def _leave(self, trainer) -> None:
        """The saved step is logged (and validated if due) by now; requeue and end the process.

        Loggers are flushed by the Trainer's exception path (``logger.finalize``)."""
        why = self.received.name if self.received is not None else "a signal on another rank"
        message = f"{why}: saved {self.checkpoint} at step {self._saved_at}; requeueing the job"
        code = 0
        if trainer.global_rank == 0:
            print(f"[studies.cluster.preemption] {message}", file=sys.stderr, flush=True)
            if not self._requeue():
                code = 128 + int(self.received or signal.SIGTERM)
        raise Requeued(message, code)

    def _requeue(self) -> bool:
        """Requeue this job; False when there is no SLURM job to requeue."""
        if self.submitit:
            # submitit's handler: Checkpointable.checkpoint() resubmits this callable, it runs
            # `scontrol requeue` (counting time-outs against slurm_max_num_timeout) and exits.
            handler = self._previous.get(getattr(signal, "SIG" + SUBMITIT_SIGNAL))
            if callable(handler):
                self._restore()
                handler(getattr(signal, "SIG" + SUBMITIT_SIGNAL), None)  # exits after the requeue
                return True
        job_id = slurm_job_id()
        if job_id is None:
            print("[studies.cluster.preemption] not in a SLURM job: checkpoint saved, nothing to requeue; run the "
                  "same config again to resume", file=sys.stderr, flush=True)
            return False
        return requeue_slurm_job(job_id)


__all__ = ["CheckpointAndRequeue", "Requeued", "cluster_plugins", "requeue_slurm_job", "slurm_job_id",
           "under_slurm", "under_submitit"]

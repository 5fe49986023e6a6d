"""The callables SLURM jobs run: one run of ``studies.run``, or the preparation of one dataset
(``PrepareJob``), each requeued on preemption or time-out.

submitit pickles a ``RunJob`` into the job folder; on the node it calls it in every task (one per
device, so Lightning reads ranks from the SLURM environment). Before the time limit, and when SLURM
preempts the job, the run saves ``checkpoints/last.ckpt`` after its current optimizer step
(``studies.cluster.preemption``) and hands over to submitit, whose ``Checkpointable.checkpoint()``
resubmits the same callable; ``studies.run`` resumes from ``last.ckpt`` on the next start.
"""

from __future__ import annotations

import submitit


class RunJob(submitit.helpers.Checkpointable):
    def __init__(self, config_path: str, extra_args: list[str] | None = None) -> None:
        self.config_path = str(config_path)
        self.extra_args = list(extra_args or [])  # a trunk segment's --until-step N

    def __call__(self) -> str:
        from studies.run import main  # heavy imports (torch, lightning) happen on the node only

        code = main([self.config_path, *self.extra_args])
        if code:
            raise RuntimeError(f"studies.run exited with code {code} for {self.config_path}")
        return self.config_path

    def __repr__(self) -> str:
        return f"RunJob({self.config_path!r}{', ' + repr(self.extra_args) if self.extra_args else ''})"


class PrepareJob(submitit.helpers.Checkpointable):
    """``python -m studies.data prepare CONFIG --workers N`` in a CPU job. Preparation resumes from the
    parts it has written, so a requeued job (time-out, preemption) continues where it stopped."""

    def __init__(self, config_path: str, workers: int) -> None:
        self.config_path = str(config_path)
        self.workers = int(workers)

    def __call__(self) -> str:
        from studies.data.__main__ import main

        code = main(["prepare", self.config_path, "--workers", str(self.workers)])
        if code:
            raise RuntimeError(f"python -m studies.data prepare exited with code {code} for {self.config_path}")
        return self.config_path

    def __repr__(self) -> str:
        return f"PrepareJob({self.config_path!r}, workers={self.workers})"


__all__ = ["PrepareJob", "RunJob"]

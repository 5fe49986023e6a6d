"""Runs on a SLURM cluster.

- ``jobs``: ``RunJob`` and ``PrepareJob``, the callables a submitted job runs (one run of
  ``studies.run``, the preparation of one dataset), each requeued on preemption or time-out.
- ``preemption``: ranks from the SLURM environment, and the checkpoint-and-requeue of a run at an
  optimizer-step boundary when SLURM signals a time limit or a preemption.
"""

"""How a sweep starts its runs: ``python -m studies.run CONFIG`` with this repository importable.

``REPO_ROOT`` goes first on ``PYTHONPATH`` of every process a launch starts (a local run, the
comparison after a local sweep) and of every SLURM job (submitit's or an emitted sbatch script), so
that each imports this checkout whatever folder it runs from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_COMMAND = (sys.executable, "-m", "studies.run")


def with_repo_on_path(env: Mapping[str, str]) -> dict:
    """A copy of ``env`` with ``REPO_ROOT`` first on ``PYTHONPATH``."""
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


__all__ = ["REPO_ROOT", "RUN_COMMAND", "with_repo_on_path"]

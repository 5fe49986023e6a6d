"""Plan a named grid of FLOP-matched runs and submit what is not done yet.

    python sweeps/launch.py --grid scaling_1b --dry-run
    python sweeps/launch.py --grid smoke                     # runs here when there is no sbatch
    python sweeps/launch.py --grid scaling_1b --cluster slurm --only budget=1e20 trainer.precision=bf16-mixed

The logic lives in ``sweeps.launcher``; this file is the command-line entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.launcher import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

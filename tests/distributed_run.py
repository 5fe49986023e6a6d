"""One rank of a multi-process run, as ``torch.distributed.run`` starts it:

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_run.py CONFIG [--preempt-at STEP]

``--preempt-at`` sends rank 0 the signal SLURM sends before a time limit once optimizer step STEP
has started: the run saves its checkpoint at the next step boundary and exits, as a preempted job.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studies.config import load_run_config  # noqa: E402
from studies.run import _close_process_group, run  # noqa: E402


class PreemptAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            os.kill(os.getpid(), signal.SIGUSR1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--preempt-at", type=int)
    args = parser.parse_args()
    callbacks = [PreemptAt(args.preempt_at)] if args.preempt_at is not None else []
    run(load_run_config(args.config), callbacks=callbacks)
    _close_process_group()


if __name__ == "__main__":
    main()

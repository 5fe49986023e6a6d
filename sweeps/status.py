"""Where each run of a grid stands: planned, queued, running, finished or failed, with progress.

    python sweeps/status.py --grid smoke
    python sweeps/status.py --grid scaling_1b --format json

Pass the same overrides and ``--runs-dir`` as the launch: they decide the runs' keys. Imports no
torch, lightning or mlflow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.branching import segments  # noqa: E402
from sweeps.plan import plan_grid  # noqa: E402
from sweeps.plan_arguments import add_plan_arguments  # noqa: E402
from sweeps.plan_report import state_counts, status_json, status_table  # noqa: E402
from sweeps.run_states import plan_states  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweeps/status.py", description=__doc__.splitlines()[0])
    add_plan_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    try:
        plan = plan_grid(args.grid, args.overrides, runs_dir=args.runs_dir, only=args.only, profile=args.profile)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parts = [segment for trunk in plan.trunks for segment in segments(trunk)]
    log, records, latest, states = plan_states(plan, lambda note: print(note, file=sys.stderr), parts)
    if args.format == "json":
        print(status_json(plan, states, parts))
    else:
        print(f"grid {plan.grid} ({plan.runs_root})")
        print(status_table(plan, states, parts))
        print(state_counts({r.key: states[r.key] for r in plan.runs}) +
              (f"; trunk segments: {state_counts({s.key: states[s.key] for s in parts})}" if parts else ""))
        from sweeps.preparation import preparation_lines, preparation_steps

        for line in preparation_lines(preparation_steps([*plan.runs, *plan.trunks], records),
                                      "slurm" if plan.profile.executor == "slurm" else "local"):
            print(line)
        known = {r.key for r in plan.runs} | {s.key for s in parts}
        other = {k for k in latest if k not in known}
        if other:
            print(f"({len(other)} other run key(s) in {log.path} belong to other overrides of this grid)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

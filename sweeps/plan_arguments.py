"""The command-line arguments that decide a plan: the grid, its overrides, the ``--only`` filters, the runs
folder and the cluster profile, read alike by ``sweeps/launch.py`` and ``sweeps/status.py``."""

from __future__ import annotations

import argparse


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by launch and status: they must resolve the same plan to find the same keys."""
    parser.add_argument("--grid", required=True, help="a grid in sweeps/grids/ (e.g. smoke, scaling_1b) or a YAML path")
    # Parsed with parse_intermixed_args: overrides may come before, between or after the options.
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="OmegaConf dotlist overrides of the grid, e.g. trainer.precision=bf16-mixed budgets=[1e20,1e21]")
    parser.add_argument("--only", action="append", default=[], metavar="FIELD=V[,V]",
                        help="keep runs whose objective, model, budget or seed is one of the values (repeatable)")
    parser.add_argument("--runs-dir", default=None, help="root folder of runs (default: the grid's runs_dir, 'runs')")
    parser.add_argument("--profile", default=None, help="cluster profile in slurm/clusters/ (default: the grid's)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="how to print the plan")


__all__ = ["add_plan_arguments"]

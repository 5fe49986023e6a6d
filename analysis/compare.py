"""Compare ARM and MDM on one grid: figures, score tables, fitted scaling laws and multipliers.

    python analysis/compare.py --grid NAME [--tracking-uri URI] [--runs-dir DIR] [--out DIR]

Reads the grid's finished runs from MLflow (``analysis.runs``), then writes to ``--out`` (default
``<runs dir>/<grid>/analysis/``):

- ``scores.{csv,md}``: the final score of every run, averaged per task, budget, model, objective
  (``analysis.tables``);
- ``fits.{csv,md}``: fitted parameters with bootstrap intervals (``analysis.grid_fits``,
  ``analysis.bootstrap``): a power law through each objective's validation-loss frontier
  (L = E + A C^-alpha) and a sigmoid in log-compute per task (accuracy between chance and a
  ceiling), plus the held-out check (fit all budgets but the largest, predict it);
- ``multipliers.{csv,md}``: C_MDM / C_ARM, how many times ARM's compute MDM needs for one level:
  the worse of the two objectives' fitted levels at their largest budgets, so that neither fit is
  read at a level its runs never approached (SMDM, Nie et al. 2024: about 16x on validation
  likelihood);
- ``isoflop_optima.{csv,md}`` and ``allocation.{csv,md}``, where budgets have several sizes: each
  IsoFLOP slice's loss-optimal size N* and tokens D* = C / 6N*, and N*(C) = G C^a through them
  (Hoffmann et al. 2022, Approach 2; ``analysis.optimal_allocation``);
- ``task_scaling``, ``loss_vs_compute``, ``isoflop``, ``allocation`` as PNG and PDF, drawn with
  the fits of the tables (``analysis.comparison_figures``, ``analysis.figures``);
- ``report.md``: all of the above with what was excluded and why (``analysis.report``).

Fits need at least three budgets per objective; with fewer the tables and points are written and
the report says why there is no fit. The directory is logged as artifacts (``analysis/``) to the
grid's latest launch run in MLflow (``analysis.upload``). Exit status 2, with a one-line error,
when the grid has nothing to analyse or cannot be read.

With ``--launch-summary`` the printout is the one a local launch shows when its sweep has finished
(``launch_summary``): the score table, the notes and where the files are; a grid that cannot be
analysed is one line, ``analysis skipped: ...``, and exit status 0.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.upload import ARTIFACT_PATH  # noqa: E402  (importable once the path is set up)


class NothingToAnalyse(ValueError):
    """The grid has no usable runs; the message says what was found and what to do."""


@dataclass
class Comparison:
    """What ``compare`` produced: where, which files, and the messages the user must read."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    fitted: bool = False
    summary: str = ""  # what was read, used and excluded (``GridRuns.summary``)
    logged_to: str | None = None  # the launch run the directory was logged to


def compare(grid: str, *, tracking_uri: str | None = None, runs_dir: str | Path = "runs",
            out: str | Path | None = None, experiment: str | None = None, n_resamples: int = 200,
            confidence: float = 0.9, seed: int = 0, statuses=("FINISHED",),
            log_artifacts: bool = True) -> Comparison:
    """Load, tabulate, fit, draw, write and log one grid's comparison (see the module docstring)."""
    from analysis.comparison_figures import write_figures
    from analysis.grid_fits import MIN_BUDGETS, budgets_per_objective, fit_grid, resample_unit
    from analysis.notes import Notes
    from analysis.optimal_allocation import fit_allocations, isoflop_optima
    from analysis.report import report_markdown
    from analysis.runs import (VALIDATION, chance_levels, load_grid_runs, primary_metric,
                               runs_missing_from_tracking)
    from analysis.tables import allocation_table, fit_tables, score_markdown, score_table, write_table
    from analysis.upload import NO_LAUNCH_RUN, log_analysis

    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2 (e.g. 200), got {n_resamples}")
    data = load_grid_runs(grid, tracking_uri=tracking_uri, runs_dir=runs_dir, experiment=experiment,
                          statuses=statuses)
    missing = runs_missing_from_tracking(data, runs_dir)
    unused = (f"{len(missing)} finished run(s) in {Path(runs_dir) / grid} have no usable MLflow run at "
              f"{data.tracking_uri} and are left out: {', '.join(missing)}; replay their records with "
              "python -m studies.tracking sync RUN_DIR, or point --tracking-uri at their store") if missing else None
    if data.scores.empty:
        found = ", ".join(f"{n} {s}" for s, n in data.status_counts().items()) or "no job runs"
        raise NothingToAnalyse(
            f"grid {grid!r} has no {'/'.join(data.statuses).lower()} runs with scores to analyse "
            f"(found {found}).\n{data.summary()}\n" + (f"{unused}\n" if unused else "")
            + "Wait for runs to finish, or pass --include-running")
    result = Comparison(out_dir=Path(out) if out is not None else Path(runs_dir) / grid / "analysis",
                        summary=data.summary())
    result.out_dir.mkdir(parents=True, exist_ok=True)
    notes = Notes()
    if unused:
        notes.add(unused)
    scores = data.scores
    tasks = [t for t in dict.fromkeys(scores["task"]) if t != VALIDATION]
    metric_of = {t: primary_metric(t, scores.loc[scores["task"] == t, "metric"].unique()) for t in tasks}
    chance = chance_levels(tasks)
    for task in tasks:
        if task not in chance:
            chance[task] = 0.0
            notes.add("not in studies.tasks.suite, so its chance level is taken as 0", "unknown tasks", task)

    table = score_table(scores)
    result.files += write_table(table, result.out_dir, "scores", score_markdown(table))
    budgets = budgets_per_objective(scores)
    resample = resample_unit(data.used_runs)
    result.fitted = min(budgets.values()) >= MIN_BUDGETS
    fits = None
    if result.fitted:
        fits = fit_grid(scores, chance, metric_of, notes, n_resamples=n_resamples, confidence=confidence,
                        seed=seed, resample=resample)
        tables = fit_tables(fits.parameters, fits.multipliers, fits.held_out)
    else:
        per = ", ".join(f"{o.upper()} {n}" for o, n in budgets.items())
        notes.add(f"no fits: a scaling fit needs at least {MIN_BUDGETS} budgets per objective and "
                  f"the grid has {per}; scores table and points only")
        tables = {}
    allocation_fits = {}
    minima = isoflop_optima(scores)
    if minima is not None:
        optima, allocation, allocation_fits = fit_allocations(minima, notes, confidence=confidence)
        tables["isoflop_optima"] = optima
        tables["allocation"] = allocation_table(allocation)
    if result.fitted:
        for name, frame in tables.items():
            result.files += write_table(frame, result.out_dir, name)
    result.files += write_figures(scores, chance, metric_of, result.out_dir, fits=fits, notes=notes,
                                  minima=minima, allocation_fits=allocation_fits)
    result.messages += notes.lines()
    report = result.out_dir / "report.md"
    report.write_text(report_markdown(data.grid, data.summary(), result.messages, table, tables,
                                      [f for f in result.files if f.suffix == ".png"], fitted=result.fitted,
                                      confidence=confidence, resample=resample))
    result.files.append(report)
    if log_artifacts:
        result.logged_to = log_analysis(data.tracking_uri, data.parent_run_id, result.out_dir)
        if result.logged_to is None:
            result.messages.append(NO_LAUNCH_RUN)
    return result


def launch_summary(result: Comparison) -> list[str]:
    """What a local launch prints when its sweep has finished: the score table, the notes (the
    missing fits condensed into one line) and where the files are."""
    lines = []
    scores = result.out_dir / "scores.md"
    if scores.exists():
        lines.append("\n" + scores.read_text())
    no_fit = [m for m in result.messages if ": no fit (" in m]
    for message in result.messages:
        if message not in no_fit:
            lines.append(f"note: {message}")
    if no_fit:
        reason = no_fit[0].split(": no fit (", 1)[1].rstrip(")")
        lines.append(f"note: no fitted curve for {len(no_fit)} task/objective pair(s): {reason} "
                     f"(details in {result.out_dir / 'report.md'})")
    figures = [f for f in result.files if f.suffix == ".png"]
    lines.append(f"analysis: {len(result.files)} files in {result.out_dir}"
                 + (f"; figure: {figures[0]}" if figures else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python analysis/compare.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, help="grid name (the MLflow experiment)")
    parser.add_argument("--tracking-uri", help="MLflow URI (default: MLFLOW_TRACKING_URI, else "
                        "sqlite:///<runs dir>/mlflow.db)")
    parser.add_argument("--runs-dir", default="runs", help="root of the run folders (default: runs)")
    parser.add_argument("--experiment", help="MLflow experiment if not named after the grid")
    parser.add_argument("--out", help="output folder (default: <runs dir>/<grid>/analysis)")
    parser.add_argument("--n-resamples", type=int, default=200, help="bootstrap resamples (default 200)")
    parser.add_argument("--confidence", type=float, default=0.9, help="interval level (default 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--include-running", action="store_true", help="also use runs still RUNNING")
    parser.add_argument("--no-log", action="store_true", help="do not log the outputs to MLflow")
    parser.add_argument("--launch-summary", action="store_true",
                        help="print what a local launch shows after its sweep (scores, notes, files); "
                        "a grid that cannot be analysed is one line 'analysis skipped: ...', exit 0")
    args = parser.parse_args(argv)
    statuses = ("FINISHED", "RUNNING") if args.include_running else ("FINISHED",)
    try:
        result = compare(args.grid, tracking_uri=args.tracking_uri, runs_dir=args.runs_dir, out=args.out,
                         experiment=args.experiment, n_resamples=args.n_resamples,
                         confidence=args.confidence, seed=args.seed, statuses=statuses,
                         log_artifacts=not args.no_log)
    except ValueError as err:  # a user's mistake (grid, store, statuses): one line, exit 2
        if args.launch_summary:  # a sweep that finished is not failed by its analysis
            print(f"analysis skipped: {err}")
            return 0
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.launch_summary:
        for line in launch_summary(result):
            print(line)
        return 0
    print(result.summary)
    for message in result.messages:
        print(f"note: {message}")
    print(f"wrote {len(result.files)} files to {result.out_dir.resolve()}:")
    for path in result.files:
        print(f"  {path.name}")
    if result.logged_to:
        print(f"logged as artifacts '{ARTIFACT_PATH}/' of launch run {result.logged_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare ARM and MDM on one grid: figures, score tables, fitted scaling laws and multipliers.

    python analysis/compare.py --grid NAME [--tracking-uri URI] [--runs-dir DIR] [--out DIR]

Reads the grid's finished runs from MLflow (``analysis.runs``), then writes to ``--out`` (default
``<runs dir>/<grid>/analysis/``):

- ``scores.{csv,md}``: the final score of every run, averaged per task, budget, model, objective;
- ``fits.{csv,md}``: fitted parameters with bootstrap intervals (``analysis.fits``,
  ``analysis.bootstrap``): a power law through each objective's validation-loss frontier
  (L = E + A C^-alpha) and a sigmoid in log-compute per task (accuracy between chance and a
  ceiling), plus the held-out check (fit all budgets but the largest, predict it);
- ``multipliers.{csv,md}``: C_MDM / C_ARM, how many times ARM's compute MDM needs for one level:
  the worse of the two objectives' fitted levels at their largest budgets, so that neither fit is
  read at a level its runs never approached (SMDM, Nie et al. 2024: about 16x on validation
  likelihood);
- ``isoflop_optima.{csv,md}`` and ``allocation.{csv,md}``, where budgets have several sizes: each
  IsoFLOP slice's loss-optimal size N* and tokens D* = C / 6N*, and N*(C) = G C^a through them
  (Hoffmann et al. 2022, Approach 2);
- ``task_scaling``, ``loss_vs_compute``, ``isoflop``, ``allocation`` as PNG and PDF
  (``analysis.figures``);
- ``report.md``: all of the above with what was excluded and why.

Fits need at least three budgets per objective; with fewer the tables and points are written and
the report says why there is no fit. The directory is logged as artifacts (``analysis/``) to the
grid's latest launch run in MLflow. Exit status 1 when the grid has nothing to analyse.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MIN_BUDGETS = 3  # a 3-parameter law (E, A, alpha or ceiling, slope, midpoint) needs 3 budgets
MIN_RUNS_TO_RESAMPLE_RUNS = 5  # below this per objective, bootstrap single points, not whole runs
ARTIFACT_PATH = "analysis"


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


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def score_table(scores):
    """Final score of every run, mean/std/count per (task, metric, budget, model, objective)."""
    final = scores[scores["final"]]
    grouped = final.groupby(["task", "metric", "flops_budget", "non_embedding_params", "model", "objective"])
    table = grouped["value"].agg(n_runs="count", mean="mean", std="std").reset_index()
    return table.sort_values(["task", "metric", "flops_budget", "non_embedding_params", "objective"])


def _markdown(frame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else format(v, floatfmt)
        return str(v)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _score_markdown(table) -> str:
    """Objectives side by side: 'mean ± std (n)' per task, metric, budget and model."""
    import pandas as pd

    text = table.assign(score=[f"{m:.4g}" + (f" ± {s:.2g}" if s == s else "") + f" (n={n})"
                               for m, s, n in zip(table["mean"], table["std"], table["n_runs"])])
    wide = text.pivot_table(index=["task", "metric", "flops_budget", "model"], columns="objective",
                            values="score", aggfunc="first").reset_index()
    wide.columns.name = None
    wide["flops_budget"] = [f"{b:.3g}" for b in wide["flops_budget"]]
    return _markdown(wide.rename(columns={"arm": "ARM", "mdm": "MDM"}).fillna("")) if len(wide) else \
        _markdown(pd.DataFrame(columns=["task", "metric", "flops_budget", "model"]))


def _write_table(frame, out: Path, name: str, markdown: str | None = None) -> list[Path]:
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    frame.to_csv(csv, index=False)
    md.write_text(markdown if markdown is not None else _markdown(frame))
    return [csv, md]


# ---------------------------------------------------------------------------------------------
# fits
# ---------------------------------------------------------------------------------------------
def _budgets_per_objective(scores) -> dict[str, int]:
    final = scores[scores["final"]]
    return {o: int(n) for o, n in final.groupby("objective")["flops_budget"].nunique().items()}


def _fit_rows(quantity: str, objective: str, form: str, boot) -> list[dict]:
    intervals = boot.intervals()
    return [{"quantity": quantity, "objective": objective, "form": form, "parameter": name,
             "estimate": value, "low": intervals[name][0], "high": intervals[name][1],
             "n_points": boot.fit.n_points, "failed_resamples": boot.n_failed}
            for name, value in boot.fit.params().items()]


class BootstrapCache:
    """Bootstrap fits keyed by their inputs, shared by the tables and the figures.

    The figures fit what the tables fitted (same points in the same order, same seed and settings,
    hence the same replicates); passing ``cache.bootstrap_fit`` as the figures' ``bootstrap``
    reuses these fits, which halves the run time and guarantees the figures and tables quote the
    same numbers.
    """

    def __init__(self):
        self._fits: dict = {}

    @staticmethod
    def _key(fit_fn, arrays, kwargs):
        import numpy as np

        def freeze(v):
            if isinstance(v, (np.ndarray, list, tuple)):
                a = np.asarray(v)
                return ("O", tuple(a.tolist())) if a.dtype.kind == "O" else (a.dtype.str, a.shape, a.tobytes())
            return v
        return (fit_fn, tuple(freeze(a) for a in arrays),
                tuple(sorted((k, freeze(v)) for k, v in kwargs.items() if v is not None)))

    def bootstrap_fit(self, fit_fn, *arrays, **kwargs):
        from analysis.bootstrap import bootstrap_fit

        key = self._key(fit_fn, arrays, kwargs)
        if key not in self._fits:
            try:
                self._fits[key] = bootstrap_fit(fit_fn, *arrays, **kwargs)
            except ValueError as err:
                self._fits[key] = err
        if isinstance(self._fits[key], ValueError):
            raise self._fits[key]
        return self._fits[key]


def _objective_points(rows, objective: str, validation: bool):
    """An objective's points, selected and ordered as ``analysis.figures`` selects them."""
    from analysis.runs import final_points

    pts = rows[rows["objective"] == objective]
    if validation:  # each run's last evaluation
        return final_points(pts)
    return pts.sort_values("flops", kind="stable")


def fit_grid(data, chance: dict, metric_of: dict, cache: BootstrapCache, notes, *, n_resamples: int,
             confidence: float, seed: int, resample: str):
    """Bootstrap fits of validation loss and of every task, multipliers and held-out checks.

    Returns (fit rows, multiplier rows, held-out rows) as lists of dicts; what could not be fitted
    goes to ``notes`` (``analysis.notes.Notes``), grouped by cause.
    """
    import numpy as np

    from analysis.bootstrap import compute_multiplier_interval, held_out_check
    from analysis.accuracy_fits import fit_accuracy
    from analysis.fits import fit_loss_frontier, fit_power_law

    scores = data.scores
    fit_rows, multipliers, held_out = [], [], []
    boots: dict[tuple[str, str], object] = {}
    settings = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    quantities = [("validation", "loss")] if (scores["task"] == "validation").any() else []
    quantities += [(t, metric_of[t]) for t in metric_of]
    for task, metric in quantities:
        rows = scores[(scores["task"] == task) & (scores["metric"] == metric)]
        name, validation = f"{task}/{metric}", task == "validation"
        for objective in [o for o in ("arm", "mdm") if (rows["objective"] == o).any()]:
            pts = _objective_points(rows, objective, validation)
            if validation:
                args = (pts["flops"].to_numpy(float), pts["non_embedding_params"].to_numpy(float),
                        pts["value"].to_numpy(float))
                fn, form = fit_loss_frontier, "L = E + A C^-alpha (compute frontier)"
                kwargs = {"budget": pts["flops_budget"].to_numpy(float)}
            else:
                args = (pts["flops"].to_numpy(float), pts["value"].to_numpy(float))
                fn, form = fit_accuracy, "chance + (ceiling - chance) sigmoid(slope (log10 C - midpoint))"
                kwargs = {"chance": float(chance[task]), "max_score": 1.0,
                          "groups": pts["run_id"].to_numpy() if resample == "runs" else None}
            try:
                boot = cache.bootstrap_fit(fn, *args, **kwargs, **settings)
            except ValueError as err:
                notes.add(str(err), "no fit", name, objective.upper())
                continue
            boots[(name, objective)] = boot
            fit_rows += _fit_rows(name, objective, form, boot)
            n_budgets = pts["flops_budget"].nunique()
            if validation and n_budgets < MIN_BUDGETS + 2:
                notes.add(f"a held-out check needs {MIN_BUDGETS + 2} budgets (one to predict, enough left "
                          f"to bootstrap a fit), the grid has {n_budgets}", "no held-out check", name,
                          objective.upper())
                continue
            try:
                if validation:  # the frontier (best size per budget) is what is extrapolated
                    front = _frontier(pts)
                    check = held_out_check(fit_power_law, front["flops"], front["value"], **settings)
                else:
                    check = held_out_check(fn, *args, budget=pts["flops_budget"].to_numpy(float),
                                           **kwargs, **settings)
            except ValueError as err:
                notes.add(f"fitting the {n_budgets - 1} budget(s) below the largest failed: {err}",
                          "no held-out check", name, objective.upper())
                continue
            held_out.append({"quantity": name, "objective": objective, "held_out_budget": check.budget,
                             "n_train": check.n_train, "n_held_out": int(check.observed.size),
                             "mean_observed": float(np.mean(check.observed)),
                             "mean_predicted": float(np.mean(check.predicted)),
                             "mean_relative_error": float(np.mean(check.relative_error)),
                             "covered": f"{int(check.covered.sum())}/{check.covered.size}"})
        if (name, "arm") in boots and (name, "mdm") in boots:
            multipliers.append(_multiplier(name, rows, boots[(name, "mdm")], boots[(name, "arm")],
                                           compute_multiplier_interval))
    return fit_rows, multipliers, held_out


def fit_allocations(minima, notes, *, confidence: float):
    """N*(C) = G C^a through the IsoFLOP optima (``analysis.figures.isoflop_minima``; Approach 2).

    Returns (optima rows, allocation-fit rows, {objective: AllocationFit}).
    """
    from analysis.figures import allocation_points
    from analysis.fits import fit_allocation

    fits, rows = {}, []
    for objective in dict.fromkeys(minima["objective"]):
        used = allocation_points(minima, objective)
        try:
            fit = fit_allocation(used["flops_budget"], used["optimal_params"], confidence=confidence)
        except ValueError as err:
            notes.add(f"it needs IsoFLOP optima at 3+ budgets located inside the sizes trained (a convex "
                      f"parabola with its vertex between the smallest and largest size); {len(used)} "
                      f"budget(s) have one ({err})", "no N*(C) fit", objective.upper())
            continue
        fits[objective] = fit
        rows.append({"objective": objective, "a (N* ~ C^a)": fit.exponent, "low": fit.exponent_low,
                     "high": fit.exponent_high, "b (D* ~ C^b)": 1 - fit.exponent,
                     "G (N* = G C^a)": fit.coefficient, "n_budgets": fit.n_points})
    columns = ["objective", "flops_budget", "optimal_params", "optimal_tokens", "optimal_loss", "method",
               "n_sizes", "inside_sizes"]
    return minima[columns], rows, fits


def _frontier(final):
    """Per budget, the model size with the lowest mean final value (Kaplan et al.'s envelope)."""
    means = final.groupby(["flops_budget", "non_embedding_params"])[["flops", "value"]].mean().reset_index()
    return means.loc[means.groupby("flops_budget")["value"].idxmin()]


def _multiplier(name, rows, boot_mdm, boot_arm, interval_fn) -> dict:
    """C_MDM / C_ARM at ``analysis.fits.multiplier_level``."""
    from analysis.fits import multiplier_level
    from analysis.runs import largest_compute

    level = multiplier_level({"arm": boot_arm.fit, "mdm": boot_mdm.fit}, largest_compute(rows))
    row = {"quantity": name, "level": level, "ratio": "C_MDM / C_ARM", "estimate": float("nan"),
           "low": float("nan"), "high": float("nan"), "note": ""}
    try:
        estimate, (low, high) = interval_fn(boot_mdm, boot_arm, level)
        row.update(estimate=estimate, low=low, high=high,
                   note="interval reaches inf: some resamples never reach the level" if high == float("inf") else "")
    except ValueError as err:
        row["note"] = f"not defined: {err}"
    return row


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def _draw(plot, name: str, out: Path, notes, fit: bool, **kwargs) -> list[Path]:
    """Draw with fits; if a fit cannot be made, say why and draw the points alone.

    A fit that failed in the tables fails here for the same cause: the figure joins that cause's note.
    """
    from analysis.figures import save_figure

    try:
        fig = plot(fit=fit, **kwargs) if fit is not None else plot(**kwargs)
    except ValueError as err:
        if not fit:
            notes.add(str(err), "figures not drawn", name)
            return []
        notes.add(notes.known_cause(str(err)) or str(err), "figures drawn without fitted curves", name)
        fig = plot(fit=False, **kwargs)
    return save_figure(fig, out / name)


def isoflop_optima(scores):
    """The IsoFLOP slices' optima (``analysis.figures.isoflop_minima``), or None where every budget
    has a single model size."""
    from analysis.figures import isoflop_minima

    final = scores[(scores["task"] == "validation") & scores["final"]]
    if final.empty or final.groupby(["objective", "flops_budget"])["non_embedding_params"].nunique().max() < 2:
        return None
    return isoflop_minima(scores)


def make_figures(data, chance, metric_of, out: Path, *, fit: bool, n_resamples: int,
                 confidence: float, seed: int, resample: str, notes, bootstrap=None,
                 minima=None, allocation_fits=None) -> list[Path]:
    """The figures of the comparison; ``minima`` are the IsoFLOP optima (``isoflop_optima``)."""
    from analysis.figures import plot_allocation, plot_isoflop, plot_loss_vs_compute, plot_task_scaling

    scores, files = data.scores, []
    boot = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    if bootstrap is not None:
        boot["bootstrap"] = bootstrap
    if metric_of:
        files += _draw(plot_task_scaling, "task_scaling", out, notes, fit, df=scores, chance=chance,
                       tasks=list(metric_of), metric=metric_of, resample=resample, **boot)
    validation = scores[scores["task"] == "validation"]
    if validation.empty:
        notes.add("no validation loss logged: loss-vs-compute and IsoFLOP figures skipped")
        return files
    files += _draw(plot_loss_vs_compute, "loss_vs_compute", out, notes, fit, df=scores, **boot)
    if minima is not None:
        files += _draw(plot_isoflop, "isoflop", out, notes, None, df=scores)
        files += _draw(plot_allocation, "allocation", out, notes, None, minima=minima,
                       fits=allocation_fits or {})
    else:
        notes.add("IsoFLOP figure skipped: every budget has a single model size")
    return files


# ---------------------------------------------------------------------------------------------
# the whole comparison
# ---------------------------------------------------------------------------------------------
def compare(grid: str, *, tracking_uri: str | None = None, runs_dir: str | Path = "runs",
            out: str | Path | None = None, experiment: str | None = None, n_resamples: int = 200,
            confidence: float = 0.9, seed: int = 0, statuses=("FINISHED",),
            log_artifacts: bool = True) -> Comparison:
    """Load, tabulate, fit, draw, write and log one grid's comparison (see the module docstring)."""
    import pandas as pd

    from analysis.notes import Notes
    from analysis.runs import VALIDATION, chance_levels, load_grid, primary_metric, runs_missing_from_tracking

    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2 (e.g. 200), got {n_resamples}")
    data = load_grid(grid, tracking_uri=tracking_uri, runs_dir=runs_dir, experiment=experiment,
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
    result.files += _write_table(table, result.out_dir, "scores", _score_markdown(table))
    budgets = _budgets_per_objective(scores)
    resample = "runs" if data.used_runs.groupby("objective").size().min() >= MIN_RUNS_TO_RESAMPLE_RUNS else "points"
    result.fitted = min(budgets.values()) >= MIN_BUDGETS
    fit_rows, multipliers, held_out = [], [], []
    cache = BootstrapCache()
    if result.fitted:
        fit_rows, multipliers, held_out = fit_grid(
            data, chance, metric_of, cache, notes, n_resamples=n_resamples, confidence=confidence,
            seed=seed, resample=resample)
    else:
        per = ", ".join(f"{o.upper()} {n}" for o, n in budgets.items())
        notes.add(f"no fits: a scaling fit needs at least {MIN_BUDGETS} budgets per objective and "
                  f"the grid has {per}; scores table and points only")
    tables = {
        "fits": pd.DataFrame(fit_rows, columns=["quantity", "objective", "form", "parameter", "estimate",
                                                "low", "high", "n_points", "failed_resamples"]),
        "multipliers": pd.DataFrame(multipliers, columns=["quantity", "level", "ratio", "estimate", "low",
                                                          "high", "note"]),
        "held_out": pd.DataFrame(held_out, columns=["quantity", "objective", "held_out_budget", "n_train",
                                                    "n_held_out", "mean_observed", "mean_predicted",
                                                    "mean_relative_error", "covered"]),
    }
    allocation_fits = {}
    minima = isoflop_optima(scores)
    if minima is not None:
        optima, allocation, allocation_fits = fit_allocations(minima, notes, confidence=confidence)
        tables["isoflop_optima"] = optima
        tables["allocation"] = pd.DataFrame(allocation, columns=[
            "objective", "a (N* ~ C^a)", "low", "high", "b (D* ~ C^b)", "G (N* = G C^a)", "n_budgets"])
    if result.fitted:
        for name, frame in tables.items():
            result.files += _write_table(frame, result.out_dir, name)
    result.files += make_figures(data, chance, metric_of, result.out_dir, fit=result.fitted,
                                 n_resamples=n_resamples, confidence=confidence, seed=seed,
                                 resample=resample, notes=notes, bootstrap=cache.bootstrap_fit,
                                 minima=minima, allocation_fits=allocation_fits)
    result.messages += notes.lines()
    report = result.out_dir / "report.md"
    report.write_text(_report(data, result, table, tables, confidence, resample))
    result.files.append(report)
    if log_artifacts:
        _log_artifacts(data, result)
    return result


def _report(data, result: Comparison, table, tables, confidence: float, resample: str) -> str:
    lines = [f"# ARM vs MDM: grid `{data.grid}`", "", "```", data.summary(), "```", ""]
    if result.messages:
        lines += ["## Notes", "", *[f"- {m}" for m in result.messages], ""]
    lines += ["## Final scores per budget", "", _score_markdown(table)]
    if result.fitted:
        lines += [f"## Fitted parameters ({confidence:.0%} bootstrap intervals, resampling {resample})", "",
                  _markdown(tables["fits"]), "## Compute multipliers", "",
                  "C_MDM / C_ARM: how many times ARM's compute MDM needs to reach `level`, the worse of "
                  "the two objectives' fitted levels at their largest budgets.", "", _markdown(tables["multipliers"]),
                  "## Held-out check (fit all budgets but the largest, predict it)", "",
                  _markdown(tables["held_out"])]
        if "isoflop_optima" in tables:
            lines += ["## IsoFLOP optima (Hoffmann et al. Approach 2)", "",
                      "Per budget, the vertex of a parabola in log N through the slice's final validation "
                      "losses (or the best run where the slice has fewer than 3 sizes or is not convex); "
                      "D* = C / 6N*.", "", _markdown(tables["isoflop_optima"]),
                      f"N*(C) = G C^a through the optima inside the sizes trained ({confidence:.0%} "
                      "t-intervals on a; Chinchilla: a = 0.49, Kaplan et al.: 0.73):", "",
                      _markdown(tables["allocation"])]
    figures = [f for f in result.files if f.suffix == ".png"]
    if figures:
        lines += ["## Figures", "", *[f"![{f.stem}]({f.name})" for f in figures], ""]
    return "\n".join(lines)


def _log_artifacts(data, result: Comparison) -> None:
    from mlflow.tracking import MlflowClient

    if data.parent_run_id is None:
        result.messages.append("no launch run (tag kind=launch) in the grid's experiment: "
                               "the analysis was not logged to MLflow")
        return
    MlflowClient(data.tracking_uri).log_artifacts(data.parent_run_id, str(result.out_dir), ARTIFACT_PATH)
    result.logged_to = data.parent_run_id


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
    args = parser.parse_args(argv)
    statuses = ("FINISHED", "RUNNING") if args.include_running else ("FINISHED",)
    try:
        result = compare(args.grid, tracking_uri=args.tracking_uri, runs_dir=args.runs_dir, out=args.out,
                         experiment=args.experiment, n_resamples=args.n_resamples,
                         confidence=args.confidence, seed=args.seed, statuses=statuses,
                         log_artifacts=not args.no_log)
    except ValueError as err:  # a user's mistake (grid, store, statuses): one line, exit 2
        print(f"error: {err}", file=sys.stderr)
        return 2
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

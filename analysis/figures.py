"""Paper figures for ARM vs MDM scaling studies, drawn from the tidy results table.

- ``plot_task_scaling``: LLaDA (Nie et al. 2025) Fig. 3 layout, one panel per downstream task,
  accuracy against training FLOPs, ARM vs MDM, with fitted sigmoids and bootstrap bands.
- ``plot_loss_vs_compute``: loss curves against FLOPs with a power law through the compute
  frontier and the compute multiplier between objectives (SMDM, Nie et al. 2024, Fig. 1).
- ``plot_isoflop``: loss against non-embedding parameters at fixed budgets with the minima of
  each slice (Hoffmann et al. 2022, Fig. 3 / Approach 2).
- ``plot_allocation``: the slices' optima N* and D* against compute with their power laws.

Input is the tidy table (one row per run x evaluation point x task x metric) with the columns in
``analysis.results_table.REQUIRED_COLUMNS``; compute is C = 6ND with N the non-embedding parameter
count. The figures draw fits made beforehand (``analysis.grid_fits``): ``fits`` maps (task, metric,
objective) to a bootstrap fit, drawn as a curve with its band; without ``fits`` they draw the points
alone. Figures are plain ``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot state,
no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.bootstrap import BootstrapFit, compute_multiplier_interval
from analysis.fits import fit_isoflop, multiplier_level
from analysis.optimal_allocation import allocation_points, isoflop_minima
from analysis.results_table import check_table, final_points, largest_compute, objectives_in, resolve_tasks, select
from analysis.runs import VALIDATION
from models.objective_names import ARM, MDM, OBJECTIVES

# Okabe-Ito colours: distinguishable with colour-blindness and in greyscale print
OBJECTIVE_STYLE = {
    ARM: {"color": "#0072B2", "marker": "o", "label": "ARM"},
    MDM: {"color": "#D55E00", "marker": "s", "label": "MDM"},
}
TASK_TITLES = {"mmlu": "MMLU", "arc_c": "ARC-C", "arc_challenge": "ARC-C", "cmmlu": "CMMLU",
               "piqa": "PIQA", "gsm8k": "GSM8K", "humaneval": "HumanEval", "validation": "Validation",
               "toy_mc": "Toy MC", "toy_forward": "Toy forward", "toy_reverse": "Toy reversal",
               "toy_arithmetic": "Toy arithmetic"}
FLOPS_LABEL = "Training FLOPs (6ND)"
PARAMS_LABEL = "Non-embedding parameters"
COLUMN_WIDTH_IN, PAGE_WIDTH_IN = 3.3, 6.75
STYLE = {
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "lines.linewidth": 1.3, "lines.markersize": 3.5,
    "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6,
    "grid.linewidth": 0.4, "grid.alpha": 0.5, "pdf.fonttype": 42, "savefig.dpi": 300,
}


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------
def _title(task: str) -> str:
    return TASK_TITLES.get(task, task)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _log_x_axis(ax, label: str | None = FLOPS_LABEL) -> None:
    """A log x axis labelled at powers of ten only, with at least two of them in view."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=12))
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide within a decade
    low, high = ax.get_xlim()
    if np.floor(np.log10(high)) - np.ceil(np.log10(low)) < 1:
        # fewer than two powers of ten in view (a grid within one decade, or a single budget):
        # widen to the enclosing ones so the axis carries at least two labels
        ax.set_xlim(10 ** np.floor(np.log10(low)), 10 ** np.ceil(np.log10(high)))
    if label:
        ax.set_xlabel(label)
    ax.grid(True, which="major")


def _fit_grid(x: np.ndarray) -> np.ndarray:
    return np.logspace(np.log10(x.min()) - 0.15, np.log10(x.max()) + 0.15, 200)


def save_figure(fig: Figure, path: str | Path) -> list[Path]:
    """Write ``path`` as .png (300 dpi) and .pdf (vector, embedded TrueType fonts)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with rc_context(STYLE):
        for suffix in (".png", ".pdf"):
            target = stem.with_name(stem.name + suffix)
            fig.savefig(target, bbox_inches="tight", pad_inches=0.02)
            written.append(target)
    return written


def _fit_of(fits: Mapping[tuple[str, str, str], BootstrapFit], task: str, metric: str,
            objective: str) -> BootstrapFit:
    try:
        return fits[(task, metric, objective)]
    except KeyError:
        raise ValueError(f"no fit of {task}/{metric} for objective {objective!r} in `fits`; fit it with "
                         "analysis.grid_fits, or pass fits=None to draw the points alone") from None


def _draw_fit(ax, boot, x_grid, style, gid: str) -> None:
    low, high = boot.band(x_grid)
    ax.fill_between(x_grid, low, high, color=style["color"], alpha=0.18, linewidth=0,
                    gid=f"band-{gid}")
    ax.plot(x_grid, boot.fit.predict(x_grid), color=style["color"], gid=f"fit-{gid}")


def _objective_handles(objectives, with_fit: bool) -> list[Line2D]:
    return [Line2D([], [], color=OBJECTIVE_STYLE[o]["color"], marker=OBJECTIVE_STYLE[o]["marker"],
                   linestyle="-" if with_fit else "none", label=OBJECTIVE_STYLE[o]["label"])
            for o in objectives]


# ---------------------------------------------------------------------------------------------
# LLaDA Fig. 3: downstream accuracy against compute
# ---------------------------------------------------------------------------------------------
def _percent_formatter(max_score: float) -> FuncFormatter:
    """Accuracy ticks in percent with the digits each tick needs: "2.5%", not "2%" (a fixed number of
    decimals mislabels fractional ticks) nor "25.00%"."""
    return FuncFormatter(lambda value, _: f"{round(100 * value / max_score, 6):g}%")


def plot_task_scaling(df: pd.DataFrame, chance: Mapping[str, float], *, tasks=None,
                      metric: str | Mapping[str, str] = "accuracy", max_score: float = 1.0,
                      fits: Mapping[tuple[str, str, str], BootstrapFit] | None = None, ncols: int = 3,
                      out: str | Path | None = None) -> Figure:
    """One panel per task: accuracy vs training FLOPs for ARM and MDM, fitted curves with bands.

    ``chance`` maps task -> chance accuracy (drawn dotted); ``metric`` is one metric name or a
    task -> metric mapping (e.g. pass@1 for HumanEval). Every evaluation point of every run is
    drawn. ``fits`` are the curves, e.g. ``analysis.grid_fits.fit_accuracy_curves`` of the same
    table (sigmoids in log-compute, or the two-step OLMo-ladder form); without them the panels
    hold the points alone.
    """
    check_table(df)
    tasks, metric_of = resolve_tasks(df, chance, tasks, metric)
    panels = {t: select(df, t, metric_of(t)) for t in tasks}

    ncols = min(ncols, len(tasks))
    nrows = -(-len(tasks) // ncols)
    width = PAGE_WIDTH_IN if ncols > 1 else COLUMN_WIDTH_IN
    drawn = []
    with rc_context(STYLE):
        fig = _new_figure(width, 1.85 * nrows + 0.35)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(tasks):]:
            fig.delaxes(ax)
        for i, (ax, task) in enumerate(zip(axes, tasks)):
            rows = panels[task]
            for objective in objectives_in(rows):
                style = OBJECTIVE_STYLE[objective]
                pts = rows[rows["objective"] == objective].sort_values("flops", kind="stable")
                x, y = pts["flops"].to_numpy(float), pts["value"].to_numpy(float)
                ax.plot(x, y, linestyle="none", marker=style["marker"], color=style["color"],
                        markeredgecolor="white", markeredgewidth=0.4, alpha=0.9,
                        gid=f"points-{objective}")
                if fits is not None:
                    drawn.append(_fit_of(fits, task, metric_of(task), objective))
                    _draw_fit(ax, drawn[-1], _fit_grid(x), style, objective)
            ax.axhline(chance[task], color="0.45", linestyle=":", linewidth=0.9, gid="chance")
            _log_x_axis(ax, label=FLOPS_LABEL if i >= len(tasks) - ncols else None)
            ax.yaxis.set_major_formatter(_percent_formatter(max_score))
            ax.set_title(_title(task))
            if i % ncols == 0:
                ax.set_ylabel("Accuracy")
        handles = _objective_handles(objectives_in(df), fits is not None) + [
            Line2D([], [], color="0.45", linestyle=":", label="Chance")]
        if fits is not None:
            handles.append(Patch(facecolor="0.5", alpha=0.3, linewidth=0,
                                 label=f"{drawn[0].confidence:.0%} bootstrap band"))
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
    if out is not None:
        save_figure(fig, out)
    return fig


# ---------------------------------------------------------------------------------------------
# loss against compute, with the compute multiplier
# ---------------------------------------------------------------------------------------------
def plot_loss_vs_compute(df: pd.DataFrame, *, task: str = VALIDATION, metric: str = "loss",
                         fits: Mapping[tuple[str, str, str], BootstrapFit] | None = None,
                         multiplier_level: float | None = None,
                         out: str | Path | None = None) -> Figure:
    """Loss curves of every run against FLOPs; a power law through each objective's frontier.

    Thin lines are runs (all their evaluation points), markers their final evaluations. ``fits``
    are the frontier power laws, e.g. ``analysis.grid_fits.fit_loss_frontiers`` of the same table;
    without them the panel holds the runs alone. With both objectives fitted the panel states the
    compute multiplier C_MDM / C_ARM at ``multiplier_level`` (default:
    ``analysis.fits.multiplier_level``, the worse of the two objectives' fitted losses at their
    largest budgets) with its interval.
    """
    check_table(df)
    rows = select(df, task, metric)
    with rc_context(STYLE):
        fig = _new_figure(COLUMN_WIDTH_IN, 2.6)
        ax = fig.subplots()
        boots = {}
        for objective in objectives_in(rows):
            style = OBJECTIVE_STYLE[objective]
            pts = rows[rows["objective"] == objective]
            for _, run in pts.sort_values("flops", kind="stable").groupby("run_id", sort=False):
                ax.plot(run["flops"], run["value"], color=style["color"], alpha=0.35,
                        linewidth=0.7, gid=f"run-{objective}")
            final = final_points(pts)
            ax.plot(final["flops"], final["value"], linestyle="none", marker=style["marker"],
                    color=style["color"], markeredgecolor="white", markeredgewidth=0.4,
                    gid=f"points-{objective}")
            if fits is not None:
                boots[objective] = _fit_of(fits, task, metric, objective)
                _draw_fit(ax, boots[objective], _fit_grid(final["flops"].to_numpy(float)), style,
                          objective)
        if set(OBJECTIVES) <= set(boots):
            _annotate_multiplier(ax, boots, rows, multiplier_level)
        _log_x_axis(ax)
        ax.set_ylabel(_loss_label(task, metric))
        ax.legend(handles=_objective_handles(objectives_in(rows), fits is not None), frameon=False,
                  loc="upper right")
    if out is not None:
        save_figure(fig, out)
    return fig


def _loss_label(task: str, metric: str) -> str:
    return f"{_title(task)} {metric}" + (" (nats/token)" if metric == "loss" else "")


def _annotate_multiplier(ax, boots, rows, level) -> None:
    if level is None:
        level = multiplier_level({o: boots[o].fit for o in OBJECTIVES}, largest_compute(rows))
    try:
        estimate, (low, high) = compute_multiplier_interval(boots[MDM], boots[ARM], level)
    except ValueError:
        return  # the level is beyond one fit's irreducible loss: no multiplier to state
    high_text = "\u221e" if not np.isfinite(high) else f"{high:.3g}"
    confidence = boots[ARM].confidence
    ax.axhline(level, color="0.6", linewidth=0.6, linestyle="--", gid="multiplier-level")
    ax.text(0.97, 0.8, f"MDM needs {estimate:.3g}\u00d7 the compute\nof ARM to reach loss "
            f"{level:.3g}\n({confidence:.0%} CI {low:.3g}\u2013{high_text})",
            transform=ax.transAxes, fontsize=6.5, ha="right", va="top", linespacing=1.3,
            gid="multiplier")


# ---------------------------------------------------------------------------------------------
# IsoFLOP slices
# ---------------------------------------------------------------------------------------------
def _budget_shades(color: str, n: int) -> list:
    """n shades of an objective's colour, light (small budget) to dark (large budget)."""
    base = np.array(mcolors.to_rgb(color))
    mix = np.linspace(0.55, 0.0, n) if n > 1 else np.zeros(1)
    dark = np.linspace(1.0, 0.6, n) if n > 1 else np.ones(1)
    return [tuple(np.clip((1 - m) * base * d + m * 1.0, 0, 1)) for m, d in zip(mix, dark)]


def _format_flops(c: float) -> str:
    exponent = int(np.floor(np.log10(c)))
    mantissa = c / 10**exponent
    if np.isclose(mantissa, 1.0):
        return rf"$10^{{{exponent}}}$"
    return rf"${mantissa:.2g}\times10^{{{exponent}}}$"


def plot_allocation(minima: pd.DataFrame, fits: Mapping[str, object],
                    out: str | Path | None = None) -> Figure:
    """N*(C) and D*(C) = C / 6N* against compute, per objective (Hoffmann et al. 2022, Fig. 3).

    Filled markers are the optima the fits use (``analysis.optimal_allocation.allocation_points``);
    hollow ones are the other slices' minima (an extrapolated vertex or the best run). ``fits`` maps
    an objective to its ``analysis.fits.AllocationFit``, drawn as a line with its exponent in the
    legend.
    """
    with rc_context(STYLE):
        fig = _new_figure(PAGE_WIDTH_IN, 2.4)
        axes = fig.subplots(1, 2)
        for objective in objectives_in(minima):
            style = OBJECTIVE_STYLE[objective]
            rows = minima[minima["objective"] == objective]
            used = allocation_points(minima, objective)
            other = rows.drop(used.index)
            for ax, column in zip(axes, ("params", "tokens")):
                value = f"optimal_{column}"
                label = style["label"]
                if objective in fits:
                    fit = fits[objective]
                    exponent = fit.exponent if column == "params" else 1 - fit.exponent
                    grid = _fit_grid(rows["flops_budget"].to_numpy(float))
                    curve = fit.optimal_params(grid) if column == "params" else fit.optimal_tokens(grid)
                    ax.plot(grid, curve, color=style["color"], gid=f"fit-{objective}")
                    label = f"{label}: {'N' if column == 'params' else 'D'}* ∝ C^{exponent:.2f}"
                ax.plot(used["flops_budget"], used[value], linestyle="none", marker=style["marker"],
                        color=style["color"], markeredgecolor="white", markeredgewidth=0.4,
                        label=label, gid=f"optima-{objective}")
                ax.plot(other["flops_budget"], other[value], linestyle="none", marker=style["marker"],
                        markerfacecolor="none", color=style["color"], gid=f"bounds-{objective}")
        for ax, label in zip(axes, ("Loss-optimal N*", "Loss-optimal tokens D*")):
            _log_x_axis(ax)
            ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.legend(frameon=False, loc="upper left")
    if out is not None:
        save_figure(fig, out)
    return fig


def plot_isoflop(df: pd.DataFrame, *, task: str = VALIDATION, metric: str = "loss",
                 minima: pd.DataFrame | None = None, out: str | Path | None = None) -> Figure:
    """Loss vs non-embedding parameters, one curve per budget and one panel per objective.

    Each run's final evaluation is a point; slices with 3+ sizes get their parabola in log N, and
    every slice's minimum (``analysis.optimal_allocation.isoflop_minima``) is marked with a star.
    ``minima`` are those minima where the caller has them already (of the same ``df``, ``task`` and
    ``metric``, e.g. ``analysis.optimal_allocation.isoflop_optima``); None computes them here.
    """
    check_table(df)
    final = final_points(select(df, task, metric))
    if final.groupby(["objective", "flops_budget"])["non_embedding_params"].nunique().max() < 2:
        raise ValueError("no IsoFLOP slice to draw: every budget has a single model size; "
                         "IsoFLOP curves need several sizes trained at the same budget")
    if minima is None:
        minima = isoflop_minima(df, task=task, metric=metric)
    objectives = objectives_in(final)
    budgets = np.sort(final["flops_budget"].unique())
    with rc_context(STYLE):
        fig = _new_figure(min(COLUMN_WIDTH_IN * len(objectives), PAGE_WIDTH_IN), 2.5)
        axes = np.atleast_1d(fig.subplots(1, len(objectives), sharey=True))
        for ax, objective in zip(axes, objectives):
            style = OBJECTIVE_STYLE[objective]
            shades = dict(zip(budgets, _budget_shades(style["color"], budgets.size)))
            pts = final[final["objective"] == objective]
            for budget, sl in pts.groupby("flops_budget", sort=True):
                n, y = sl["non_embedding_params"].to_numpy(float), sl["value"].to_numpy(float)
                ax.plot(n, y, linestyle="none", marker=style["marker"], color=shades[budget],
                        markeredgecolor="white", markeredgewidth=0.4, gid=f"points-{objective}")
                right = np.argmax(n)  # label each slice at its right end (direct labelling)
                ax.annotate(_format_flops(budget), (n[right], y[right]), xytext=(4, 0),
                            textcoords="offset points", va="center", fontsize=6.5,
                            color=shades[budget], gid=f"budget-{objective}")
                best = minima[(minima["objective"] == objective) & (minima["flops_budget"] == budget)].iloc[0]
                if best["method"] == "parabola":
                    grid = np.logspace(np.log10(n.min()) - 0.05, np.log10(n.max()) + 0.05, 100)
                    ax.plot(grid, fit_isoflop(n, y).predict(grid), color=shades[budget],
                            linewidth=1.0, gid=f"fit-{objective}")
                ax.plot(best["optimal_params"], best["optimal_loss"], marker="*", markersize=7,
                        color=shades[budget], markeredgecolor="black", markeredgewidth=0.5,
                        linestyle="none", gid=f"minimum-{objective}")
            ax.set_xscale("log")
            ax.margins(x=0.15)
            _log_x_axis(ax, label=PARAMS_LABEL)
            ax.grid(True, which="major")
            ax.set_title(style["label"])
        axes[-1].text(0.02, 0.03, f"curves labelled by {FLOPS_LABEL[0].lower()}{FLOPS_LABEL[1:]}",
                      transform=axes[-1].transAxes, ha="left", va="bottom", fontsize=6.5,
                      color="0.35", style="italic")
        axes[0].set_ylabel(_loss_label(task, metric))
    if out is not None:
        save_figure(fig, out)
    return fig

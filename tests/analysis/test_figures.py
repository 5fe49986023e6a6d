"""Figures draw every run of the tidy table, one panel per task, with consistent objective
colours and the fits made for them (analysis/grid_fits.py), and refuse bad tables with a clear
message (analysis/figures.py)."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import rgb_to_hsv, to_hex, to_rgb

from analysis.figures import FLOPS_LABEL, OBJECTIVE_STYLE, plot_isoflop, plot_loss_vs_compute, plot_task_scaling
from analysis.fits import ChinchillaFit
from analysis.grid_fits import fit_accuracy_curves, fit_loss_frontiers
from analysis.optimal_allocation import isoflop_minima
from analysis.results_table import REQUIRED_COLUMNS, final_points

CHANCE = {"mmlu": 0.25, "arc_c": 0.25, "cmmlu": 0.25, "piqa": 0.5, "gsm8k": 0.0, "humaneval": 0.0}
MIDPOINTS = {"mmlu": 21.8, "arc_c": 21.3, "cmmlu": 22.0, "piqa": 20.6, "gsm8k": 22.4, "humaneval": 22.3}
LAW = ChinchillaFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, n_points=0)


def synthetic_study(tasks=("mmlu", "piqa", "gsm8k"), budgets=(1e20, 1e21, 1e22, 1e23),
                    sizes_per_budget=3, evals_per_run=3, seed=0) -> pd.DataFrame:
    """A FLOP-matched grid: every budget x size x objective is a run, evaluated along training.

    Validation loss follows Chinchilla's law; MDM's is ARM's at 1/16 of the compute (SMDM).
    Accuracies are sigmoids in log-compute above each task's chance level, plus noise.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for objective in ("arm", "mdm"):
        shift = 0.0 if objective == "arm" else np.log10(16)
        for budget in budgets:
            n_opt, _ = LAW.optimal_allocation(budget)
            for n in n_opt * np.logspace(-0.6, 0.6, sizes_per_budget):
                run_id = f"{objective}-{budget:.0e}-{n:.2e}"
                for frac in np.linspace(1.0 / evals_per_run, 1.0, evals_per_run):
                    tokens = frac * budget / (6 * n)
                    flops = 6 * n * tokens
                    base = dict(run_id=run_id, grid="test", objective=objective, model=f"{n:.2e}",
                                non_embedding_params=n, tokens=tokens, flops=flops,
                                flops_budget=budget, seed=0)
                    scale = 16 ** (-0.5) if objective == "mdm" else 1.0
                    loss = LAW.predict(n * scale, tokens * scale) * np.exp(rng.normal(0, 0.003))
                    rows.append({**base, "task": "validation", "metric": "loss", "value": loss})
                    for task in tasks:
                        chance = CHANCE[task]
                        z = 1.6 * (np.log10(flops) - MIDPOINTS[task] - shift)
                        acc = chance + (0.85 - chance) / (1 + np.exp(-z)) + rng.normal(0, 0.012)
                        rows.append({**base, "task": task, "metric": "accuracy",
                                     "value": float(np.clip(acc, 0, 1))})
    return pd.DataFrame(rows, columns=REQUIRED_COLUMNS)


@pytest.fixture(scope="module")
def study():
    return synthetic_study()


def _points(ax, objective):
    """(x, y) of the point markers an axis holds for one objective."""
    xs, ys = [], []
    for line in ax.get_lines():
        if line.get_gid() == f"points-{objective}":
            xs.extend(line.get_xdata())
            ys.extend(line.get_ydata())
    return sorted(zip(np.round(np.log10(xs), 9), np.round(ys, 12)))


def _expected(rows):
    return sorted(zip(np.round(np.log10(rows["flops"].to_numpy(float)), 9),
                      np.round(rows["value"].to_numpy(float), 12)))


def test_task_scaling_has_one_panel_per_task_with_every_point(study, tmp_path):
    fig = plot_task_scaling(study, CHANCE, fits=fit_accuracy_curves(study, CHANCE, n_resamples=8),
                            out=tmp_path / "fig3")
    assert [ax.get_title() for ax in fig.axes] == ["MMLU", "PIQA", "GSM8K"]
    for ax, task in zip(fig.axes, ("mmlu", "piqa", "gsm8k")):
        assert ax.get_xscale() == "log"
        for objective in ("arm", "mdm"):
            rows = study[(study["task"] == task) & (study["objective"] == objective)]
            assert _points(ax, objective) == _expected(rows)  # every run, every evaluation
            fits = [ln for ln in ax.get_lines() if ln.get_gid() == f"fit-{objective}"]
            assert len(fits) == 1 and to_hex(fits[0].get_color()) == OBJECTIVE_STYLE[objective]["color"].lower()
            bands = [c for c in ax.collections if c.get_gid() == f"band-{objective}"]
            assert len(bands) == 1
        chance_line = [ln for ln in ax.get_lines() if ln.get_gid() == "chance"][0]
        assert chance_line.get_ydata()[0] == CHANCE[task]
    assert fig.axes[0].get_xlabel() == FLOPS_LABEL
    for suffix in (".png", ".pdf"):
        assert (tmp_path / f"fig3{suffix}").stat().st_size > 5_000


def test_task_scaling_fit_follows_the_points(study):
    fig = plot_task_scaling(study, CHANCE, tasks=["mmlu"],
                            fits=fit_accuracy_curves(study, CHANCE, tasks=["mmlu"], n_resamples=8))
    ax = fig.axes[0]
    for objective in ("arm", "mdm"):
        fit = [ln for ln in ax.get_lines() if ln.get_gid() == f"fit-{objective}"][0]
        x, y = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
        shift = 0.0 if objective == "arm" else np.log10(16)
        truth = 0.25 + 0.6 / (1 + np.exp(-1.6 * (np.log10(x) - MIDPOINTS["mmlu"] - shift)))
        assert np.max(np.abs(y - truth)) < 0.05


def test_task_scaling_two_step_fit_uses_the_task_loss(study):
    """OLMo-ladder form: accuracy generated as a sigmoid of a task loss that is a power law in C."""
    rows = study[study["task"] == "validation"].copy()
    task_loss = 1.0 + 40.0 * rows["flops"].to_numpy() ** -0.07
    acc = 0.25 + 0.6 / (1 + np.exp(8.0 * (task_loss - 1.95)))
    table = pd.concat([rows.assign(task="mmlu", metric="task_loss", value=task_loss),
                       rows.assign(task="mmlu", metric="accuracy", value=acc)], ignore_index=True)
    fits = fit_accuracy_curves(table, CHANCE, task_loss_metric="task_loss", n_resamples=6)
    fig = plot_task_scaling(table, CHANCE, fits=fits)
    fit = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "fit-arm"][0]
    x, y = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    truth = 0.25 + 0.6 / (1 + np.exp(8.0 * (1.0 + 40.0 * x**-0.07 - 1.95)))
    assert np.max(np.abs(y - truth)) < 0.03
    with pytest.raises(ValueError, match="'task_loss' is missing at 1 accuracy point"):
        fit_accuracy_curves(table.drop(index=0), CHANCE, task_loss_metric="task_loss")


def test_objective_colours_are_the_same_in_every_figure(study):
    """Points carry the objective's colour; IsoFLOP budget shades keep the objective's hue."""
    hue = lambda c: rgb_to_hsv(to_rgb(c))[0]  # noqa: E731
    figs = [plot_task_scaling(study, CHANCE), plot_loss_vs_compute(study)]
    iso = plot_isoflop(study)
    checked = 0
    for fig in figs + [iso]:
        for ax in fig.axes:
            for line in ax.get_lines():
                gid = line.get_gid() or ""
                if not gid.startswith("points-"):
                    continue
                expected = OBJECTIVE_STYLE[gid.split("-", 1)[1]]["color"]
                if fig is iso:
                    assert hue(line.get_color()) == pytest.approx(hue(expected), abs=0.01)
                else:
                    assert to_hex(line.get_color()) == expected.lower()
                checked += 1
    assert checked == 3 * 2 + 2 + 2 * 4


def test_loss_vs_compute_draws_every_run_and_the_multiplier(study, tmp_path):
    fig = plot_loss_vs_compute(study, fits=fit_loss_frontiers(study, n_resamples=10), out=tmp_path / "loss.png")
    (ax,) = fig.axes
    val = study[study["task"] == "validation"]
    for objective in ("arm", "mdm"):
        runs = [ln for ln in ax.get_lines() if ln.get_gid() == f"run-{objective}"]
        assert len(runs) == val.loc[val["objective"] == objective, "run_id"].nunique()
        drawn = sorted(v for ln in runs for v in np.round(ln.get_ydata(), 12))
        assert drawn == sorted(np.round(val.loc[val["objective"] == objective, "value"], 12))
    text = [t for t in ax.texts if t.get_gid() == "multiplier"][0].get_text()
    multiplier = float(text.split("needs ")[1].split("\u00d7")[0])
    assert 8 < multiplier < 32  # the synthetic MDM needs 16x ARM's compute
    # read at the lagging objective's best level (MDM's lowest loss), as the multipliers table is
    (level,) = {y for ln in ax.get_lines() if ln.get_gid() == "multiplier-level" for y in ln.get_ydata()}
    assert f"reach loss {level:.3g}" in text
    mdm_best = final_points(val[val["objective"] == "mdm"])["value"].min()
    arm_best = final_points(val[val["objective"] == "arm"])["value"].min()
    assert abs(level - mdm_best) < 0.25 * abs(mdm_best - arm_best)
    assert (tmp_path / "loss.png").exists() and (tmp_path / "loss.pdf").exists()


def test_isoflop_slices_and_minima(study, tmp_path):
    fig = plot_isoflop(study, out=tmp_path / "iso")
    assert [ax.get_title() for ax in fig.axes] == ["ARM", "MDM"]
    minima = isoflop_minima(study)
    assert len(minima) == 8 and (minima["method"] == "parabola").all()
    arm = minima[minima["objective"] == "arm"].sort_values("flops_budget")
    # optimal size grows with budget, close to Chinchilla's N*(C) (3 sizes spaced 4x apart)
    assert np.all(np.diff(arm["optimal_params"]) > 0)
    n_star, _ = LAW.optimal_allocation(arm["flops_budget"].to_numpy())
    np.testing.assert_allclose(np.log10(arm["optimal_params"]), np.log10(n_star), atol=0.25)
    for ax, objective in zip(fig.axes, ("arm", "mdm")):
        final = study[(study["task"] == "validation") & (study["objective"] == objective)]
        final = final.loc[final.groupby("run_id")["flops"].idxmax()]
        xs = sorted(x for ln in ax.get_lines() if ln.get_gid() == f"points-{objective}"
                    for x in ln.get_xdata())
        np.testing.assert_allclose(xs, np.sort(final["non_embedding_params"]))
        stars = [ln for ln in ax.get_lines() if ln.get_gid() == f"minimum-{objective}"]
        assert len(stars) == 4


def test_a_vertex_far_outside_its_slice_gives_way_to_the_best_run():
    """Two slices of the Shakespeare ladder: the ARM's at 8e10 bends, its vertex a little below the
    smallest size (kept, an extrapolation); the MDM's at 1.6e11 only rises with N, and its parabola
    put the vertex at 0.045 parameters."""
    slices = {("arm", 8e10): ([12_800, 23_200, 50_928], [3.770, 3.937, 4.276]),
              ("mdm", 1.6e11): ([12_800, 23_200, 50_928, 92_480], [5.036, 5.112, 5.266, 5.352])}
    rows = []
    for (objective, budget), (sizes, losses) in slices.items():
        for n, loss in zip(sizes, losses):
            rows.append(dict(run_id=f"{objective}-{n}", grid="ladder", objective=objective, model=str(n),
                             non_embedding_params=n, tokens=budget / (6 * n), flops=budget, flops_budget=budget,
                             seed=0, task="validation", metric="loss", value=loss))
    minima = isoflop_minima(pd.DataFrame(rows)).set_index("objective")
    arm, mdm = minima.loc["arm"], minima.loc["mdm"]
    assert arm["method"] == "parabola" and not arm["inside_sizes"] and 3_000 < arm["optimal_params"] < 12_800
    assert mdm["method"] == "best run" and mdm["optimal_params"] == 12_800 and mdm["optimal_loss"] == 5.036
    assert mdm["optimal_tokens"] == pytest.approx(1.6e11 / (6 * 12_800))


def test_isoflop_parameter_axes_label_powers_of_ten_only(study):
    """Slices within about a decade of sizes made matplotlib label every minor tick, and the labels
    ran into each other; each panel carries labels at powers of ten only, at least two in view."""
    narrow = study[study["non_embedding_params"] < 8e8]  # sizes 1.6e8..6.5e8: no power of ten among them
    fig = plot_isoflop(narrow)
    fig.canvas.draw()
    for ax in fig.axes:
        assert not [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()]
        low, high = ax.get_xlim()
        shown = [tick for tick in ax.get_xticks() if low <= tick <= high]
        assert len(shown) >= 2 and np.allclose(np.log10(shown), np.round(np.log10(shown)))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.iloc[0:0], "no rows"),
        (lambda df: df.drop(columns=["flops"]), r"lacks column\(s\) \['flops'\]"),
        (lambda df: df.assign(value=np.where(df.index == 5, np.nan, df["value"])), "NaN"),
        (lambda df: df.assign(objective="ar"), "unknown objective"),
        # final evaluations of one budget: every point sits at the same compute
        (lambda df: df[(df["flops_budget"] == 1e21) & np.isclose(df["flops"], 1e21)], "single budget"),
    ],
)
def test_bad_tables_give_clear_errors(study, mutate, message):
    with pytest.raises(ValueError, match=message):
        table = mutate(study)
        plot_task_scaling(table, CHANCE, fits=fit_accuracy_curves(table, CHANCE, n_resamples=4))


def test_missing_chance_or_task_is_named(study):
    with pytest.raises(ValueError, match=r"no chance level for task\(s\) \['gsm8k'\]"):
        plot_task_scaling(study, {"mmlu": 0.25, "piqa": 0.5}, tasks=["mmlu", "gsm8k"])
    with pytest.raises(ValueError, match="no rows for task='hellaswag'"):
        plot_task_scaling(study, {**CHANCE, "hellaswag": 0.25}, tasks=["hellaswag"])
    single_size = synthetic_study(sizes_per_budget=1, evals_per_run=1)
    with pytest.raises(ValueError, match="single model size"):
        plot_isoflop(single_size)


def test_accuracy_tick_labels_state_the_tick_values(study):
    """Narrow accuracy ranges put ticks at fractional percents (the smoke grid's arithmetic panel
    has them every 2.5%); each label must read its own value."""
    from matplotlib.ticker import AutoLocator, MultipleLocator

    fig = plot_task_scaling(study[study["task"] == "gsm8k"], {"gsm8k": 0.0})
    ax = fig.axes[0]
    for low, high, locator in ((0.0, 0.125, MultipleLocator(0.025)), (0.24, 0.39, AutoLocator()),
                               (0.2, 0.9, AutoLocator())):
        ax.set_ylim(low, high)
        ax.yaxis.set_major_locator(locator)
        fig.canvas.draw()
        labels = [(tick, label.get_text()) for tick, label in zip(ax.get_yticks(), ax.get_yticklabels())
                  if low <= tick <= high]
        assert len(labels) >= 3
        for tick, text in labels:
            assert float(text.rstrip("%").replace("\N{MINUS SIGN}", "-")) == pytest.approx(100 * tick, abs=1e-6), labels
    assert all(text.rstrip("%").isdigit() for _, text in labels), labels  # no needless decimals

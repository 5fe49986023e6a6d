"""``report.md`` of a comparison: what was read, the notes, the score table, the fitted results and
the figures, in one markdown page."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.tables import markdown_table, score_markdown


def report_markdown(grid: str, summary: str, messages: list[str], scores: pd.DataFrame,
                    tables: dict[str, pd.DataFrame], figures: list[Path], *, fitted: bool,
                    confidence: float, resample: str) -> str:
    """The report of grid ``grid``.

    ``summary`` is what was read and excluded (``GridRuns.summary``), ``messages`` the notes,
    ``scores`` the ``analysis.tables.score_table``, ``tables`` the fitted results by name (written
    only where ``fitted``), ``figures`` the PNG files to show.
    """
    lines = [f"# ARM vs MDM: grid `{grid}`", "", "```", summary, "```", ""]
    if messages:
        lines += ["## Notes", "", *[f"- {m}" for m in messages], ""]
    lines += ["## Final scores per budget", "", score_markdown(scores)]
    if fitted:
        lines += [f"## Fitted parameters ({confidence:.0%} bootstrap intervals, resampling {resample})", "",
                  markdown_table(tables["fits"]), "## Compute multipliers", "",
                  "C_MDM / C_ARM: how many times ARM's compute MDM needs to reach `level`, the worse of "
                  "the two objectives' fitted levels at their largest budgets.", "", markdown_table(tables["multipliers"]),
                  "## Held-out check (fit all budgets but the largest, predict it)", "",
                  markdown_table(tables["held_out"])]
        if "isoflop_optima" in tables:
            lines += ["## IsoFLOP optima (Hoffmann et al. Approach 2)", "",
                      "Per budget, the vertex of a parabola in log N through the slice's final validation "
                      "losses (or the best run where the slice has fewer than 3 sizes or is not convex); "
                      "D* = C / 6N*.", "", markdown_table(tables["isoflop_optima"]),
                      f"N*(C) = G C^a through the optima inside the sizes trained ({confidence:.0%} "
                      "t-intervals on a; Chinchilla: a = 0.49, Kaplan et al.: 0.73):", "",
                      markdown_table(tables["allocation"])]
    if figures:
        lines += ["## Figures", "", *[f"![{f.stem}]({f.name})" for f in figures], ""]
    return "\n".join(lines)

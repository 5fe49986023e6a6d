"""The comparison's markdown tables (analysis/tables.py): GitHub-flavoured rows, numbers to four
significant digits, an empty cell for a missing value, the objectives side by side."""

from __future__ import annotations

import pandas as pd

from analysis.tables import markdown_table, score_markdown


def test_a_frame_renders_as_markdown_rows_with_empty_cells_for_missing_values():
    frame = pd.DataFrame({"quantity": ["validation/loss", "toy_mc/acc"], "estimate": [16.123456, float("nan")],
                          "n_points": [4, 12], "covered": ["1/2", "2/2"], "inside": [True, False]})
    assert markdown_table(frame) == ("| quantity | estimate | n_points | covered | inside |\n"
                                     "|---|---|---|---|---|\n"
                                     "| validation/loss | 16.12 | 4 | 1/2 | True |\n"
                                     "| toy_mc/acc |  | 12 | 2/2 | False |\n")
    assert markdown_table(frame.iloc[0:0]) == ("| quantity | estimate | n_points | covered | inside |\n"
                                               "|---|---|---|---|---|\n")


def test_scores_put_the_objectives_side_by_side():
    table = pd.DataFrame({"task": ["toy_mc"] * 3, "metric": ["acc"] * 3, "flops_budget": [1e16, 1e16, 1e17],
                          "non_embedding_params": [1e6, 1e6, 2e6], "model": ["n1e6", "n1e6", "n2e6"],
                          "objective": ["arm", "mdm", "arm"], "n_runs": [2, 1, 1], "mean": [0.41234, 0.3, 0.5],
                          "std": [0.0123, float("nan"), float("nan")]})
    assert score_markdown(table) == ("| task | metric | flops_budget | model | ARM | MDM |\n"
                                     "|---|---|---|---|---|---|\n"
                                     "| toy_mc | acc | 1e+16 | n1e6 | 0.4123 ± 0.012 (n=2) | 0.3 (n=1) |\n"
                                     "| toy_mc | acc | 1e+17 | n2e6 | 0.5 (n=1) |  |\n")
    assert score_markdown(table.iloc[0:0]) == "| task | metric | flops_budget | model |\n|---|---|---|---|\n"

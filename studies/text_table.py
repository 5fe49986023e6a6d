"""Tables for the terminal and for markdown reports, from rows of already formatted cells.

Plain: columns padded to their widest cell, two spaces apart, a rule of dashes under the header,
``right`` naming the columns to right-align (numbers). Markdown: GitHub-flavoured, one row per line.
The plan and status tables of a sweep, the evaluation and probe tables of a checkpoint and the
comparison report all render through here; ``si`` writes the counts in their cells (parameters,
tokens) with an SI suffix.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def si(value: float, digits: int = 3) -> str:
    """969246720 -> '969M', 1.7e13 -> '17.2T' (counts of parameters and tokens)."""
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def render_table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = (),
                 *, markdown: bool = False) -> str:
    header = [str(h) for h in header]
    rows = [[str(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    right = set(right)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])

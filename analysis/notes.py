"""The notes of a comparison report, one line per cause.

A grid too small to fit fails the same way for every task and objective: with three budgets, every
bootstrap of every quantity fails for one reason, and the figures that draw those fits go without
curves for that same reason. A note per (quantity, objective, figure) buries that one reason under
a dozen copies of it. ``Notes`` groups what it is told by cause and writes one line per cause that
names everything the cause affects::

    no fit: validation/loss (ARM, MDM), toy_mc/acc (ARM, MDM); drawn without fitted curves:
    loss_vs_compute, task_scaling. Cause: 40-44 of 200 bootstrap resamples could not be fitted: ...

Causes that differ only in their numbers (how many resamples failed) are one cause; the line gives
the range of each number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])")


def _shape(cause: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The cause's text with its numbers cut out, and the numbers."""
    parts = _NUMBER.split(cause)
    return tuple(parts[0::2]), tuple(parts[1::2])


def _span(values: list[str]) -> str:
    distinct = list(dict.fromkeys(values))
    if len(distinct) == 1:
        return distinct[0]
    numbers = sorted(distinct, key=float)
    return f"{numbers[0]}-{numbers[-1]}"


@dataclass
class _Group:
    text: tuple[str, ...]
    numbers: list[tuple[str, ...]] = field(default_factory=list)
    effects: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # effect -> subject -> qualifiers

    def cause(self) -> str:
        if not self.numbers or not self.numbers[0]:
            return "".join(self.text)
        spans = [_span([n[i] for n in self.numbers]) for i in range(len(self.numbers[0]))]
        out = [self.text[0]]
        for span, rest in zip(spans, self.text[1:]):
            out += [span, rest]
        return "".join(out)

    def line(self) -> str:
        effects = []
        for effect, subjects in self.effects.items():
            named = [f"{s} ({', '.join(q)})" if q else s for s, q in subjects.items()]
            effects.append(f"{effect}: {', '.join(named)}" if named else effect)
        return f"{'; '.join(effects)}. Cause: {self.cause()}" if effects else self.cause()


class Notes:
    """Messages for the reader, grouped by cause (see the module docstring)."""

    def __init__(self):
        self._groups: dict[tuple[str, ...], _Group] = {}

    def add(self, cause: str, effect: str | None = None, subject: str | None = None,
            qualifier: str | None = None) -> None:
        """Record that ``cause`` had ``effect`` on ``subject`` (e.g. "no fit", "validation/loss", "ARM").

        Without an effect the cause is a note of its own, written once however often it is added.
        """
        text, numbers = _shape(cause.strip())
        group = self._groups.setdefault(text, _Group(text))
        if numbers not in group.numbers:
            group.numbers.append(numbers)
        if effect is None:
            return
        subjects = group.effects.setdefault(effect, {})
        if subject is not None:
            qualifiers = subjects.setdefault(subject, [])
            if qualifier is not None and qualifier not in qualifiers:
                qualifiers.append(qualifier)

    def lines(self) -> list[str]:
        return [group.line() for group in self._groups.values()]

    def __len__(self) -> int:
        return len(self._groups)

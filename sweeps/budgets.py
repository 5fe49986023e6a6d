"""FLOP budgets turned into whole optimizer steps, for FLOP-matched sweeps.

Budgets follow the scaling-law convention of LLaDA (Nie et al. 2025, Sec. 3.1) and Kaplan et al.
(2020), counted by ``models.flops``: training compute C = 6 N D, with N the *non-embedding* parameter
count and D the training tokens. A run's token count is derived from its budget, D = C / (6 N), and
rounded to whole optimizer steps of ``global_batch_size x seq_len`` tokens; the realised C of the
rounded run (not the nominal budget) is what a run records and what every plot uses.

Pure Python: no torch, so the planner stays instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from models.flops import training_flops

DEFAULT_TOLERANCE = 0.01


def budget_label(flops_budget: float) -> str:
    """The budget in the fewest significant digits that read back as the same number (``4.3e+11``).

    Run names carry it, so two budgets of one grid never share a name (``.1g`` would name 1e12 and
    1.3e12 alike); a budget written as ``4.3e11`` in a grid keeps that spelling.
    """
    for digits in range(1, 18):
        text = f"{flops_budget:.{digits}g}"
        if float(text) == flops_budget:
            return text
    return repr(flops_budget)


def same_budget(a: float, b: float) -> bool:
    """Whether two budgets are the same number up to float spelling (``4e11`` and ``4.0e+11``)."""
    return abs(a / b - 1) < 1e-9


@dataclass(frozen=True)
class BudgetPlan:
    """A FLOP budget turned into whole optimizer steps, with the compute that is actually spent."""

    flops_budget: float
    non_embedding_params: int
    tokens_per_step: int
    steps: int
    tokens: int
    flops: float  # realised 6 N D, recorded by the run

    @property
    def relative_error(self) -> float:
        return self.flops / self.flops_budget - 1.0

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.non_embedding_params


def min_steps_for_tolerance(tolerance: float = DEFAULT_TOLERANCE) -> int:
    """Rounding the exact step count s to the nearest integer moves C by at most 0.5 / s, so
    s >= 0.5 / tolerance guarantees the realised C is within ``tolerance`` of the budget."""
    return math.ceil(0.5 / tolerance)


def flops_per_step(non_embedding_params: int, global_batch_size: int, seq_len: int) -> float:
    return training_flops(non_embedding_params, global_batch_size * seq_len)


def smallest_budget(
    non_embedding_params: int, global_batch_size: int, seq_len: int, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """The smallest budget whose step rounding is guaranteed to stay within ``tolerance``."""
    return min_steps_for_tolerance(tolerance) * flops_per_step(non_embedding_params, global_batch_size, seq_len)


def check_budget_value(flops_budget: object) -> float:
    """A budget must be a finite, positive number of FLOPs; anything else is a ValueError."""
    if isinstance(flops_budget, bool) or not isinstance(flops_budget, Real):
        raise ValueError(
            f"FLOP budget {flops_budget!r} is not a number; write budgets as floats such as 1e20"
        )
    value = float(flops_budget)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"FLOP budget {value:g} must be a finite positive number of FLOPs (e.g. 1e20)")
    return value


def plan_budget(
    flops_budget: float,
    non_embedding_params: int,
    global_batch_size: int,
    seq_len: int,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    model: str = "the model",
) -> BudgetPlan:
    """Turn a FLOP budget into whole optimizer steps of ``global_batch_size x seq_len`` tokens.

    Steps are rounded to the nearest integer; the realised C = 6 N (steps x batch x L) must stay
    within ``tolerance`` of the budget, otherwise the budget is too small for this batch and the
    error names the smallest budget that works.
    """
    budget = check_budget_value(flops_budget)
    if non_embedding_params < 1 or global_batch_size < 1 or seq_len < 1:
        raise ValueError(
            f"need positive N, global batch and sequence length, got N={non_embedding_params}, "
            f"global_batch_size={global_batch_size}, seq_len={seq_len}"
        )
    per_step = flops_per_step(non_embedding_params, global_batch_size, seq_len)
    exact_steps = budget / per_step
    floor_budget = smallest_budget(non_embedding_params, global_batch_size, seq_len, tolerance)
    where = f"{model} (N={non_embedding_params:,}) at batch {global_batch_size} x {seq_len} tokens"
    if exact_steps < 1:
        raise ValueError(
            f"budget {budget:.3g} FLOPs is too small for one optimizer step of {where} "
            f"(one step costs {per_step:.3g} FLOPs); the smallest budget is {floor_budget:.3g} "
            f"(>= {min_steps_for_tolerance(tolerance)} steps keep C within {tolerance:.0%}), "
            f"or reduce trainer.global_batch_size / trainer.seq_len"
        )
    steps = int(math.floor(exact_steps + 0.5))
    tokens_per_step = global_batch_size * seq_len
    tokens = steps * tokens_per_step
    flops = training_flops(non_embedding_params, tokens)
    if abs(flops / budget - 1.0) > tolerance:
        raise ValueError(
            f"budget {budget:.3g} FLOPs gives {exact_steps:.2f} optimizer steps of {where}; rounding to "
            f"{steps} steps spends {flops:.3g} FLOPs, {abs(flops / budget - 1):.1%} off (tolerance "
            f"{tolerance:.0%}); the smallest budget is {floor_budget:.3g}, or reduce "
            f"trainer.global_batch_size / trainer.seq_len"
        )
    return BudgetPlan(
        flops_budget=budget,
        non_embedding_params=int(non_embedding_params),
        tokens_per_step=tokens_per_step,
        steps=steps,
        tokens=tokens,
        flops=flops,
    )


__all__ = [
    "DEFAULT_TOLERANCE",
    "BudgetPlan",
    "budget_label",
    "check_budget_value",
    "flops_per_step",
    "min_steps_for_tolerance",
    "plan_budget",
    "same_budget",
    "smallest_budget",
]

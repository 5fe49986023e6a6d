"""sweeps/budgets.py: FLOP budgets rounded to whole optimizer steps, budget labels, and bad budgets."""

from __future__ import annotations

import random

import pytest

from models.config import preset
from sweeps import budgets


def test_plan_rounds_to_whole_steps_within_tolerance():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randrange(10_000, 10_000_000_000)
        batch, seq = rng.choice([(1280, 4096), (16, 128), (64, 256), (3, 7)])
        floor = budgets.smallest_budget(n, batch, seq)
        budget = floor * 10 ** rng.uniform(0, 4)
        plan = budgets.plan_budget(budget, n, batch, seq)
        assert plan.tokens == plan.steps * batch * seq
        assert plan.flops == pytest.approx(6 * n * plan.tokens)
        assert abs(plan.flops / budget - 1) <= 0.01
        # nearest whole step: one step more or fewer is never closer to the budget
        for other in (plan.steps - 1, plan.steps + 1):
            assert abs(6 * n * other * batch * seq - budget) >= abs(plan.flops - budget) - 1e-6 * budget


def test_exact_multiple_of_a_step_is_allowed_even_for_few_steps():
    n, batch, seq = 92_480, 2, 32
    per_step = 6 * n * batch * seq
    plan = budgets.plan_budget(3 * per_step, n, batch, seq)
    assert plan.steps == 3 and plan.flops == 3 * per_step


def test_budget_below_one_step_names_the_smallest_budget():
    n = preset("llada-1b").non_embedding_params
    with pytest.raises(ValueError, match="too small for one optimizer step") as err:
        budgets.plan_budget(1e15, n, 1280, 4096, model="llada-1b")
    assert f"{budgets.smallest_budget(n, 1280, 4096):.3g}" in str(err.value)


def test_budget_whose_rounding_misses_the_tolerance_is_refused():
    n, batch, seq = 1_000_000, 16, 128
    per_step = 6 * n * batch * seq
    with pytest.raises(ValueError, match="off"):
        budgets.plan_budget(2.5 * per_step, n, batch, seq)  # 2 or 3 steps: 20% off either way


@pytest.mark.parametrize("bad", [-1e20, 0.0, float("nan"), float("inf"), "1e20", None, True])
def test_non_positive_or_non_numeric_budget(bad):
    with pytest.raises(ValueError, match="budget"):
        budgets.plan_budget(bad, 1_000_000, 16, 128)


def test_budget_labels_are_short_and_read_back_exactly():
    from sweeps.budgets import budget_label

    assert [budget_label(b) for b in (1e20, 4.3e11, 1.3e12, 3.1622776601683794e21)] == [
        "1e+20", "4.3e+11", "1.3e+12", "3.1622776601683794e+21"]
    budgets = [1e12 * (1 + i * 1e-9) for i in range(50)]
    assert all(float(budget_label(b)) == b for b in budgets)
    assert len({budget_label(b) for b in budgets}) == 50

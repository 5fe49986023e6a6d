"""Tests of models/recipe.py: the learning-rate schedules."""

import pytest

from models.recipe import ScheduleConfig, lr_multiplier


def test_wsd_follows_the_llada_shape():
    # LLaDA 8B: 2.3T tokens; peak until 1.2T, 1/4 of peak until 2.0T, then linear to 1e-5/4e-4.
    schedule = ScheduleConfig(kind="wsd", warmup_steps=20, drop_at=1.2 / 2.3, decay_start=2.0 / 2.3,
                              drop_ratio=0.25, final_ratio=0.025)
    total = 2300
    assert lr_multiplier(0, total, schedule) == pytest.approx(1 / 20)
    assert lr_multiplier(19, total, schedule) == pytest.approx(1.0)
    assert lr_multiplier(1000, total, schedule) == 1.0
    assert lr_multiplier(1199, total, schedule) == 1.0
    assert lr_multiplier(1201, total, schedule) == 0.25
    assert lr_multiplier(1999, total, schedule) == 0.25
    assert lr_multiplier(2150, total, schedule) == pytest.approx(0.25 + (0.025 - 0.25) * 0.5, rel=1e-3)
    assert lr_multiplier(total, total, schedule) == pytest.approx(0.025)


def test_warmup_is_capped_for_short_runs():
    schedule = ScheduleConfig(kind="constant", warmup_steps=2000, max_warmup_fraction=0.1)
    # 100 steps: warmup of 10 steps, not 2000
    assert lr_multiplier(9, 100, schedule) == pytest.approx(1.0)
    assert lr_multiplier(4, 100, schedule) == pytest.approx(0.5)


def test_cosine_decays_monotonically_to_final_ratio():
    schedule = ScheduleConfig(kind="cosine", warmup_steps=10, final_ratio=0.1)
    values = [lr_multiplier(step, 200, schedule) for step in range(10, 201)]
    assert values[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.1)


def test_unknown_schedule_kind_is_refused():
    with pytest.raises(ValueError, match="unknown schedule kind"):
        lr_multiplier(50, 100, ScheduleConfig(kind="linear", warmup_steps=0))


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_cooldown_holds_the_peak_to_the_branch_point_then_decays(shape):
    from models.recipe import cooldown_steps

    schedule = ScheduleConfig(kind="cooldown", warmup_steps=10, cooldown_fraction=0.2, cooldown_shape=shape,
                              final_ratio=0.0)
    total = 1000
    start = total - cooldown_steps(total, 0.2)
    assert start == 800
    assert lr_multiplier(4, total, schedule) == pytest.approx(0.5)  # warmup
    # exactly the peak up to and including the branch point, whatever the run's length: a trunk's
    # checkpoint there holds the rate every branch continues from
    assert all(lr_multiplier(s, total, schedule) == 1.0 for s in range(10, start + 1))
    assert all(lr_multiplier(s, 5000, schedule) == 1.0 for s in range(10, start + 1))
    cooling = [lr_multiplier(s, total, schedule) for s in range(start, total + 1)]
    assert all(a > b for a, b in zip(cooling, cooling[1:])) and cooling[-1] == 0.0
    # a quarter into the cooldown: linear 0.75, 1 - sqrt(0.25) = 0.5
    assert lr_multiplier(start + 50, total, schedule) == pytest.approx(0.75 if shape == "linear" else 0.5)


def test_a_trunk_never_cools_down():
    schedule = ScheduleConfig(kind="cooldown", warmup_steps=0, cooldown_fraction=0.0)
    assert {lr_multiplier(s, 100, schedule) for s in range(101)} == {1.0}

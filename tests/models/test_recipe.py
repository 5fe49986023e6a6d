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

"""Tests of studies/config.py (its checks of bad run configs: tests/sweeps/test_bad_input.py)."""

import pytest

from studies.config import eval_steps


def test_eval_steps_from_fractions():
    assert eval_steps([0.0, 0.25, 0.5, 1.0, 0.5], 10) == [0, 2, 5, 10]
    with pytest.raises(ValueError, match=r"at_fractions must lie in \[0, 1\]"):
        eval_steps([1.5], 10)

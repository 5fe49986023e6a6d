"""models/flops.py: C = 6ND accounting and its inverse, the attention-inclusive MFU count, and device-hours."""

from __future__ import annotations

import math

import pytest

from models.config import preset
from models.flops import device_hours, model_flops_per_token, tokens_for_budget, training_flops


def test_six_n_d_and_its_inverse():
    n = preset("llada-1b").non_embedding_params
    assert training_flops(n, 2.0e12) == pytest.approx(6 * n * 2.0e12)
    assert tokens_for_budget(training_flops(n, 3.3e9), n) == pytest.approx(3.3e9)


def test_attention_inclusive_count_is_palm_mfu_accounting():
    m = preset("arm-1b")
    per_token = model_flops_per_token(m, 4096)
    # PaLM App. B: 6N + 12 * L_layers * H * Q * T with H * Q = d_model (heads x head dim), T = context.
    assert per_token - 6 * m.non_embedding_params == 12 * m.n_layers * (m.n_heads * m.head_dim) * 4096
    # at L = 4096 attention adds a sizeable share for a 1B model, and vanishes for short contexts
    short = model_flops_per_token(m, 16)
    assert per_token / (6 * m.non_embedding_params) > 1.3
    assert short / (6 * m.non_embedding_params) < 1.01


def test_device_hours_reproduce_llada_8b_cost():
    # LLaDA 8B: about 1.1e23 FLOPs in 0.13M H800 hours, i.e. about 24% of 989 TFLOP/s.
    hours = device_hours(1.1e23, 989e12, 0.24)
    assert math.isclose(hours, 0.13e6, rel_tol=0.05)
    with pytest.raises(ValueError):
        device_hours(1e20, 989e12, 0.0)

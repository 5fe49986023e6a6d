"""Training recipe configs: optimizer, learning-rate schedule, MDM forward process.

Plain dataclasses (no torch), shared by the Lightning module and the run schema in
``studies/config.py``, which uses them as OmegaConf structured configs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List


@dataclass
class OptimConfig:
    """AdamW (LLaDA: weight decay 0.1); norms and biases are not decayed."""

    lr: float = 4e-4
    weight_decay: float = 0.1
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class ScheduleConfig:
    """Learning-rate schedule as multiples of ``OptimConfig.lr``.

    ``wsd`` is LLaDA's warmup-stable-decay: warm up linearly over ``warmup_steps``; hold the peak
    until ``drop_at`` of training; hold ``drop_ratio`` x peak until ``decay_start``; decay linearly to
    ``final_ratio`` x peak at the end (LLaDA 8B: 4e-4 to 1.2T tokens, 1e-4 to 2.0T, then to 1e-5 at
    2.3T, i.e. drop_at=0.52, drop_ratio=0.25, decay_start=0.87, final_ratio=0.025).
    ``cosine`` warms up the same way and follows a half cosine to ``final_ratio`` x peak.
    ``cooldown`` is the warmup-stable-decay of MiniCPM (Hu et al. 2024) and Hägele et al. 2024: warm
    up, hold the peak, and cool down to ``final_ratio`` x peak over the last ``cooldown_fraction`` of
    the run, linearly or as 1 - sqrt (Hägele et al.'s best shape). Its stable phase does not depend on
    the run's length, so one constant-rate trunk serves every budget: a run of S steps is the trunk up
    to step S - cooldown_steps(S) plus its own cooldown (``sweeps/branching.py``).
    Warmup is capped at ``max_warmup_fraction`` of training so that small budgets still train.
    """

    kind: str = "wsd"
    warmup_steps: int = 2000
    max_warmup_fraction: float = 0.1
    drop_at: float = 0.52
    drop_ratio: float = 0.25
    decay_start: float = 0.87
    final_ratio: float = 0.025
    cooldown_fraction: float = 0.2  # cooldown: Hägele et al. 2024 match cosine with 10-20 %
    cooldown_shape: str = "linear"  # cooldown: linear or 1-sqrt


SCHEDULE_KINDS = ("wsd", "cosine", "constant", "cooldown")
COOLDOWN_SHAPES = ("linear", "1-sqrt")
T_SAMPLINGS = ("uniform", "stratified")


def check_schedule_names(schedule: ScheduleConfig) -> None:
    """The schedule's kind and cooldown shape are ones ``lr_multiplier`` knows: checked at launch by
    the run schema and again wherever a schedule is read."""
    if schedule.kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {schedule.kind!r}: schedule.kind must be one of "
                         f"{', '.join(SCHEDULE_KINDS)}")
    if schedule.cooldown_shape not in COOLDOWN_SHAPES:
        raise ValueError(f"unknown schedule.cooldown_shape {schedule.cooldown_shape!r}: schedule.cooldown_shape "
                         f"must be {' or '.join(COOLDOWN_SHAPES)}")


def check_t_sampling(t_sampling: str) -> None:
    if t_sampling not in T_SAMPLINGS:
        raise ValueError(f"unknown mdm.t_sampling {t_sampling!r}: mdm.t_sampling must be "
                         f"{' or '.join(T_SAMPLINGS)}")


def cooldown_steps(total_steps: int, cooldown_fraction: float) -> int:
    """Optimizer steps of a ``cooldown`` run's cooldown: the last ``cooldown_fraction`` of its steps,
    rounded to the nearest step. The run branches from its trunk at ``total_steps - cooldown_steps``."""
    return int(math.floor(cooldown_fraction * total_steps + 0.5))


def branch_point(total_steps: int, cooldown_fraction: float) -> int:
    """The last step of a ``cooldown`` run at the peak rate, where it branches from its trunk."""
    return total_steps - cooldown_steps(total_steps, cooldown_fraction)


@dataclass
class MDMConfig:
    """LLaDA's forward process: p_mask = (1 - eps) t + eps with t ~ U(0, 1); a fraction
    ``random_length_prob`` of pretraining sequences is cut to a length drawn from U[1, L]."""

    eps: float = 1e-3
    random_length_prob: float = 0.01
    # "uniform": t drawn independently per sequence (LLaDA). "stratified": the batch's t values are
    # (u + i) / B for i = 0..B-1 with one u ~ U(0, 1), shuffled (the low-discrepancy sampler of
    # Kingma et al. 2021 and of MDLM, Sahoo et al. 2024). Each t is still U(0, 1), so eq. 3 is
    # unchanged in expectation; a small batch just never draws all its t near 0, where the 1/t
    # weights make the loss estimate noisy.
    t_sampling: str = "uniform"


def lr_multiplier(step: int, total_steps: int, schedule: ScheduleConfig) -> float:
    """Learning rate at optimizer ``step`` (0-based) as a multiple of the peak learning rate."""
    check_schedule_names(schedule)
    warmup = min(schedule.warmup_steps, int(schedule.max_warmup_fraction * total_steps))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule.kind == "constant":
        return 1.0
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule.kind == "cosine":
        span = max(total_steps - warmup, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * min((step - warmup) / span, 1.0)))
        return schedule.final_ratio + (1 - schedule.final_ratio) * cosine
    if schedule.kind == "wsd":
        if progress < schedule.drop_at:
            return 1.0
        if progress < schedule.decay_start:
            return schedule.drop_ratio
        span = max(1.0 - schedule.decay_start, 1e-12)
        fraction = min((progress - schedule.decay_start) / span, 1.0)
        return schedule.drop_ratio + (schedule.final_ratio - schedule.drop_ratio) * fraction
    # cooldown, the one kind left (check_schedule_names admits no other).
    # Steps up to and including the branch point run at exactly the peak, so a run started from
    # its trunk's checkpoint there (whose optimizer holds the trunk's rate) continues as one
    # trained from scratch would.
    length = cooldown_steps(total_steps, schedule.cooldown_fraction)
    into = step - branch_point(total_steps, schedule.cooldown_fraction)
    if length == 0 or into <= 0:
        return 1.0
    x = min(into / length, 1.0)
    remaining = 1.0 - x if schedule.cooldown_shape == "linear" else 1.0 - math.sqrt(x)  # or "1-sqrt"
    return schedule.final_ratio + (1.0 - schedule.final_ratio) * remaining

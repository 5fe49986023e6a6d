"""The two training objectives and the one rule that ties each to its attention.

An ARM (autoregressive model) predicts the next token and needs causal attention; an MDM (masked
diffusion model, LLaDA eq. 3) predicts masked tokens from both sides and needs bidirectional
attention. ``ModelConfig.causal`` is the only architectural difference (LLaDA Sec. 2.1), so the
objective fixes it. The planner, the run schema, the Lightning module, the lm-eval model and the
analysis all name the objectives from here.

Pure Python: no torch, so planning stays instant.
"""

from __future__ import annotations

ARM = "arm"
MDM = "mdm"
OBJECTIVES = (ARM, MDM)


def causal_attention(objective: str) -> bool:
    """Whether ``objective`` trains with causal attention: an ARM does, an MDM does not."""
    return objective == ARM


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def check_attention(objective: str, causal: bool) -> None:
    """Refuse a model whose attention does not match its objective, naming the setting that fixes it."""
    check_objective(objective)
    wants = causal_attention(objective)
    if causal != wants:
        raise ValueError(
            f"objective {objective!r} needs model.causal={wants} ({'causal' if wants else 'bidirectional'} "
            f"attention; ARM: causal, MDM: bidirectional), got model.causal={causal}"
        )

"""ARM and MDM training objectives as pure functions of logits, targets and masks.

The randomness of the MDM forward process (which tokens are masked) is drawn by
:func:`mdm_forward_process`, separate from the loss arithmetic (:func:`mdm_loss`), so that a fixed
mask can be handed to the loss in a test and the same loss serves pretraining and SFT.

Both losses are weighted sums of per-token cross-entropies. :func:`arm_token_weights` and
:func:`mdm_token_weights` give those weights; :func:`arm_linear_loss` and :func:`mdm_linear_loss`
take hidden states and the output head's weight instead of logits and compute the same loss with
``models.linear_cross_entropy``, chunk by chunk, so that the full logits never exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.linear_cross_entropy import linear_cross_entropy
from models.recipe import check_t_sampling


IGNORE_INDEX = -100  # a target that scores nothing (F.cross_entropy's default ignore_index)


def _token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy, shaped like ``targets``, of logits [..., V] (e.g. [B, L, V] or the
    [M, V] rows of masked positions); zero where the target is IGNORE_INDEX. Flattened to [N, V]
    rather than passed as a transposed [B, V, L] view: the strided class dimension makes forward and
    backward several times slower on a CPU."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none",
                           ignore_index=IGNORE_INDEX).view(targets.shape)


def arm_loss(
    logits: torch.Tensor,  # [B, L, V]
    tokens: torch.Tensor,  # [B, L]
    target_mask: torch.Tensor | None = None,  # bool [B, L]: which tokens are scored as targets
) -> torch.Tensor:
    """Next-token cross-entropy, mean over scored targets: position i predicts token i+1.

    Pretraining scores every next token; SFT passes ``target_mask`` = response positions (the
    response's EOS padding included), so prompt tokens are never scored.
    """
    # Targets shifted left instead of logits sliced: slicing [:, :-1] would copy the [B, L, V] logits
    # (and fill a zero gradient for the slice in backward). The last position predicts nothing.
    targets = F.pad(tokens[:, 1:], (0, 1), value=IGNORE_INDEX)
    per_token = _token_cross_entropy(logits.float(), targets)[:, :-1]  # [B, L-1]
    if target_mask is None:
        return per_token.mean()
    scored = target_mask[:, 1:].to(per_token.dtype)
    count = scored.sum()
    if count == 0:
        raise ValueError("arm_loss: target_mask selects no target token")
    return (per_token * scored).sum() / count


def mdm_loss(
    logits: torch.Tensor,  # [B, L, V], or [M, V]: the logits of the M masked positions only
    targets: torch.Tensor,  # [B, L] clean tokens x0
    masked: torch.Tensor,  # bool [B, L]: positions replaced by the mask token in x_t
    p_mask: torch.Tensor,  # [B] or [B, L]: masking probability of each position
    lengths: torch.Tensor | None = None,  # [B]: per-sequence normaliser (default L)
) -> torch.Tensor:
    """LLaDA eq. 3: -E[ (1/t) sum_i 1[x_t^i = M] log p(x_0^i | x_t) ] / L, as a batch mean.

    Cross-entropy on masked positions only, each weighted by 1 / p_mask, summed per sequence and
    divided by that sequence's normaliser, then averaged over the batch. With the default
    normaliser L this is sum / (B * L) (pretraining). SFT passes the response lengths (LLaDA
    normalises the SFT loss by the response length); sequences cut to a random length pass their
    own length.

    Only masked positions are scored, so ``logits`` may hold just their rows, in the row-major order
    of ``masked`` (``logits_full[masked]``): computing the output projection there alone gives the
    same loss for about half the projection's cost.
    """
    batch, length = targets.shape
    logits = _masked_rows(logits, "logits", targets, masked)
    if p_mask.dim() == 1:
        p_mask = p_mask[:, None].expand(batch, length)
    weighted = _token_cross_entropy(logits.float(), targets[masked]) / p_mask[masked]  # [M]
    if lengths is None:
        return weighted.sum() / (batch * length)
    rows = masked.nonzero()[:, 0]
    per_sequence = torch.zeros(batch, dtype=weighted.dtype, device=weighted.device).index_add(0, rows, weighted)
    return (per_sequence / lengths.to(weighted.dtype)).mean()


def _masked_rows(values: torch.Tensor, what: str, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The rows [M, ...] of the masked positions: ``values`` [B, L, ...] indexed by ``masked``, or
    ``values`` already holding just those rows, in the row-major order of ``masked``."""
    if masked.shape != targets.shape:
        raise ValueError(f"masked has shape {tuple(masked.shape)}, expected {tuple(targets.shape)}")
    if values.dim() == 3:
        values = values[masked]
    count = int(masked.sum())
    if values.shape[0] != count:
        raise ValueError(f"{what} has {values.shape[0]} rows for {count} masked positions")
    return values


def arm_token_weights(
    tokens: torch.Tensor,  # [B, L]
    target_mask: torch.Tensor | None = None,  # bool [B, L], as in arm_loss
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets [B, L] (position i predicts token i+1; IGNORE_INDEX at the last position and at
    unscored ones) and weights [B, L] (1 / number of scored targets, else 0), such that
    :func:`arm_loss` = sum_i w_i CE(logits_i, target_i)."""
    batch, length = tokens.shape
    targets = F.pad(tokens[:, 1:], (0, 1), value=IGNORE_INDEX)
    if target_mask is None:
        scored = torch.ones_like(tokens, dtype=torch.bool)
        scored[:, -1] = False
        count = batch * (length - 1)  # a number, not a tensor: no device sync in pretraining
    else:
        scored = F.pad(target_mask[:, 1:].bool(), (0, 1), value=False)
        count = int(scored.sum())
    if count == 0:
        raise ValueError("arm_loss: target_mask selects no target token")
    return targets.masked_fill(~scored, IGNORE_INDEX), scored.float() / count


def mdm_token_weights(
    masked: torch.Tensor,  # bool [B, L]
    p_mask: torch.Tensor,  # [B] or [B, L]
    lengths: torch.Tensor | None = None,  # [B]: per-sequence normaliser (default L)
) -> torch.Tensor:
    """Weights [M] of the masked positions, in the row-major order of ``masked``: LLaDA eq. 3 as
    sum_i w_i CE_i with w_i = 1 / (p_mask_i * normaliser of its sequence * B), so that
    :func:`mdm_loss` = sum_i w_i CE(logits_i, x0_i) over masked positions."""
    batch, length = masked.shape
    if p_mask.dim() == 1:
        p_mask = p_mask[:, None].expand(batch, length)
    if lengths is None:
        normaliser = torch.full((batch,), float(length), device=masked.device)
    else:
        normaliser = lengths.float()
    return (1.0 / (p_mask.float() * normaliser[:, None] * batch))[masked]


def arm_linear_loss(
    hidden: torch.Tensor,  # [B, L, d]: final hidden states
    head_weight: torch.Tensor,  # [V, d]: the output head's weight
    tokens: torch.Tensor,  # [B, L]
    target_mask: torch.Tensor | None = None,
    *,
    chunk_size: int,
) -> torch.Tensor:
    """:func:`arm_loss` of the logits ``hidden @ head_weight^T``, computed ``chunk_size`` rows at a
    time without the full logits. Every position's row is computed, the unscored ones with weight 0
    (selecting the scored rows would cost a device sync)."""
    targets, weights = arm_token_weights(tokens, target_mask)
    return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head_weight, targets.reshape(-1),
                                weights.reshape(-1), chunk_size, IGNORE_INDEX)


def mdm_linear_loss(
    hidden: torch.Tensor,  # [B, L, d], or [M, d]: the hidden states of the M masked positions only
    head_weight: torch.Tensor,  # [V, d]
    targets: torch.Tensor,  # [B, L] clean tokens x0
    masked: torch.Tensor,  # bool [B, L]
    p_mask: torch.Tensor,  # [B] or [B, L]
    lengths: torch.Tensor | None = None,  # [B]
    *,
    chunk_size: int,
) -> torch.Tensor:
    """:func:`mdm_loss` (LLaDA eq. 3) of the logits ``hidden @ head_weight^T``, computed
    ``chunk_size`` masked rows at a time without the full logits."""
    hidden = _masked_rows(hidden, "hidden", targets, masked)
    return linear_cross_entropy(hidden, head_weight, targets[masked], mdm_token_weights(masked, p_mask, lengths),
                                chunk_size, IGNORE_INDEX)


@dataclass
class MaskedBatch:
    """One draw of the MDM forward process for a batch."""

    noisy: torch.Tensor  # [B, L] x_t: tokens with masked positions replaced by mask_id
    masked: torch.Tensor  # bool [B, L]
    p_mask: torch.Tensor  # [B, L]
    lengths: torch.Tensor  # [B] tokens that count for each sequence (the loss normaliser)
    key_padding_mask: torch.Tensor | None  # bool [B, L], None when every position is real


def _draw_t(batch: int, t_sampling: str, device, generator: torch.Generator | None) -> torch.Tensor:
    """t [B], each U(0, 1): independent ("uniform") or (u + i) / B shuffled ("stratified")."""
    check_t_sampling(t_sampling)
    if t_sampling == "uniform":
        return torch.rand(batch, device=device, generator=generator)
    offset = torch.rand(1, device=device, generator=generator)  # stratified
    order = torch.randperm(batch, device=device, generator=generator)
    return (offset + order.to(offset.dtype)) / batch


def mdm_forward_process(
    tokens: torch.Tensor,  # [B, L]
    mask_id: int,
    *,
    eps: float = 1e-3,
    random_length_prob: float = 0.0,
    maskable: torch.Tensor | None = None,  # bool [B, L]: positions that may be masked (SFT: response)
    generator: torch.Generator | None = None,
    t_sampling: str = "uniform",
) -> MaskedBatch:
    """Draw t ~ U(0, 1) per sequence, p_mask = (1 - eps) t + eps, and mask each maskable token
    independently with probability p_mask (LLaDA's forward process). ``t_sampling`` is
    ``MDMConfig.t_sampling``.

    With ``random_length_prob`` > 0, each sequence is, with that probability, cut to a length drawn
    from U[1, L] (LLaDA does this for 1% of pretraining data so the model sees short inputs): the
    positions past the cut are neither attended to nor masked, and the loss normaliser is the cut
    length. Pretraining normalises by L; with ``maskable`` (SFT) the normaliser is the number of
    maskable (response) tokens.
    """
    batch, length = tokens.shape
    device = tokens.device
    t = _draw_t(batch, t_sampling, device, generator)
    p_mask = ((1 - eps) * t + eps)[:, None].expand(batch, length)
    draws = torch.rand(batch, length, device=device, generator=generator)
    masked = draws < p_mask
    key_padding_mask = None
    lengths = torch.full((batch,), length, device=device, dtype=torch.long)
    if random_length_prob > 0:
        cut = torch.rand(batch, device=device, generator=generator) < random_length_prob
        cut_lengths = torch.randint(1, length + 1, (batch,), device=device, generator=generator)
        lengths = torch.where(cut, cut_lengths, lengths)
        if bool(cut.any()):
            key_padding_mask = torch.arange(length, device=device)[None, :] < lengths[:, None]
            masked = masked & key_padding_mask
    if maskable is not None:
        masked = masked & maskable
        lengths = maskable.sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("mdm_forward_process: a sequence has no maskable (response) token")
    noisy = torch.where(masked, torch.full_like(tokens, mask_id), tokens)
    return MaskedBatch(noisy, masked, p_mask, lengths, key_padding_mask)


def sft_response_mask(prompt_lengths: torch.Tensor, length: int) -> torch.Tensor:
    """bool [B, L]: True from each sequence's prompt length on (the response, EOS padding included).

    LLaDA SFT: prompt tokens are never masked nor scored; short responses are padded with EOS,
    which counts as part of the response.
    """
    positions = torch.arange(length, device=prompt_lengths.device)[None, :]
    return positions >= prompt_lengths[:, None]

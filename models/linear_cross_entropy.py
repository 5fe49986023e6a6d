"""The output head and its cross-entropy in chunks of rows, so that the full logits never exist.

At LLaDA's vocabulary (126,464 tokens) the float32 logits of one 4 x 4096 micro-batch take 8 GB, and
their gradient as much again. :func:`linear_cross_entropy` computes

    sum_i w_i * CE(hidden_i @ weight^T, target_i)

a chunk of rows at a time. Each chunk's logits give its loss and, at once, the gradient of that loss
with respect to the chunk's hidden rows and its contribution to the gradient of the head weight
(``w_i * (softmax - one_hot)``, the cross-entropy's gradient in closed form); only those gradients
are kept, and the backward pass scales them by the incoming gradient. No chunk's logits outlive its
iteration and nothing is recomputed: the approach of Liger-Kernel's fused linear cross-entropy (Hsu et
al. 2024) and of Cut Cross-Entropy (Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary
Language Models"), here in plain PyTorch. The peak is one chunk's logits (``chunk_size x V``) plus the
``[N, d]`` and ``[V, d]`` gradients, instead of ``N x V`` logits and their gradient.

Every loss of ``models.objectives`` is such a weighted sum of per-token cross-entropies, so one
function serves both: the weights carry the mean over ARM targets and the 1 / (p_mask L B) of LLaDA
eq. 3. The arithmetic mirrors the plain path: logits in the compute dtype (the autocast dtype under
autocast, as ``nn.Linear`` would run, else the hidden states' dtype), log-softmax in float32; the
weight's gradient is accumulated in float32 over chunks and cast to the weight's dtype at the end.
Gradients are those of the plain path to float rounding; they are computed in the forward pass, so
the result supports one backward pass (no double backward).
"""

from __future__ import annotations

import torch


def linear_cross_entropy(
    hidden: torch.Tensor,  # [N, d]
    weight: torch.Tensor,  # [V, d]: the output head's weight (nn.Linear layout)
    targets: torch.Tensor,  # [N] int64; ignore_index scores nothing
    token_weights: torch.Tensor,  # [N]: w_i of each row's cross-entropy
    chunk_size: int,
    ignore_index: int = -100,
) -> torch.Tensor:
    """``sum_i w_i * CE(hidden_i @ weight^T, target_i)`` as a float32 scalar, computed ``chunk_size``
    rows at a time (see the module docstring); rows whose target is ``ignore_index`` count zero."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} must be [N, d] and [V, d]")
    if targets.shape != hidden.shape[:1] or token_weights.shape != hidden.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} and token_weights {tuple(token_weights.shape)} "
                         f"must both be [{hidden.shape[0]}], one per row of hidden")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = hidden.dtype
    grad_enabled = torch.is_grad_enabled()
    return _LinearCrossEntropy.apply(
        hidden, weight, targets, token_weights, chunk_size, ignore_index, compute_dtype,
        grad_enabled and hidden.requires_grad, grad_enabled and weight.requires_grad,
    )


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, token_weights, chunk_size, ignore_index, compute_dtype,
                needs_hidden_grad, needs_weight_grad):
        rows = hidden.shape[0]
        ignored = targets == ignore_index
        safe_targets = targets.masked_fill(ignored, 0)[:, None]  # [N, 1]
        row_weights = token_weights.float().masked_fill(ignored, 0.0)  # [N]
        # Explicit casts instead of autocast: the autocast dtype was read by the caller.
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            head = weight.to(compute_dtype)  # [V, d]
            grad_hidden = torch.empty_like(hidden) if needs_hidden_grad else None
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_weight_grad else None
            chunk_losses = []
            for start in range(0, rows, chunk_size):
                stop = min(start + chunk_size, rows)
                h = hidden[start:stop].to(compute_dtype)  # [n, d]
                logits = (h @ head.t()).float()  # [n, V]; a fresh tensor in every dtype, so reused in place
                chunk_targets = safe_targets[start:stop]  # [n, 1]
                w = row_weights[start:stop, None]  # [n, 1]
                target_logits = logits.gather(1, chunk_targets)
                row_max = logits.amax(dim=1, keepdim=True)
                exp = logits.sub_(row_max).exp_()  # [n, V]: the logits are gone from here on
                sum_exp = exp.sum(dim=1, keepdim=True)
                log_normaliser = row_max + sum_exp.log()  # logsumexp, without its own [n, V] copies
                chunk_losses.append(((log_normaliser - target_logits) * w).sum())
                if not (needs_hidden_grad or needs_weight_grad):
                    continue
                # d/dlogits of w * CE = w * (softmax - one_hot) = exp * (w / sum_exp) - w * one_hot
                grad_logits = exp.mul_(w / sum_exp).scatter_add_(1, chunk_targets, -w).to(compute_dtype)
                del logits, exp
                if needs_hidden_grad:
                    grad_hidden[start:stop] = grad_logits @ head
                if needs_weight_grad:
                    if compute_dtype == torch.float32:
                        grad_weight.addmm_(grad_logits.t(), h)
                    else:
                        grad_weight += grad_logits.t() @ h
            loss = torch.stack(chunk_losses).sum() if chunk_losses else row_weights.new_zeros(())
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        grad_hidden = None if grad_hidden is None else grad_hidden * grad_loss.to(grad_hidden.dtype)
        grad_weight = None if grad_weight is None else grad_weight * grad_loss.to(grad_weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None, None


__all__ = ["linear_cross_entropy"]

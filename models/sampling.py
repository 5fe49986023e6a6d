"""Generation for both objectives: ARM left-to-right decoding, MDM reverse-process sampling.

* ``arm_generate``: greedy, temperature and nucleus (top-p; Holtzman et al. 2020) decoding with a
  KV cache when the model offers one (``model.new_cache``), full recomputation otherwise, and stop
  sequences.
* ``generate`` (MDM): LLaDA's sampler (Nie et al. 2025, Sec. 2.4, App. B.3). The response starts
  fully masked and is produced block by block, left to right (semi-autoregressive remasking;
  one block when ``block_length == gen_length``). Each block gets ``steps * block_length /
  gen_length`` steps; every step predicts all masked positions of the block at once (argmax, or a
  Gumbel-max sample when ``temperature > 0``) and commits floor(m / s) of them, plus one in each of
  the first m mod s steps (m masked positions in the block, s steps per block): the linear schedule
  of LLaDA's reverse process. ``low_confidence`` commits the predictions with the highest
  probability, ``random`` commits random ones; the rest stay masked. Positions after the current
  block are never committed early. Unsupervised classifier-free guidance as in likelihood scoring.

``model`` maps token ids [B, T] (and ``key_padding_mask=`` bool [B, T] when a batch is padded) to
logits [B, T, V]. The mask token is never generated.
"""

from __future__ import annotations

from typing import Sequence

import torch

from models.likelihood import Model, context_length, guided_logits, model_device

REMASKING = ("low_confidence", "random")


# ----------------------------------------------------------------------------- shared helpers


def _prompt_list(prompt) -> tuple[list[list[int]], str]:
    """Prompts as id lists and the input kind ('1d', '2d' tensor, or 'list') to shape the output."""
    if isinstance(prompt, torch.Tensor):
        if prompt.dim() == 1:
            return [prompt.tolist()], "1d"
        if prompt.dim() == 2:
            return prompt.tolist(), "2d"
        raise ValueError(f"prompt must be 1-D or 2-D, got shape {tuple(prompt.shape)}")
    prompt = list(prompt)
    if not prompt:
        raise ValueError("no prompts given; pass a list of token-id sequences or a [B, P] tensor")
    if isinstance(prompt[0], int):
        return [prompt], "list1"
    return [[int(t) for t in (p.tolist() if isinstance(p, torch.Tensor) else p)] for p in prompt], "list"


def gumbel_noise(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise: argmax(logits / T + G) is a sample from softmax(logits / T)."""
    where = generator.device if generator is not None else device
    uniform = torch.rand(shape, generator=generator, device=where, dtype=torch.float64).to(device)
    return -torch.log(-torch.log(uniform.clamp_min(1e-300)))


def _check_sampling(temperature: float, cfg_scale: float = 0.0) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")


# ----------------------------------------------------------------------------- ARM


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose probability reaches ``top_p``; others -inf."""
    if top_p >= 1.0:
        return logits
    probs, order = logits.softmax(-1).sort(-1, descending=True)
    before = probs.cumsum(-1) - probs  # probability mass strictly ahead of each token
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _next_token(logits: torch.Tensor, temperature: float, top_p: float, generator) -> torch.Tensor:
    """Greedy at temperature 0, else a sample from top-p-filtered softmax(logits / temperature)."""
    if temperature == 0:
        return logits.argmax(-1)
    filtered = top_p_filter(logits.double() / temperature, top_p)
    return (filtered + gumbel_noise(filtered.shape, generator, filtered.device)).argmax(-1)


def _stop_at(generated: list[int], stops: list[list[int]]) -> int | None:
    """Length of ``generated`` before the earliest stop sequence in it, or None."""
    best = None
    for stop in stops:
        for start in range(len(generated) - len(stop) + 1):
            if generated[start : start + len(stop)] == stop:
                best = start if best is None else min(best, start)
                break
    return best


def _check_context(model, max_len, prompt_tokens: int, new_tokens: int, name: str) -> int:
    """Prompt plus generated positions; a clear error when they exceed the model's context."""
    total = prompt_tokens + new_tokens
    limit = context_length(model, max_len)
    if limit is not None and total > limit:
        raise ValueError(
            f"prompt ({prompt_tokens} tokens) + {name} ({new_tokens}) = {total} exceeds the model's context "
            f"of {limit}; lower {name} or truncate the prompt"
        )
    return total


@torch.no_grad()
def arm_generate(
    model: Model,
    prompt,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_sequences: Sequence[Sequence[int]] = (),
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    max_len: int | None = None,
) -> list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens`` tokens; returns the continuations (prompt
    excluded), each cut before the first stop sequence (``eos_id`` counts as one).

    Prompts of unequal length share one batch without padding: every row advances one position per
    step and a row still inside its prompt is fed its own next prompt token instead of a sample,
    so each row sees exactly the positions it would see alone.
    """
    _check_sampling(temperature)
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    prompts, _ = _prompt_list(prompt)
    if any(len(p) == 0 for p in prompts):
        raise ValueError("an empty prompt has nothing to condition on; prepend a BOS token")
    stops = [list(s) for s in stop_sequences if len(s)] + ([[eos_id]] if eos_id is not None else [])
    lengths = torch.tensor([len(p) for p in prompts])
    total = _check_context(model, max_len, int(lengths.max()), max_new_tokens, "max_new_tokens")
    device = model_device(model)
    tokens = torch.zeros(len(prompts), total, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p)
    tokens = tokens.to(device)
    lengths = lengths.to(device)
    cache = model.new_cache(len(prompts), total) if use_cache and hasattr(model, "new_cache") else None

    first = int(lengths.min())
    logits = model(tokens[:, :first], cache=cache) if cache is not None else model(tokens[:, :first])
    done = [False] * len(prompts)
    for position in range(first, total):
        sample = _next_token(logits[:, -1].float(), temperature, top_p, generator)
        generating = position >= lengths
        tokens[:, position] = torch.where(generating, sample, tokens[:, position])
        for i in generating.nonzero().flatten().tolist():
            produced = tokens[i, len(prompts[i]) : position + 1].tolist()
            if len(produced) >= max_new_tokens or (stops and _stop_at(produced[-max(map(len, stops)):], stops) is not None):
                done[i] = True
        if all(done) or position == total - 1:
            break
        if cache is not None:
            logits = model(tokens[:, position : position + 1], cache=cache)
        else:
            logits = model(tokens[:, : position + 1])

    results = []
    for i, p in enumerate(prompts):
        produced = tokens[i, len(p) : len(p) + max_new_tokens].tolist()
        produced = produced[: max(0, min(position + 1 - len(p), max_new_tokens))]
        cut = _stop_at(produced, stops)
        results.append(produced if cut is None else produced[:cut])
    return results


# ----------------------------------------------------------------------------- MDM


def transfer_schedule(masked: int, steps: int) -> list[int]:
    """Tokens committed at each of ``steps`` steps for ``masked`` masked positions: floor(m / s),
    plus one in each of the first (m mod s) steps (LLaDA's linear schedule within a block)."""
    base, extra = divmod(masked, steps)
    return [base + (1 if step < extra else 0) for step in range(steps)]


def check_generation(gen_length: int, steps: int, block_length: int | None) -> tuple[int, int, int]:
    """Validated (block_length, number of blocks, steps per block)."""
    if gen_length < 1:
        raise ValueError(f"gen_length must be at least 1, got {gen_length}")
    block_length = gen_length if block_length is None else block_length
    if block_length < 1 or gen_length % block_length:
        divisors = [d for d in range(1, gen_length + 1) if gen_length % d == 0]
        raise ValueError(
            f"block_length={block_length} does not divide gen_length={gen_length}; "
            f"choose a divisor, e.g. {divisors[-4:]}, or block_length=gen_length for a single block"
        )
    blocks = gen_length // block_length
    if steps < blocks or steps % blocks:
        raise ValueError(
            f"steps={steps} is not divisible by the number of blocks ({blocks} = gen_length {gen_length} / "
            f"block_length {block_length}); each block needs the same whole number of steps, "
            f"e.g. steps={max(1, steps // blocks) * blocks}"
        )
    return block_length, blocks, steps // blocks


@torch.no_grad()
def generate(
    model: Model,
    prompt,
    *,
    gen_length: int,
    steps: int,
    block_length: int | None = None,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    mask_id: int,
    generator: torch.Generator | None = None,
    max_len: int | None = None,
):
    """LLaDA reverse-process sampling; returns prompt + ``gen_length`` generated ids.

    ``prompt``: [P] or [B, P] tensor (returns [P + G] / [B, P + G]), or a list of id lists of any
    lengths (returns a list of lists; a batch of unequal prompts is left padded with a key-padding
    mask, which under rotary positions leaves each row's attention unchanged).
    ``block_length`` defaults to ``gen_length`` (one block). ``generator`` drives the Gumbel noise
    and random remasking.
    """
    _check_sampling(temperature, cfg_scale)
    if remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; choose one of {REMASKING}")
    block_length, blocks, steps_per_block = check_generation(gen_length, steps, block_length)
    prompts, kind = _prompt_list(prompt)
    width = max(len(p) for p in prompts)
    total = _check_context(model, max_len, width, gen_length, "gen_length")
    device = model_device(model)
    batch = len(prompts)
    x = torch.full((batch, total), mask_id, dtype=torch.long)
    real = torch.ones(batch, total, dtype=torch.bool)
    is_prompt = torch.zeros(batch, total, dtype=torch.bool)
    for i, p in enumerate(prompts):
        pad = width - len(p)
        x[i, pad:width] = torch.tensor(p, dtype=torch.long)
        real[i, :pad] = False
        is_prompt[i, pad:width] = True
    x, real, is_prompt = x.to(device), real.to(device), is_prompt.to(device)
    padding = None if bool(real.all()) else real
    masked = torch.zeros(batch, total, dtype=torch.bool, device=device)
    masked[:, width:] = True

    def predict(tokens: torch.Tensor) -> torch.Tensor:
        inputs, mask = tokens, padding
        if cfg_scale > 0:  # the unconditional twin sees the prompt replaced by masks (LLaDA eq. 16)
            inputs = torch.cat([tokens, tokens.masked_fill(is_prompt, mask_id)])
            mask = None if padding is None else torch.cat([padding, padding])
        logits = (model(inputs) if mask is None else model(inputs, key_padding_mask=mask)).float()
        if cfg_scale > 0:
            logits = guided_logits(logits[:batch], logits[batch:], cfg_scale)
        if not 0 <= mask_id < logits.shape[-1]:
            raise ValueError(f"mask_id={mask_id} is outside the model's vocabulary of {logits.shape[-1]}")
        logits[..., mask_id] = float("-inf")  # the mask token is never a prediction
        return logits

    for block in range(blocks):
        lo, hi = width + block * block_length, width + (block + 1) * block_length
        schedule = transfer_schedule(block_length, steps_per_block)
        for count in schedule:
            if count == 0:
                continue
            logits = predict(x)  # [B, T, V]
            if temperature > 0:
                noisy = logits.double() / temperature + gumbel_noise(logits.shape, generator, device)
                predicted = noisy.argmax(-1)
            else:
                predicted = logits.argmax(-1)
            if remasking == "low_confidence":
                confidence = logits.softmax(-1).gather(-1, predicted[..., None]).squeeze(-1).double()
            else:
                confidence = torch.rand(x.shape, generator=generator, dtype=torch.float64,
                                        device=generator.device if generator is not None else device).to(device)
            candidates = masked.clone()
            candidates[:, :lo] = False
            candidates[:, hi:] = False
            confidence = confidence.masked_fill(~candidates, float("-inf"))
            chosen = confidence.topk(count, dim=-1).indices  # [B, count], all within the block
            x.scatter_(1, chosen, predicted.gather(1, chosen))
            masked.scatter_(1, chosen, False)

    if kind == "1d":
        return x[0]
    if kind == "2d":
        return x
    out = [x[i, width - len(p) :].tolist() for i, p in enumerate(prompts)]
    return out[0] if kind == "list1" else out


mdm_generate = generate

__all__ = [
    "arm_generate",
    "generate",
    "mdm_generate",
    "transfer_schedule",
    "check_generation",
    "top_p_filter",
    "gumbel_noise",
    "REMASKING",
]

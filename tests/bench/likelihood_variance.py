"""Standard error of the MDM likelihood bound (LLaDA eq. 6) against the number of forward passes.

``python tests/bench/likelihood_variance.py [--train-steps 400] [--repeats 200] [--answer-length 8]``

Trains a tiny MDM for a few hundred steps on a synthetic corpus whose tokens range from fully
determined by their neighbours to pure noise (so per-token losses, and the bound's Monte Carlo
noise, look like a trained model's), then, for several held-out (prompt, answer) pairs, repeats each
estimator ``--repeats`` times at each sample count and prints the spread of the estimates (their
standard error), the bias against the exact bound (every mask enumerated), and the ratio to the
plain estimator at 128 samples, the setting LLaDA uses. CPU only; about 10 minutes on a busy
2-core machine, most of it training (lower --train-steps and --repeats for a quicker look).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from models.config import preset  # noqa: E402
from models.likelihood import ESTIMATORS, mdm_nll_bound, mdm_nll_bound_exact  # noqa: E402
from models.transformer import Transformer  # noqa: E402

VOCAB, MASK_ID, SEQ_LEN, PERIOD = 64, 63, 32, 48


def synthetic_batch(batch: int, generator: torch.Generator, noise: float = 0.15) -> torch.Tensor:
    """Arithmetic progressions x_t = (s + d t) mod PERIOD with a random start s and step d in 1..3;
    a fraction ``noise`` of positions is replaced by a uniformly random token."""
    start = torch.randint(0, PERIOD, (batch, 1), generator=generator)
    stride = torch.randint(1, 4, (batch, 1), generator=generator)
    tokens = (start + stride * torch.arange(SEQ_LEN)) % PERIOD
    noisy = torch.rand(batch, SEQ_LEN, generator=generator) < noise
    return torch.where(noisy, torch.randint(0, PERIOD, (batch, SEQ_LEN), generator=generator), tokens)


def mdm_pretraining_loss(model, tokens: torch.Tensor, generator: torch.Generator, eps: float = 1e-3) -> torch.Tensor:
    """LLaDA's pretraining loss: t ~ U(0,1), mask with p = (1 - eps) t + eps, masked CE / p, over B*L."""
    batch, length = tokens.shape
    p_mask = ((1 - eps) * torch.rand(batch, 1, generator=generator) + eps).expand(batch, length)
    masked = torch.rand(batch, length, generator=generator) < p_mask
    logits = model(torch.where(masked, MASK_ID, tokens))
    nll = F.cross_entropy(logits.reshape(-1, VOCAB), tokens.reshape(-1), reduction="none").view(batch, length)
    return (nll * masked / p_mask).sum() / (batch * length)


def train(steps: int, seed: int) -> Transformer:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Transformer(preset("tiny", causal=False, vocab_size=VOCAB, max_seq_len=SEQ_LEN))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    for step in range(steps):
        loss = mdm_pretraining_loss(model, synthetic_batch(64, generator), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"train step {step:4d}  mdm loss {loss.item():.3f}", flush=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=200, help="independent estimates per setting")
    parser.add_argument("--answer-length", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=4, help="held-out (prompt, answer) pairs")
    parser.add_argument("--samples", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    began = time.time()
    model = train(args.train_steps, args.seed)
    held_out = synthetic_batch(args.pairs, torch.Generator().manual_seed(args.seed + 1))
    prompt_length = SEQ_LEN - args.answer_length
    prompts = held_out[:, :prompt_length].tolist()
    answers = held_out[:, prompt_length:].tolist()
    exact = mdm_nll_bound_exact(model, prompts, answers, mask_id=MASK_ID, batch_size=512)
    print(f"exact bound per pair (nats): {[round(v, 3) for v in exact.tolist()]}")

    generator = torch.Generator().manual_seed(args.seed + 2)
    se = {}  # (estimator, samples) -> [pairs] standard error over repeats
    bias = {}
    for estimator in ESTIMATORS:
        for samples in args.samples:
            estimates = mdm_nll_bound(
                model, [p for p in prompts for _ in range(args.repeats)], [a for a in answers for _ in range(args.repeats)],
                mask_id=MASK_ID, mc_samples=samples, estimator=estimator, generator=generator, batch_size=1024,
            ).view(args.pairs, args.repeats)
            se[estimator, samples] = estimates.std(dim=1)
            # mean minus exact, in units of the standard error of that mean
            bias[estimator, samples] = (estimates.mean(dim=1) - exact) / (se[estimator, samples] / math.sqrt(args.repeats))

    reference = se["plain", 128] if ("plain", 128) in se else None
    print(f"\nanswer length {args.answer_length}, {args.pairs} pairs, {args.repeats} repeats per setting")
    print("estimator   passes  SE per pair (nats)                 mean SE  SE / plain@128  bias z (max |z|)")
    for (estimator, samples), errors in se.items():
        ratio = f"{(errors / reference).mean().item():14.2f}" if reference is not None else " " * 14
        print(
            f"{estimator:<10} {samples:7d}  {' '.join(f'{e:.3f}' for e in errors.tolist()):<34} "
            f"{errors.mean().item():7.3f}  {ratio}  {bias[estimator, samples].abs().max().item():5.2f}"
        )
    if ("plain", 128) in se and ("stratified", 32) in se:
        ratio = (se["stratified", 32] / se["plain", 128]).tolist()
        print(
            f"\ntarget: stratified at 32 passes vs plain at 128: SE ratio per pair "
            f"{[round(r, 2) for r in ratio]}, mean {sum(ratio) / len(ratio):.2f} (below 1 meets the target)"
        )
    print(f"\n{time.time() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

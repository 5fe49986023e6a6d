"""One MDM training step on a CPU: logits at the masked positions only, against logits everywhere.

Eq. 3 scores masked positions only, so ``models.lightning.LanguageModel`` projects just those hidden
states to the vocabulary. For a small model with a vocabulary of about a thousand tokens the output
projection and its cross-entropy are a large share of the step. This script times forward, loss and
backward of both ways, side by side in one process, on the same noisy batches, and checks that the
losses agree.

    python tests/bench/mdm_step.py [--model tiny] [--batch 16] [--length 128] [--vocab 1175] [--repeats 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.config import preset  # noqa: E402
from models.lightning import LanguageModel  # noqa: E402
from models.objectives import mdm_forward_process, mdm_loss  # noqa: E402
from timing import add_shape_arguments, seconds_per_call  # noqa: E402  (tests/bench/timing.py)


def full_logits_loss(module: LanguageModel, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noisy = mdm_forward_process(tokens, module.mask_id, eps=module.mdm_config.eps,
                                random_length_prob=module.mdm_config.random_length_prob, generator=generator)
    logits = module.model(noisy.noisy, noisy.key_padding_mask)
    return mdm_loss(logits, tokens, noisy.masked, noisy.p_mask, noisy.lengths)


def masked_rows_loss(module: LanguageModel, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return module.loss({"input_ids": tokens}, generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    add_shape_arguments(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = preset(args.model, vocab_size=args.vocab, causal=False, max_seq_len=args.length)
    module = LanguageModel(dataclasses.asdict(config), "mdm", total_steps=1, tokens_per_step=1, mask_id=3)
    batches = [torch.randint(4, args.vocab, (args.batch, args.length)) for _ in range(max(args.repeats, 3))]
    for i in range(3):
        same = [fn(module, batches[i], torch.Generator().manual_seed(i)).item() for fn in (full_logits_loss, masked_rows_loss)]
        torch.testing.assert_close(same[0], same[1], rtol=1e-5, atol=0)
    full, rows = (
        seconds_per_call(lambda i: loss_fn(module, batches[i], torch.Generator().manual_seed(i)).backward(), args.repeats)
        for loss_fn in (full_logits_loss, masked_rows_loss)
    )
    print(f"MDM step of {args.model} (N={config.non_embedding_params:,}), batch [{args.batch}, {args.length}], "
          f"vocabulary {args.vocab}, {torch.get_num_threads()} threads, forward + loss + backward:")
    print(f"  logits at every position:    {full * 1e3:.1f} ms")
    print(f"  logits at masked positions:  {rows * 1e3:.1f} ms")
    print(f"  ratio: {full / rows:.2f}x")


if __name__ == "__main__":
    main()

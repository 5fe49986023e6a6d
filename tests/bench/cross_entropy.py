"""Per-token cross-entropy on a CPU: the layout ``models.objectives`` uses against a transposed view.

``F.cross_entropy`` takes the class dimension second. Handing it logits [B, L, V] as a transposed
[B, V, L] view gives it a strided class dimension; ``models.objectives._token_cross_entropy``
flattens to [B*L, V] instead. This script times forward + backward of both, side by side in one
process, at the smoke grid's shapes (batch 16 x 128 tokens, a 1175-token vocabulary), and checks
that they agree.

    python tests/bench/cross_entropy.py [--batch 16] [--length 128] [--vocab 1175] [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.objectives import _token_cross_entropy  # noqa: E402
from timing import add_shape_arguments, seconds_per_call  # noqa: E402  (tests/bench/timing.py)


def transposed(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_arguments(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    logits = torch.randn(args.batch, args.length, args.vocab, requires_grad=True)
    targets = torch.randint(0, args.vocab, (args.batch, args.length))
    torch.testing.assert_close(_token_cross_entropy(logits, targets), transposed(logits, targets))
    old, new = (seconds_per_call(lambda _: loss_fn(logits, targets).sum().backward(), args.repeats)
                for loss_fn in (transposed, _token_cross_entropy))
    print(f"shape [{args.batch}, {args.length}, {args.vocab}], {torch.get_num_threads()} threads, "
          f"forward + backward per call:")
    print(f"  transposed [B, V, L] view: {old * 1e3:.1f} ms")
    print(f"  flattened [B*L, V]:        {new * 1e3:.1f} ms")
    print(f"  ratio: {old / new:.2f}x")


if __name__ == "__main__":
    main()

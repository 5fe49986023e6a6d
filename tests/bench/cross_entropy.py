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
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.objectives import _token_cross_entropy  # noqa: E402


def transposed(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def seconds_per_call(loss_fn, logits: torch.Tensor, targets: torch.Tensor, repeats: int) -> float:
    for _ in range(3):  # warm-up
        loss_fn(logits, targets).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        loss_fn(logits, targets).sum().backward()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1175)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    logits = torch.randn(args.batch, args.length, args.vocab, requires_grad=True)
    targets = torch.randint(0, args.vocab, (args.batch, args.length))
    torch.testing.assert_close(_token_cross_entropy(logits, targets), transposed(logits, targets))
    old = seconds_per_call(transposed, logits, targets, args.repeats)
    new = seconds_per_call(_token_cross_entropy, logits, targets, args.repeats)
    print(f"shape [{args.batch}, {args.length}, {args.vocab}], {torch.get_num_threads()} threads, "
          f"forward + backward per call:")
    print(f"  transposed [B, V, L] view: {old * 1e3:.1f} ms")
    print(f"  flattened [B*L, V]:        {new * 1e3:.1f} ms")
    print(f"  ratio: {old / new:.2f}x")


if __name__ == "__main__":
    main()

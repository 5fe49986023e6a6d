"""The output head's loss in chunks against the plain one: time and the largest tensor, on a CPU.

``models.linear_cross_entropy`` computes the head's logits, the loss and its gradients a chunk of
rows at a time, so the [N, V] logits never exist (Liger-Kernel; Wijmans et al. 2024). This script
times forward + backward of the ARM loss of hidden states [B, L, d] through a head [V, d], plain
(``arm_loss(hidden @ weight^T, tokens)``) and in chunks (``arm_linear_loss``), in interleaved rounds
in one process (the fastest round of each: a shared CPU's load comes and goes), checks that loss and
gradients agree, and prints the largest tensor any op created (``tests/largest_tensor.py``): the
plain path's float32 logits, or a chunk's.

    python tests/bench/linear_cross_entropy.py [--batch 4] [--length 512] [--vocab 32000] [--d-model 256]
        [--chunks 256,1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from largest_tensor import LargestTensor  # noqa: E402  (tests/largest_tensor.py)
from models.objectives import arm_linear_loss, arm_loss  # noqa: E402

MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--chunks", default="256,1024", help="comma-separated chunk sizes (rows)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds, the fastest of each kept")
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden = torch.randn(args.batch, args.length, args.d_model, requires_grad=True)
    weight = (torch.randn(args.vocab, args.d_model) / args.d_model**0.5).requires_grad_()
    tokens = torch.randint(0, args.vocab, (args.batch, args.length))
    losses = {"plain": lambda: arm_loss(hidden @ weight.t(), tokens)}
    for chunk in (int(c) for c in args.chunks.split(",")):
        losses[f"chunks of {chunk}"] = lambda chunk=chunk: arm_linear_loss(hidden, weight, tokens, chunk_size=chunk)

    reference, largest_shapes = None, {}
    rows = args.batch * args.length
    print(f"ARM loss of [{args.batch}, {args.length}, {args.d_model}] hidden states through a [{args.vocab}, "
          f"{args.d_model}] head ({rows} rows; float32 logits {rows * args.vocab * 4 / MIB:.0f} MiB), "
          f"{torch.get_num_threads()} threads, forward + backward per call:")
    for name, loss_fn in losses.items():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, [hidden, weight])
        if reference is None:
            reference = (loss, grads)
        else:
            torch.testing.assert_close(loss, reference[0], rtol=1e-5, atol=1e-6)
            for got, want in zip(grads, reference[1]):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)
        with LargestTensor() as largest:
            loss_fn().backward()
        largest_shapes[name] = largest
    seconds = {name: float("inf") for name in losses}
    for _ in range(args.repeats):
        for name, loss_fn in losses.items():
            start = time.perf_counter()
            loss_fn().backward()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    for name, largest in largest_shapes.items():
        print(f"  {name:<16} {seconds[name] * 1e3:8.0f} ms   largest tensor {list(largest.shape)} "
              f"{largest.nbytes / MIB:7.1f} MiB")


if __name__ == "__main__":
    main()

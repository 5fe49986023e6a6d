"""What the step-timing benchmarks share: the smoke grid's shapes as arguments, and a timed loop."""

from __future__ import annotations

import argparse
import time
from typing import Callable


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """--batch, --length and --vocab default to the smoke grid (16 x 128 tokens, 1175-token vocabulary)."""
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1175)
    parser.add_argument("--repeats", type=int, default=30)


def seconds_per_call(call: Callable[[int], None], repeats: int, warmup: int = 3) -> float:
    """Mean wall time of ``call(i)`` for i in range(repeats), after ``warmup`` untimed calls."""
    for i in range(warmup):
        call(i)
    start = time.perf_counter()
    for i in range(repeats):
        call(i)
    return (time.perf_counter() - start) / repeats

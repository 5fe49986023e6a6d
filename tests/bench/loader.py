"""Benchmark: is the data loader ever what training waits for?

Prints the loader's tokens per second (batches drawn from the prepared default toy world, as a
training run draws them) next to the tokens per second at which the smallest CPU model trains
(forward, ARM loss, backward and AdamW step of ``preset("tiny")``), and their ratio. The target is a
loader at least 100x faster than training, so that data loading is under 1% of a step.

    python tests/bench/loader.py [--seq-len 256] [--batch 16] [--workers 0] [--cache-dir runs/data]

Exit status 1 when the ratio is below the target.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TARGET_RATIO = 100.0


def loader_tokens_per_second(data_dir, seq_len: int, batch: int, workers: int, seconds: float) -> float:
    from studies.data.loader import TokenDataModule

    dm = TokenDataModule(data_dir, seq_len=seq_len, micro_batch_size=batch, seed=0, allow_repeat=True,
                         num_workers=workers)
    batches = iter(dm.train_dataloader())
    next(batches)  # start workers / open the memory maps outside the timing
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for b in itertools.islice(batches, 50):
            dm.mark_consumed()
            tokens += b["input_ids"].numel()
    return tokens / (time.perf_counter() - start)


def training_tokens_per_second(vocab_size: int, seq_len: int, batch: int, steps: int) -> tuple:
    from models.config import preset
    from models.objectives import arm_loss
    from models.transformer import Transformer

    config = preset("tiny", vocab_size=vocab_size, max_seq_len=max(seq_len, 256))
    model = Transformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, vocab_size, (batch, seq_len))

    def step():
        loss = arm_loss(model(tokens), tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * seq_len / (time.perf_counter() - start), config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--seconds", type=float, default=3.0, help="loader time budget")
    parser.add_argument("--cache-dir", default="runs/data")
    args = parser.parse_args(argv)

    from studies.data.config import DataConfig
    from studies.data.layout import load_metadata
    from studies.data.prepare import prepare_dataset

    start = time.perf_counter()
    data_dir = prepare_dataset(DataConfig(cache_dir=args.cache_dir))
    prepare_s = time.perf_counter() - start
    meta = load_metadata(data_dir)

    loader_tps = loader_tokens_per_second(data_dir, args.seq_len, args.batch, args.workers, args.seconds)
    train_tps, config = training_tokens_per_second(meta["vocab_size"], args.seq_len, args.batch, args.steps)
    ratio = loader_tps / train_tps
    print(f"dataset   {data_dir} ({meta['tokens']:,} train tokens, prepared/reused in {prepare_s:.1f} s)")
    print(f"shape     batch {args.batch} x seq_len {args.seq_len}, {args.workers} loader workers, "
          f"{torch.get_num_threads()} torch threads")
    print(f"loader    {loader_tps:14,.0f} tokens/s")
    print(f"training  {train_tps:14,.0f} tokens/s  (preset 'tiny', {config.total_params:,} parameters, ARM step)")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio     {ratio:14,.0f}x  (target >= {TARGET_RATIO:.0f}x: {verdict})")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())

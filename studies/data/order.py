"""The training order: which sequences each data-parallel rank sees at each step.

The order depends only on the number of sequences, the seed and the epoch, so two runs that differ
only in their objective (ARM vs MDM) see identical batches. Epoch ``e`` visits all N sequences in
the order of a pseudo-random permutation ``pi_e`` of [0, N). A position is (epoch, sample): the
next global batch is ``pi_e(sample), ..., pi_e(sample + W*B - 1)`` and rank r takes the slice
``[sample + r*B, sample + (r+1)*B)``. Ranks therefore never overlap, and the set of sequences in a
global batch is the same for any split of W*B into ranks and micro-batches. An epoch ends when
fewer than W*B sequences remain (that tail is dropped; each epoch drops a different one).

Each epoch also shifts the grid of windows: sequence i of epoch e is the window starting at
``o_e + i*L`` of the stream read cyclically, with ``o_0 = 0`` and ``o_e`` a seeded offset in [0, L)
for later epochs (``window_offset``). A run that repeats a small corpus for many epochs then sees
each document cut at different places and next to different neighbours; with a fixed grid a model
can memorise whole windows (their contents become a lookup key) instead of the facts in them.

The permutation is a keyed Feistel network over the next power of four above N with cycle walking
(Black & Rogaway, "Ciphers with arbitrary finite domains", CT-RSA 2002): O(1) memory and random
access, so 10^9 sequences cost no more than 10^3 and a resumed run computes its next batch directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

ROUNDS = 6
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _round_keys(seed: int, epoch: int) -> list:
    digest = hashlib.blake2b(f"order/{seed}/{epoch}".encode(), digest_size=8 * ROUNDS).digest()
    return [np.uint64(int.from_bytes(digest[8 * i: 8 * i + 8], "little")) for i in range(ROUNDS)]


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a fast 64-bit mixing function (Steele et al., OOPSLA 2014)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _feistel(x: np.ndarray, half_bits: int, keys) -> np.ndarray:
    mask = np.uint64((1 << half_bits) - 1)
    shift = np.uint64(half_bits)
    left, right = x >> shift, x & mask
    for key in keys:
        left, right = right, left ^ (_mix(right ^ key) & mask)
    return (left << shift) | right


def window_offset(seed: int, epoch: int, seq_len: int) -> int:
    """Where epoch ``epoch``'s window grid starts in the stream: 0 in the first epoch, else seeded."""
    if epoch == 0:
        return 0
    digest = hashlib.blake2b(f"offset/{seed}/{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % seq_len


def permute(indices, n: int, seed: int, epoch: int) -> np.ndarray:
    """pi_epoch(indices): a bijection of [0, n) determined by (seed, epoch)."""
    x = np.asarray(indices, dtype=np.uint64)
    if n <= 0 or (x.size and int(x.max()) >= n):
        raise ValueError(f"indices must lie in [0, {n})")
    half_bits = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    keys = _round_keys(seed, epoch)
    with np.errstate(over="ignore"):
        y = _feistel(x, half_bits, keys)
        outside = y >= n
        while outside.any():  # cycle walking: re-encrypt until the value falls inside [0, n)
            y[outside] = _feistel(y[outside], half_bits, keys)
            outside = y >= n
    return y.astype(np.int64)


@dataclass(frozen=True)
class Position:
    """Where the next global batch starts: data epoch and sample offset inside that epoch."""

    epoch: int = 0
    sample: int = 0


def normalize(pos: Position, num_sequences: int, global_batch: int, allow_repeat: bool) -> Optional[Position]:
    """The position of the next batch that can actually be drawn, or None when the data is exhausted."""
    if pos.sample + global_batch <= num_sequences:
        return pos
    return Position(pos.epoch + 1, 0) if allow_repeat else None


def batch_starts(start: Position, num_sequences: int, global_batch: int, allow_repeat: bool) -> Iterator[Position]:
    """Positions of successive global batches from ``start`` (endless when repetition is allowed)."""
    pos = normalize(start, num_sequences, global_batch, allow_repeat)
    while pos is not None:
        yield pos
        pos = normalize(Position(pos.epoch, pos.sample + global_batch), num_sequences, global_batch, allow_repeat)


def rank_sequences(pos: Position, rank: int, micro_batch: int, num_sequences: int, seed: int) -> np.ndarray:
    """Sequence ids of rank ``rank``'s micro-batch in the global batch starting at ``pos``."""
    start = pos.sample + rank * micro_batch
    return permute(np.arange(start, start + micro_batch), num_sequences, seed, pos.epoch)


class EpochOrder:
    """``rank_sequences`` with the permutation evaluated a block at a time and cached.

    numpy's per-call overhead dominates a Feistel evaluation of a few dozen indices; evaluating
    ``block`` consecutive positions at once makes the order cost negligible next to reading tokens.
    """

    def __init__(self, num_sequences: int, seed: int, block: int = 8192, keep: int = 4):
        self.num_sequences, self.seed, self.block, self.keep = num_sequences, seed, block, keep
        self._cache: dict = {}

    def _block(self, epoch: int, index: int) -> np.ndarray:
        key = (epoch, index)
        if key not in self._cache:
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            begin = index * self.block
            end = min(begin + self.block, self.num_sequences)
            self._cache[key] = permute(np.arange(begin, end), self.num_sequences, self.seed, epoch)
        return self._cache[key]

    def rank_sequences(self, pos: Position, rank: int, micro_batch: int) -> np.ndarray:
        start = pos.sample + rank * micro_batch
        first, last = start // self.block, (start + micro_batch - 1) // self.block
        values = np.concatenate([self._block(pos.epoch, b) for b in range(first, last + 1)])
        offset = start - first * self.block
        return values[offset: offset + micro_batch]

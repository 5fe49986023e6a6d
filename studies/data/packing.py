"""Packing: documents' token ids as one EOS-separated stream of fixed-dtype shards.

Documents are concatenated with EOS after each one (the GPT-2/LLaMA pretraining convention, and the
one LLaDA uses), so a window of L tokens may span several documents. Shards are raw little-endian
``uint16`` (when every id fits) or ``uint32`` arrays, read back with ``numpy.memmap`` without
parsing; the loader treats the shards of a split as one virtual token stream. Every shard is
recorded with its token count and SHA-256, so a copied or damaged dataset can be checked.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

DTYPE_LIMITS = {"uint16": 1 << 16, "uint32": 1 << 32}


def choose_dtype(vocab_size: int, requested: str = "auto") -> str:
    """uint16 when every id fits in it (vocab <= 65536), else uint32; a forced dtype is checked."""
    if requested == "auto":
        requested = "uint16" if vocab_size <= DTYPE_LIMITS["uint16"] else "uint32"
    if vocab_size > DTYPE_LIMITS[requested]:
        raise ValueError(
            f"vocabulary of {vocab_size} tokens does not fit in {requested} (at most "
            f"{DTYPE_LIMITS[requested]} ids); set data.token_dtype='auto' or 'uint32'"
        )
    return requested


def eos_stream(ids: Sequence[Sequence[int]], eos_id: int) -> Tuple[np.ndarray, np.ndarray]:
    """The documents' ids with EOS after each one, and where each document ends.

    Returns (stream int64 [sum(len(d) + 1)], ends int64 [len(ids)]: one past each document's EOS).
    """
    lengths = np.fromiter((len(d) for d in ids), dtype=np.int64, count=len(ids))
    ends = np.cumsum(lengths + 1)
    stream = np.full(int(ends[-1]) if len(ends) else 0, eos_id, dtype=np.int64)
    body = np.ones(len(stream), dtype=bool)
    body[ends - 1] = False
    stream[body] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return stream, ends


class ShardWriter:
    """Append tokens to ``folder/<prefix>NNNNN.bin`` files of at most ``shard_tokens`` tokens each,
    hashing them as they are written."""

    def __init__(self, folder: Path, prefix: str, dtype: str, shard_tokens: int):
        self.folder, self.prefix = Path(folder), prefix
        self.dtype, self.shard_tokens = np.dtype(dtype).newbyteorder("<"), shard_tokens
        self.shards: List[Dict] = []
        self._file = None
        self._sha = None
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, tokens: np.ndarray) -> None:
        tokens = tokens.astype(self.dtype, copy=False)
        while len(tokens):
            if self._file is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            chunk, tokens = tokens[:room], tokens[room:]
            data = chunk.tobytes()
            self._file.write(data)
            self._sha.update(data)
            self.shards[-1]["tokens"] += len(chunk)

    def _open_next(self) -> None:
        self._finish()
        name = f"{self.prefix}{len(self.shards):05d}.bin"
        self._file, self._sha = open(self.folder / name, "wb"), hashlib.sha256()
        self.shards.append({"file": name, "tokens": 0})

    def _finish(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.shards[-1]["sha256"] = self._sha.hexdigest()
            self._file = self._sha = None

    def close(self) -> List[Dict]:
        """Close the last shard; return [{"file", "tokens", "sha256"}] (names relative to the folder)."""
        self._finish()
        return self.shards


def place_shard(source: Path, target: Path, tokens: int, itemsize: int, whole: bool) -> str:
    """Put a shard at ``target``: a hard link to ``source`` when ``whole`` (a copy where links are
    refused), else a copy of its first ``tokens`` tokens. Returns the SHA-256 of the truncated copy,
    or "" for a whole shard (whose digest the caller already knows)."""
    if whole:
        try:
            os.link(source, target)
        except OSError:
            import shutil

            shutil.copyfile(source, target)
        return ""
    nbytes = tokens * itemsize
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        remaining = nbytes
        while remaining:
            block = src.read(min(1 << 20, remaining))
            if not block:
                raise OSError(f"{source} is shorter than the {tokens} tokens recorded for it")
            dst.write(block)
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()

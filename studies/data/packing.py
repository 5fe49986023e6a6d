"""Packing: tokenize documents and write them as one EOS-separated stream of fixed-dtype shards.

Documents are concatenated with EOS after each one (the GPT-2/LLaMA pretraining convention, and the
one LLaDA uses), so a window of L tokens may span several documents. Shards are raw little-endian
``uint16`` (when every id fits) or ``uint32`` arrays, read back with ``numpy.memmap`` without
parsing; the loader treats the shards of a split as one virtual token stream.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

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


def _encode(batch, tokenizer):
    return {"ids": [e.ids for e in tokenizer.encode_batch(batch["text"], add_special_tokens=False)]}


def tokenize(documents, tokenizer, num_proc: int = 1):
    """Add an ``ids`` column with Dataset.map (batched, ``num_proc`` processes); order is preserved."""
    import datasets

    if num_proc > 1:
        # Forked workers must not share the Rust thread pool of the parent.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    features = datasets.Features({"ids": datasets.Sequence(datasets.Value("int32"))})
    return documents.map(
        _encode, batched=True, batch_size=1000, num_proc=num_proc if len(documents) > 1 else None,
        fn_kwargs={"tokenizer": tokenizer}, remove_columns=documents.column_names, features=features,
        desc="tokenize",
    )


class ShardWriter:
    """Append tokens to ``folder/shard_NNNNN.bin`` files of at most ``shard_tokens`` tokens each."""

    def __init__(self, folder: Path, dtype: str, shard_tokens: int):
        self.folder, self.dtype, self.shard_tokens = folder, np.dtype(dtype), shard_tokens
        self.shards: List[Dict] = []
        self._file = None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, tokens: np.ndarray) -> None:
        tokens = tokens.astype(self.dtype.newbyteorder("<"), copy=False)
        while len(tokens):
            if self._file is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            chunk, tokens = tokens[:room], tokens[room:]
            self._file.write(chunk.tobytes())
            self.shards[-1]["tokens"] += len(chunk)

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        name = f"shard_{len(self.shards):05d}.bin"
        self._file = open(self.folder / name, "wb")
        self.shards.append({"file": f"{self.folder.name}/{name}", "tokens": 0})

    def close(self) -> List[Dict]:
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.shards


def write_split(tokenized, folder: Path, dtype: str, eos_id: int, shard_tokens: int,
                max_tokens: Optional[int] = None) -> Dict:
    """Write the EOS-separated stream of a tokenized split; return its counts and shard list.

    ``max_tokens`` cuts the stream at exactly that many tokens (the last document may be partial).
    """
    writer = ShardWriter(folder, dtype, shard_tokens)
    documents = tokens = 0
    for table in tokenized.with_format("arrow").iter(batch_size=4096):
        column = table.column("ids").combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        offsets = column.offsets.to_numpy()
        offsets = offsets - offsets[0]
        n = len(column)
        stream = np.empty(len(flat) + n, dtype=np.int64)
        doc_index = np.repeat(np.arange(n), np.diff(offsets))
        stream[np.arange(len(flat)) + doc_index] = flat
        ends = offsets[1:] + np.arange(n)  # position of each document's EOS
        stream[ends] = eos_id
        if max_tokens is not None and tokens + len(stream) >= max_tokens:
            keep = max_tokens - tokens
            documents += int(np.searchsorted(ends, keep - 1, side="left")) + 1 if keep > 0 else 0
            writer.write(stream[:keep])
            tokens += keep
            break
        writer.write(stream)
        documents += n
        tokens += len(stream)
    return {"documents": documents, "tokens": tokens, "shards": writer.close()}

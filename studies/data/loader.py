"""The resumable loader: a LightningDataModule over prepared token shards.

Each split's shards form one virtual token stream; sequence i is tokens [i*L, (i+1)*L) in the first
epoch, and the window grid is shifted by a seeded offset in later ones (the stream is then read
cyclically; its end and start are both document boundaries). The train order is
``studies.data.order``: seeded, independent of the objective, disjoint across ranks. The
position (data epoch, sample offset) is advanced only when the training loop actually takes a batch
(``on_before_batch_transfer`` during training), not when a worker prefetches it, and it is saved in
Lightning checkpoints through ``state_dict``; a resumed run therefore continues with exactly the
batches an uninterrupted run would have trained on. (A LightningModule that overrides
``on_before_batch_transfer`` hides this hook; call ``datamodule.mark_consumed()`` from it instead.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .order import EpochOrder, Position, batch_starts, normalize, window_offset
from .layout import load_metadata

log = logging.getLogger(__name__)


class TokenStream:
    """Random access to fixed-length windows of a split's shards (memory-mapped, opened lazily)."""

    def __init__(self, data_dir: Path, split: Dict, dtype: str, seq_len: int):
        self.files = [str(Path(data_dir) / s["file"]) for s in split["shards"]]
        counts = np.array([s["tokens"] for s in split["shards"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.dtype, self.seq_len = dtype, seq_len
        self.num_tokens = int(self.starts[-1])
        self.num_sequences = self.num_tokens // seq_len
        self._maps: Optional[List[np.ndarray]] = None

    def __getstate__(self):  # workers reopen the maps instead of receiving copies of the data
        return {**self.__dict__, "_maps": None}

    def _shards(self) -> List[np.ndarray]:
        if self._maps is None:
            # plain arrays over read-only maps: slicing them avoids np.memmap's per-slice overhead
            dtype = np.dtype(self.dtype).newbyteorder("<")
            self._maps = [np.memmap(f, dtype=dtype, mode="r").view(np.ndarray) for f in self.files]
        return self._maps

    def read(self, sequence_ids: np.ndarray, offset: int = 0) -> torch.Tensor:
        """LongTensor [len(sequence_ids), seq_len] of the windows starting at ``offset + id * seq_len``,
        reading the stream cyclically (a window may run past its end into its start)."""
        L_ = self.seq_len
        out = np.empty((len(sequence_ids), L_), dtype=np.int64)
        for row, seq in enumerate(sequence_ids):
            begin = (offset + int(seq) * L_) % self.num_tokens
            head = min(L_, self.num_tokens - begin)
            self._copy(begin, out[row, :head])
            if head < L_:
                self._copy(0, out[row, head:])
        return torch.from_numpy(out)

    def _copy(self, begin: int, target: np.ndarray) -> None:
        """Fill ``target`` with the tokens from ``begin`` on; a range may cross shard boundaries."""
        maps, filled = self._shards(), 0
        shard = int(np.searchsorted(self.starts, begin, side="right")) - 1
        while filled < len(target):
            start = begin + filled - int(self.starts[shard])
            piece = maps[shard][start: start + len(target) - filled]
            target[filled: filled + len(piece)] = piece
            filled += len(piece)
            shard += 1


class _Cursor:
    """The shared, picklable train position read by the dataset when an iterator is created."""

    def __init__(self) -> None:
        self.position = Position()


class TrainBatches(IterableDataset):
    """Yields this rank's micro-batches {"input_ids": [B, L]} from the cursor's position onward.

    DataLoader workers split the batches round-robin (batch k goes to worker k mod num_workers), and
    the DataLoader returns them in that same round-robin order, so the order is the same for any
    number of workers.
    """

    def __init__(self, stream: TokenStream, cursor: _Cursor, rank: int, world_size: int,
                 micro_batch_size: int, seed: int, allow_repeat: bool):
        self.stream, self.cursor, self.rank, self.world_size = stream, cursor, rank, world_size
        self.micro_batch_size, self.seed, self.allow_repeat = micro_batch_size, seed, allow_repeat

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.world_size

    def __iter__(self):
        start = self.cursor.position  # snapshot now: a generator body would run only on first next()
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        return self._batches(start, worker, workers)

    def _batches(self, start: Position, worker: int, workers: int):
        n = self.stream.num_sequences
        order = EpochOrder(n, self.seed)
        for k, pos in enumerate(batch_starts(start, n, self.global_batch, self.allow_repeat)):
            if k % workers == worker:
                ids = order.rank_sequences(pos, self.rank, self.micro_batch_size)
                offset = window_offset(self.seed, pos.epoch, self.stream.seq_len)
                yield {"input_ids": self.stream.read(ids, offset)}


class _TrainLoader(DataLoader):
    """A DataLoader that refuses to start past the end of the data (clear error, not an empty epoch)."""

    def __init__(self, *args, check_position=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_position = check_position

    def __iter__(self):
        if self.check_position is not None:
            self.check_position()
        return super().__iter__()


class ValBatches(IterableDataset):
    """The first ``num_sequences`` validation windows in order, split into contiguous rank blocks.

    Each batch carries ``batch_index``, its place among all ranks' micro-batches: the MDM validation
    noise is drawn by it, so that any number of ranks scores the same windows under the same masks."""

    def __init__(self, stream: TokenStream, rank: int, world_size: int, micro_batch_size: int, num_sequences: int):
        per_rank = num_sequences // world_size
        self.stream, self.micro_batch_size = stream, micro_batch_size
        self.ids = np.arange(rank * per_rank, (rank + 1) * per_rank)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k, begin in enumerate(range(0, len(self.ids), self.micro_batch_size)):
            if k % workers == worker:
                yield {"input_ids": self.stream.read(self.ids[begin: begin + self.micro_batch_size]),
                       "batch_index": int(self.ids[begin]) // self.micro_batch_size}


class TokenDataModule(L.LightningDataModule):
    """Train/validation batches of ``seq_len`` tokens from a folder made by ``prepare_dataset``.

    ``rank``/``world_size`` override the trainer's (for tests and custom loops); otherwise they come
    from the attached trainer, or default to a single process.
    """

    def __init__(self, data_dir, seq_len: int, micro_batch_size: int, seed: int, allow_repeat: bool = False,
                 num_workers: int = 0, val_sequences: Optional[int] = None,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        super().__init__()
        if seq_len <= 0 or micro_batch_size <= 0:
            raise ValueError(f"seq_len={seq_len} and micro_batch_size={micro_batch_size} must be positive")
        self.data_dir = Path(data_dir)
        self.metadata = load_metadata(self.data_dir)
        self.seq_len, self.micro_batch_size, self.seed = seq_len, micro_batch_size, seed
        self.allow_repeat, self.num_workers, self.val_sequences = allow_repeat, num_workers, val_sequences
        self._rank, self._world_size = rank, world_size
        self.cursor = _Cursor()
        self.sequences_consumed = 0
        dtype = self.metadata["dtype"]
        splits = self.metadata["splits"]
        self.train_stream = TokenStream(self.data_dir, splits["train"], dtype, seq_len)
        self.val_stream = TokenStream(self.data_dir, splits["validation"], dtype, seq_len)
        self._check_train_size()

    # ---- ranks and sizes -------------------------------------------------------------------
    @property
    def rank(self) -> int:
        if self._rank is not None:
            return self._rank
        return self.trainer.global_rank if self.trainer is not None else 0

    @property
    def world_size(self) -> int:
        if self._world_size is not None:
            return self._world_size
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.world_size

    @property
    def vocab_size(self) -> int:
        return int(self.metadata["vocab_size"])

    @property
    def special_ids(self) -> Dict[str, int]:
        return dict(self.metadata["special_ids"])

    def _check_train_size(self) -> None:
        tokens = self.train_stream.num_tokens
        if tokens < self.seq_len:
            raise ValueError(
                f"seq_len={self.seq_len} is longer than the {tokens} training tokens in {self.data_dir}; "
                "use a shorter sequence length or a larger dataset"
            )
        if self.train_stream.num_sequences < self.global_batch:
            raise ValueError(
                f"{self.train_stream.num_sequences} training sequences of {self.seq_len} tokens are fewer than "
                f"one global batch ({self.world_size} ranks x {self.micro_batch_size}); use a larger dataset "
                "or a smaller batch"
            )

    # ---- position ---------------------------------------------------------------------------
    @property
    def position(self) -> Position:
        return self.cursor.position

    @property
    def epochs_completed(self) -> int:
        """Full passes over the training data taken by the training loop so far."""
        pos = self.cursor.position
        nxt = normalize(pos, self.train_stream.num_sequences, self.global_batch, True)
        return nxt.epoch

    @property
    def epoch_progress(self) -> float:
        """Data epochs consumed as a fraction (sequences consumed / sequences per epoch): log this."""
        return self.sequences_consumed / self.train_stream.num_sequences

    def mark_consumed(self, num_batches: int = 1) -> None:
        """Advance the position by ``num_batches`` global batches taken by the training loop."""
        n, gb = self.train_stream.num_sequences, self.global_batch
        for _ in range(num_batches):
            pos = normalize(self.cursor.position, n, gb, self.allow_repeat)
            if pos is None:
                raise RuntimeError("a batch was consumed after the training data ran out")
            if pos.epoch != self.cursor.position.epoch:
                log.info("training data epoch %d starts (the data is being repeated)", pos.epoch)
            self.cursor.position = Position(pos.epoch, pos.sample + gb)
            self.sequences_consumed += gb

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            self.mark_consumed()
        return batch

    def state_dict(self) -> Dict:
        pos = self.cursor.position
        return {"epoch": pos.epoch, "sample": pos.sample, "sequences_consumed": self.sequences_consumed,
                "seed": self.seed, "seq_len": self.seq_len, "config_hash": self.metadata["config_hash"]}

    def load_state_dict(self, state: Dict) -> None:
        for key, mine in (("seed", self.seed), ("seq_len", self.seq_len), ("config_hash", self.metadata["config_hash"])):
            if state.get(key) != mine:
                raise ValueError(
                    f"checkpoint data position was saved with {key}={state.get(key)!r} but this run has "
                    f"{key}={mine!r}; resuming would not continue the same token order"
                )
        self.cursor.position = Position(int(state["epoch"]), int(state["sample"]))
        self.sequences_consumed = int(state["sequences_consumed"])

    # ---- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        self._check_train_size()
        trainer = self.trainer
        if stage == "fit" and trainer is not None and trainer.max_steps > 0 and not self.allow_repeat:
            batches = trainer.max_steps * trainer.accumulate_grad_batches
            available = self.train_stream.num_sequences // self.global_batch
            if batches > available:
                raise ValueError(
                    f"max_steps={trainer.max_steps} needs {batches} batches of {self.global_batch} sequences x "
                    f"{self.seq_len} tokens but the training data holds {available} ({self.train_stream.num_tokens} "
                    "tokens); set allow_repeat=true to train for more than one epoch, or lower the budget"
                )

    def _check_not_exhausted(self) -> None:
        n, gb = self.train_stream.num_sequences, self.global_batch
        if normalize(self.cursor.position, n, gb, self.allow_repeat) is None:
            raise RuntimeError(
                f"training data exhausted: all {n // gb} batches of {gb} sequences x {self.seq_len} tokens "
                f"({n // gb * gb * self.seq_len} tokens, one epoch) were consumed and allow_repeat is false; "
                "set allow_repeat=true to start a new epoch, or lower the token budget"
            )

    def train_dataloader(self) -> DataLoader:
        dataset = TrainBatches(self.train_stream, self.cursor, self.rank, self.world_size,
                               self.micro_batch_size, self.seed, self.allow_repeat)
        return _TrainLoader(dataset, batch_size=None, num_workers=self.num_workers,
                            check_position=self._check_not_exhausted)

    def val_dataloader(self):
        available = self.val_stream.num_sequences
        if self.val_stream.num_tokens == 0:
            log.warning("%s has no validation tokens; validation is skipped", self.data_dir)
            return []
        count = available if self.val_sequences is None else min(self.val_sequences, available)
        if count < self.world_size:
            raise ValueError(
                f"the validation split ({self.val_stream.num_tokens} tokens) holds {available} sequences of "
                f"{self.seq_len} tokens, fewer than the {self.world_size} ranks; use a shorter seq_len or "
                "a larger validation split"
            )
        dataset = ValBatches(self.val_stream, self.rank, self.world_size, self.micro_batch_size, count)
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers)

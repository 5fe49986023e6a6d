"""The loader: deterministic seeded order, disjoint ranks, exact resume, and clear errors."""

import itertools

import lightning as L
import numpy as np
import pytest
import torch

from studies.data.loader import TokenDataModule
from studies.data.order import EpochOrder, Position, permute, rank_sequences

SEQ = 10  # tokens per sequence in the arange datasets: sequence id = first token // SEQ


def _ids(batch):
    return (batch["input_ids"][:, 0] // SEQ).tolist()


def _take(dm, n):
    """n train batches as lists of sequence ids, consuming them like the training loop does."""
    out = []
    for batch in itertools.islice(iter(dm.train_dataloader()), n):
        out.append(_ids(batch))
        dm.mark_consumed()
    return out


def test_permutation_is_a_bijection_that_depends_on_seed_and_epoch():
    for n in (1, 2, 7, 64, 1000, 4099):
        assert sorted(permute(np.arange(n), n, seed=5, epoch=0).tolist()) == list(range(n))
    a = permute(np.arange(1000), 1000, seed=0, epoch=0)
    assert not np.array_equal(a, permute(np.arange(1000), 1000, seed=1, epoch=0))
    assert not np.array_equal(a, permute(np.arange(1000), 1000, seed=0, epoch=1))
    assert abs(np.corrcoef(np.arange(1000), a)[0, 1]) < 0.2  # actually shuffled


def test_cached_block_order_equals_the_direct_permutation():
    for n in (100, 2500):
        order = EpochOrder(n, seed=5, block=1000)
        for start, micro in ((0, 1), (3, 7), (990, 30), (n - 30, 30)):
            for rank in (0, 1):
                pos = Position(epoch=2, sample=max(0, start - rank * micro))
                if pos.sample + (rank + 1) * micro > n:
                    continue
                assert order.rank_sequences(pos, rank, micro).tolist() == rank_sequences(pos, rank, micro, n, 5).tolist()


def test_windows_are_exact_token_slices_across_shards(arange_dataset):
    folder = arange_dataset(train_tokens=2005, shard_tokens=333)
    dm = TokenDataModule(folder, seq_len=SEQ, micro_batch_size=4, seed=0)
    for batch in itertools.islice(iter(dm.train_dataloader()), 20):
        x = batch["input_ids"]
        assert x.dtype == torch.long and x.shape == (4, SEQ)
        assert torch.equal(x - x[:, :1], torch.arange(SEQ).expand(4, SEQ))  # contiguous, even across shards
        assert (x[:, 0] % SEQ == 0).all()


def test_same_seed_same_order_different_seed_different_order(arange_dataset):
    folder = arange_dataset(train_tokens=1000)
    make = lambda seed: TokenDataModule(folder, seq_len=SEQ, micro_batch_size=5, seed=seed, allow_repeat=True)
    a, b, c = _take(make(0), 50), _take(make(0), 50), _take(make(1), 50)
    assert a == b and a != c
    assert sorted(sum(a[:20], [])) == list(range(100))  # epoch 0: every sequence exactly once


def test_order_does_not_depend_on_number_of_workers(arange_dataset):
    folder = arange_dataset(train_tokens=1000)
    plain = TokenDataModule(folder, seq_len=SEQ, micro_batch_size=3, seed=0, allow_repeat=True)
    workers = TokenDataModule(folder, seq_len=SEQ, micro_batch_size=3, seed=0, allow_repeat=True, num_workers=2)
    assert [_ids(b) for b in itertools.islice(iter(workers.train_dataloader()), 40)] == _take(plain, 40)


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_never_overlap_and_form_the_single_process_global_batch(arange_dataset, world_size):
    folder = arange_dataset(train_tokens=1030)  # 103 sequences: not a multiple of any global batch
    micro = 3
    ranks = [TokenDataModule(folder, SEQ, micro, seed=7, rank=r, world_size=world_size) for r in range(world_size)]
    per_rank = [[_ids(b) for b in dm.train_dataloader()] for dm in ranks]  # one full epoch each
    steps = 103 // (micro * world_size)
    assert all(len(batches) == steps for batches in per_rank)
    seen = [set(sum(batches, [])) for batches in per_rank]
    for i, j in itertools.combinations(range(world_size), 2):
        assert not seen[i] & seen[j]
    assert len(set().union(*seen)) == steps * micro * world_size
    single = TokenDataModule(folder, SEQ, micro * world_size, seed=7, rank=0, world_size=1)
    for step, batch in enumerate(single.train_dataloader()):
        assert sorted(_ids(batch)) == sorted(sum((per_rank[r][step] for r in range(world_size)), []))


def test_state_dict_resume_continues_exactly_across_epochs(arange_dataset):
    folder = arange_dataset(train_tokens=700)  # 70 sequences, 8 global batches of 8 per epoch
    make = lambda r: TokenDataModule(folder, SEQ, 4, seed=3, allow_repeat=True, rank=r, world_size=2)
    full = [_take(make(r), 20) for r in range(2)]
    for k in (0, 5, 8, 13):
        first = [make(r) for r in range(2)]
        for r in range(2):
            assert _take(first[r], k) == full[r][:k]
        resumed = [make(r) for r in range(2)]
        for r in range(2):
            resumed[r].load_state_dict(first[r].state_dict())
            assert _take(resumed[r], 20 - k) == full[r][k:]
    assert make(0).epochs_completed == 0
    dm = make(0)
    _take(dm, 8)
    assert dm.epochs_completed == 1 and dm.epoch_progress == pytest.approx(64 / 70)


def test_later_epochs_shift_the_window_grid_and_read_the_stream_cyclically(arange_dataset):
    """Epoch 0 reads the windows [i*L, (i+1)*L); each later epoch starts its grid at a seeded offset, so
    documents are cut at different places, and a window past the end continues at the start."""
    tokens = 703
    folder = arange_dataset(train_tokens=tokens, shard_tokens=300)
    dm = TokenDataModule(folder, SEQ, 10, seed=3, allow_repeat=True)
    starts_by_epoch = []
    for _ in range(4):  # 7 batches of 10 per epoch: 70 windows, 4 epochs
        starts = []
        for batch in itertools.islice(iter(dm.train_dataloader()), 7):
            rows = batch["input_ids"].tolist()
            for row in rows:  # every window is SEQ consecutive stream positions, modulo its length
                assert row == [(row[0] + j) % tokens for j in range(SEQ)]
            starts += [row[0] for row in rows]
            dm.mark_consumed()
        starts_by_epoch.append(sorted(starts))
    assert starts_by_epoch[0] == list(range(0, 700, SEQ))
    offsets = [epoch[0] % SEQ for epoch in starts_by_epoch]
    assert all(sorted(s) == sorted((offsets[e] + SEQ * i) % tokens for i in range(70))
               for e, s in enumerate(starts_by_epoch))
    assert len(set(offsets[1:])) > 1 and any(offsets[1:])  # seeded shifts, not one fixed grid


def test_running_out_of_data_stops_with_a_clear_message(arange_dataset):
    folder = arange_dataset(train_tokens=200)
    dm = TokenDataModule(folder, SEQ, micro_batch_size=3, seed=0)
    assert len(_take(dm, 100)) == 6  # 20 sequences -> 6 batches of 3, then the epoch ends
    with pytest.raises(RuntimeError, match="allow_repeat"):
        iter(dm.train_dataloader())
    repeat = TokenDataModule(folder, SEQ, micro_batch_size=3, seed=0, allow_repeat=True)
    batches = _take(repeat, 13)
    assert repeat.epochs_completed == 2 and batches[:6] != batches[6:12]


def test_sizes_and_mismatched_checkpoints_are_rejected(arange_dataset):
    folder = arange_dataset(train_tokens=100)
    with pytest.raises(ValueError, match="seq_len=200 is longer than the 100 training tokens"):
        TokenDataModule(folder, seq_len=200, micro_batch_size=1, seed=0)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TokenDataModule(folder, seq_len=SEQ, micro_batch_size=4, seed=0, rank=0, world_size=4)
    state = TokenDataModule(folder, SEQ, 2, seed=0).state_dict()
    with pytest.raises(ValueError, match="seed"):
        TokenDataModule(folder, SEQ, 2, seed=1).load_state_dict(state)


def test_validation_batches_are_ordered_and_split_across_ranks(arange_dataset):
    folder = arange_dataset(train_tokens=100, val_tokens=250)
    ranks = [TokenDataModule(folder, SEQ, 4, seed=0, rank=r, world_size=2, val_sequences=20) for r in range(2)]
    got = [[(b["input_ids"][:, 0] - 10**8) // SEQ for b in dm.val_dataloader()] for dm in ranks]
    assert [torch.cat(g).tolist() for g in got] == [list(range(10)), list(range(10, 20))]
    assert [len(b) for b in got[0]] == [4, 4, 2]


def test_toy_dataset_batches_use_its_vocabulary(toy_dir):
    dm = TokenDataModule(toy_dir, seq_len=64, micro_batch_size=8, seed=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 64) and int(batch["input_ids"].max()) < dm.vocab_size
    assert dm.special_ids["mask"] == 3
    assert next(iter(dm.val_dataloader()))["input_ids"].shape == (8, 64)


class _Recorder(L.LightningModule):
    """A minimal module that trains one weight and records the sequence ids of every batch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(_ids(batch))
        return (self.w - batch["input_ids"].float().mean()).pow(2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _fit(folder, max_steps, ckpt_in=None, ckpt_dir=None, num_workers=0):
    from lightning.pytorch.callbacks import ModelCheckpoint

    dm = TokenDataModule(folder, SEQ, micro_batch_size=4, seed=11, allow_repeat=True, num_workers=num_workers)
    module = _Recorder()
    callbacks = [] if ckpt_dir is None else [
        ModelCheckpoint(dirpath=ckpt_dir, filename="{step}", every_n_train_steps=5, save_top_k=-1)]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, callbacks=callbacks,
                        enable_checkpointing=ckpt_dir is not None, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_in)
    return module.seen, dm


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_checkpoint_resume_sees_the_uninterrupted_batches(arange_dataset, tmp_path, num_workers):
    """A run checkpointed every 5 steps (as a preempted job is) and resumed from step 5 trains on
    exactly the batches of the uninterrupted run, across a data-epoch boundary, with prefetching."""
    folder = arange_dataset(train_tokens=300)  # 30 sequences: 7 batches per epoch, so 12 steps cross one
    full, full_dm = _fit(folder, 12, ckpt_dir=tmp_path, num_workers=num_workers)
    state = torch.load(tmp_path / "step=5.ckpt", weights_only=False)["TokenDataModule"]
    assert (state["epoch"], state["sample"]) == (0, 20)  # what the loop trained on, not what was prefetched
    rest, resumed_dm = _fit(folder, 12, ckpt_in=tmp_path / "step=5.ckpt", num_workers=num_workers)
    assert full[5:] == rest and len(rest) == 7
    assert resumed_dm.epochs_completed == full_dm.epochs_completed == 1
    assert resumed_dm.position == full_dm.position


def test_lightning_budget_beyond_the_data_fails_before_training(arange_dataset):
    folder = arange_dataset(train_tokens=300)
    dm = TokenDataModule(folder, SEQ, micro_batch_size=4, seed=0, allow_repeat=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="max_steps=8 needs 8 batches .* holds 7"):
        trainer.fit(_Recorder(), datamodule=dm)

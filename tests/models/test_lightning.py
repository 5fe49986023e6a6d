"""Tests of models/lightning.py: optimisation of both objectives, logging, exact resume."""

import dataclasses

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from models.config import preset
from models.lightning import LanguageModel

VOCAB = 64
MASK_ID = 63


class RepeatedBatch(Dataset):
    """The same few rows forever, as dicts the module expects."""

    def __init__(self, rows: torch.Tensor, prompt_lengths: torch.Tensor | None = None):
        self.rows, self.prompt_lengths = rows, prompt_lengths

    def __len__(self):
        return 10**6

    def __getitem__(self, index):
        item = {"input_ids": self.rows[index % len(self.rows)]}
        if self.prompt_lengths is not None:
            item["prompt_lengths"] = self.prompt_lengths[index % len(self.rows)]
        return item


def make_module(objective, steps, lr=3e-3, seed=0, schedule=None, **kwargs):
    config = preset("tiny", vocab_size=VOCAB, causal=objective == "arm")
    return LanguageModel(
        dataclasses.asdict(config), objective, total_steps=steps, tokens_per_step=4 * 32,
        mask_id=MASK_ID, optim=dict(lr=lr, weight_decay=0.0), seed=seed,
        schedule=schedule or dict(kind="constant", warmup_steps=10), **kwargs,
    )


def fit(module, dataset, steps, **trainer_kwargs):
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs,
    )
    trainer.fit(module, DataLoader(dataset, batch_size=4))
    return trainer


def eval_loss(module, batch, draws=10):
    """The objective averaged over several draws of the forward process (one MDM draw is noisy)."""
    module.eval()
    with torch.no_grad():
        return sum(module.loss(batch, torch.Generator().manual_seed(123 + i)).item() for i in range(draws)) / draws


def test_arm_reaches_near_zero_loss_on_a_repeated_batch():
    # Distinct first tokens tell the rows apart, so every next token is predictable: rows sharing a
    # first token would put an irreducible ln 2 on their second tokens (a floor of 0.011 here).
    torch.manual_seed(0)
    rows = torch.randint(0, MASK_ID, (4, 32))
    rows[:, 0] = torch.arange(4)
    module = make_module("arm", 150)
    fit(module, RepeatedBatch(rows), 150)
    assert eval_loss(module, {"input_ids": rows}) < 0.02


def test_mdm_sft_reaches_near_zero_loss_on_a_repeated_batch():
    # The prompt (never masked) identifies the row, so a perfect mask predictor exists. The 1/t
    # weights of eq. 3 make single steps noisy: at a constant rate the loss keeps spiking (0.01 to
    # 0.27 within 100 steps, at a step that moves with the CPU's kernels), so the rate decays to zero
    # and the run ends converged (1e-3 with any kernels and seeds tried, far below the bound).
    torch.manual_seed(0)
    rows = torch.randint(0, MASK_ID, (4, 12))
    prompts = torch.full((4,), 4)
    module = make_module("mdm", 600, schedule=dict(kind="cosine", warmup_steps=10, final_ratio=0.0))
    fit(module, RepeatedBatch(rows, prompts), 600)
    assert eval_loss(module, {"input_ids": rows, "prompt_lengths": prompts}) < 0.05


def test_mdm_pretraining_loss_falls_towards_its_floor():
    # With every token masked (probability 1/(L+1) per draw) a bidirectional model with RoPE cannot
    # tell positions apart, so the eq. 3 loss of one memorised sequence has a floor of about
    # log(L)/(L+1); everything above it must be learned.
    torch.manual_seed(0)
    rows = torch.randint(0, MASK_ID, (1, 32)).repeat(4, 1)
    module = make_module("mdm", 300)
    before = eval_loss(module, {"input_ids": rows})
    fit(module, RepeatedBatch(rows), 300)
    after = eval_loss(module, {"input_ids": rows})
    assert before > 3.5
    assert after < 0.25 * before


@pytest.mark.parametrize("sft", [False, True])
def test_mdm_loss_and_gradients_equal_those_of_the_full_logits(sft):
    """The module projects only masked positions to the vocabulary; the loss and every gradient must
    equal eq. 3 computed from the full logits of the same noisy batch."""
    from models.objectives import mdm_forward_process, mdm_loss, sft_response_mask

    torch.manual_seed(0)
    module = make_module("mdm", 1, mdm=dict(random_length_prob=0.5))
    rows = torch.randint(0, MASK_ID, (4, 32))
    batch = {"input_ids": rows}
    if sft:
        batch["prompt_lengths"] = torch.tensor([3, 8, 1, 20])
    loss = module.loss(batch, torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(loss, list(module.parameters()))

    response = sft_response_mask(batch["prompt_lengths"], 32) if sft else None
    noisy = mdm_forward_process(rows, MASK_ID, eps=module.mdm_config.eps, maskable=response,
                                random_length_prob=0.0 if sft else 0.5, generator=torch.Generator().manual_seed(7))
    if not sft:
        assert noisy.key_padding_mask is not None  # a cut sequence is part of the check
    full = mdm_loss(module.model(noisy.noisy, noisy.key_padding_mask), rows, noisy.masked, noisy.p_mask, noisy.lengths)
    full_grads = torch.autograd.grad(full, list(module.parameters()))
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)
    for got, want in zip(grads, full_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [1, 7, 128, 10**4])  # 128 = 4 x 32, every ARM row
@pytest.mark.parametrize("objective,sft", [("arm", False), ("arm", True), ("mdm", False), ("mdm", True)])
def test_loss_in_chunks_equals_the_plain_loss_and_gradients(objective, sft, chunk_size):
    """loss_chunk_size > 0 (models/linear_cross_entropy.py) gives the loss and every parameter's
    gradient of loss_chunk_size = 0, for ARM and MDM, pretraining (with random-length cuts) and SFT."""
    torch.manual_seed(0)
    rows = torch.randint(0, MASK_ID, (4, 32))
    batch = {"input_ids": rows}
    if sft:
        batch["prompt_lengths"] = torch.tensor([3, 8, 1, 20])
    results = []
    for size in (0, chunk_size):
        torch.manual_seed(1)  # the same initial weights
        module = make_module(objective, 1, mdm=dict(random_length_prob=0.5), loss_chunk_size=size)
        loss = module.loss(batch, torch.Generator().manual_seed(7))
        results.append((loss.detach(), torch.autograd.grad(loss, list(module.parameters()))))
    (plain, plain_grads), (chunked, chunked_grads) = results
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-6)
    for got, want in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_loss_chunk_size_is_a_hyperparameter_and_zero_is_the_plain_path():
    torch.manual_seed(0)
    module = make_module("arm", 1, loss_chunk_size=16)
    assert module.hparams["loss_chunk_size"] == 16
    module.loss_chunk_size = 0
    rows = torch.randint(0, MASK_ID, (4, 32))
    from models.objectives import arm_loss

    assert torch.equal(module.loss({"input_ids": rows}, None), arm_loss(module.model(rows), rows))
    with pytest.raises(ValueError, match="loss_chunk_size"):
        make_module("arm", 1, loss_chunk_size=-1)


def test_tied_head_in_chunks_gets_the_gradient_of_both_uses():
    torch.manual_seed(0)
    rows = torch.randint(0, MASK_ID, (4, 32))
    grads = []
    for size in (0, 7):
        torch.manual_seed(1)
        config = preset("tiny", vocab_size=VOCAB, causal=True, tie_embeddings=True)
        module = LanguageModel(dataclasses.asdict(config), "arm", total_steps=1, tokens_per_step=1, loss_chunk_size=size)
        grads.append(torch.autograd.grad(module.loss({"input_ids": rows}, None), [module.model.embed.weight])[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)


class Recorder(L.Callback):
    def __init__(self):
        self.logged = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.logged.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_logs_tokens_and_training_flops_seen():
    rows = torch.randint(0, MASK_ID, (4, 32))
    module = make_module("mdm", 5)
    recorder = Recorder()
    fit(module, RepeatedBatch(rows), 5, callbacks=[recorder], log_every_n_steps=1)
    last = recorder.logged[-1]
    assert last["train/tokens_seen"] == 5 * 4 * 32
    assert last["train/flops_seen"] == pytest.approx(6 * module.config.non_embedding_params * 5 * 4 * 32)
    assert last["train/lr"] == pytest.approx(3e-3)
    assert "perf/tokens_per_s" in last


class GradientNorms(L.Callback):
    """The global gradient norm as the optimizer step is about to clip it, and the logged one."""

    def __init__(self):
        self.seen, self.logged = [], []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.seen.append(float(torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]).norm()))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.logged.append(float(trainer.callback_metrics["train/grad_norm"]))


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_logs_the_gradient_norm_before_clipping(objective):
    rows = torch.randint(0, MASK_ID, (4, 32))
    module = make_module(objective, 3)
    norms = GradientNorms()
    fit(module, RepeatedBatch(rows), 3, callbacks=[norms], log_every_n_steps=1, gradient_clip_val=1e-3)
    assert len(norms.logged) == 3
    assert norms.logged == pytest.approx(norms.seen, rel=1e-5)
    assert min(norms.logged) > 1e-2  # far above the clip value: the norm is logged before clipping


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_resume_from_checkpoint_is_exact(objective, tmp_path):
    torch.manual_seed(0)
    rows = torch.randint(0, MASK_ID, (8, 32))
    data = RepeatedBatch(rows)

    L.seed_everything(1)
    straight = make_module(objective, 6, seed=5)
    fit(straight, data, 6)

    L.seed_everything(1)
    first = make_module(objective, 6, seed=5)
    trainer = fit(first, data, 3)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    L.seed_everything(99)  # a different global RNG state must not matter
    resumed = make_module(objective, 6, seed=5)
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    # The repeated batch has period 2 rows of 4; resuming at step 3 continues at row offset 12 % 8.
    trainer.fit(resumed, DataLoader(torch.utils.data.Subset(data, range(12, 10**5)), batch_size=4),
                ckpt_path=tmp_path / "mid.ckpt")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_construction_is_refused():
    config = dataclasses.asdict(preset("tiny", vocab_size=VOCAB, causal=True))
    with pytest.raises(ValueError, match="bidirectional"):
        LanguageModel(config, "mdm", total_steps=1, tokens_per_step=1, mask_id=1)
    with pytest.raises(ValueError, match="objective"):
        LanguageModel(config, "diffusion", total_steps=1, tokens_per_step=1)
    bidirectional = dataclasses.asdict(preset("tiny", vocab_size=VOCAB, causal=False))
    with pytest.raises(ValueError, match="mask token"):
        LanguageModel(bidirectional, "mdm", total_steps=1, tokens_per_step=1, mask_id=None)


def test_logger_metrics_are_logged_on_the_steps_the_logger_writes():
    """lr, tokens, FLOPs and the gradient norm are computed only on logged steps, and those are
    exactly the steps Lightning writes: every log_every_n_steps-th optimizer step."""

    class Written(L.Callback):
        def __init__(self):
            self.steps = {}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer._logger_connector.should_update_logs:
                self.steps[trainer.global_step] = dict(trainer.callback_metrics)

    rows = torch.randint(0, MASK_ID, (4, 32))
    module = make_module("arm", 9)
    written = Written()
    fit(module, RepeatedBatch(rows), 9, callbacks=[written], log_every_n_steps=3)
    assert sorted(written.steps) == [3, 6, 9]
    for step, metrics in written.steps.items():
        assert float(metrics["train/tokens_seen"]) == step * 4 * 32
        assert "train/grad_norm" in metrics and "train/lr" in metrics

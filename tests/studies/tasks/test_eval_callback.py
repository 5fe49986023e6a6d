"""Tests of studies/tasks/eval_callback.py on a tiny model trained for two steps on the small toy world."""

import dataclasses

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

from models.config import preset
from models.flops import training_flops_per_token
from models.lightning import LanguageModel
from studies.config import EvalConfig
from studies.data.loader import TokenDataModule
from studies.tasks.eval_callback import DownstreamEval

EVAL = EvalConfig(suite="toy_mc,toy_arithmetic", at_fractions=[0.0, 0.5, 1.0], limit=2, mc_samples=2,
                  settings={"max_new_tokens": 4, "steps": 2, "batch_size": 4})


def test_callback_logs_scores_with_flops_and_keeps_them_across_a_resume(tmp_path, toy_data):
    folder, meta = toy_data
    config = preset("tiny", vocab_size=meta["vocab_size"], causal=False, max_seq_len=64)
    module = LanguageModel(dataclasses.asdict(config), "mdm", total_steps=2, tokens_per_step=2 * 32,
                           mask_id=meta["special_ids"]["mask"], seed=0)
    callback = DownstreamEval.from_config(EVAL, data_dir=folder, total_steps=2, results_dir=tmp_path / "eval")
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=CSVLogger(tmp_path, name="logs", version=0),
                        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=TokenDataModule(folder, seq_len=32, micro_batch_size=2, seed=0, num_workers=0))

    assert [point["step"] for point in callback.results] == [0, 1, 2]
    per_token = training_flops_per_token(config)
    for point in callback.results:
        assert point["flops"] == pytest.approx(per_token * point["step"] * 2 * 32)
        assert point["tasks"]["toy_mc"]["n"] == 2 and point["tasks"]["toy_arithmetic"]["n"] == 2
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["eval_step0.json", "eval_step1.json", "eval_step2.json"]
    logged = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = logged[0].split(",")
    assert {"eval/toy_mc/acc", "eval/toy_mc/acc_norm", "eval/toy_arithmetic/exact_match", "eval/flops_seen"} <= set(header)
    flops_column = header.index("eval/flops_seen")
    logged_flops = sorted(float(row.split(",")[flops_column]) for row in logged[1:] if row.split(",")[flops_column])
    assert logged_flops == [0.0, per_token * 64, per_token * 128]
    assert module.training  # the evaluation restored training mode

    resumed = DownstreamEval.from_config(EVAL, data_dir=folder, total_steps=2)
    resumed.load_state_dict(callback.state_dict())
    calls = []
    resumed.evaluate = lambda *args: calls.append(args)  # a step already scored is never scored again
    resumed._maybe_evaluate(trainer, module, 2)
    assert calls == [] and len(resumed.results) == 3

"""Tests of studies/tasks/callback.py and the ``python -m studies.evaluate`` command line on real
tiny checkpoints trained for two steps on the small toy world."""

import dataclasses
import json

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

from models.config import preset, training_flops_per_token
from models.lightning import LanguageModel
from studies import evaluate
from studies.config import BudgetConfig, EvalConfig, RunConfig, TrackingConfig, TrainerConfig
from studies.data.loader import TokenDataModule
from studies.tasks.callback import DownstreamEval, eval_steps

EVAL = EvalConfig(suite="toy_mc,toy_arithmetic", at_fractions=[0.0, 0.5, 1.0], limit=2, mc_samples=2,
                  settings={"max_new_tokens": 4, "steps": 2, "batch_size": 4})


def test_eval_steps_from_fractions():
    assert eval_steps([0.0, 0.25, 0.5, 1.0, 0.5], 10) == [0, 2, 5, 10]
    with pytest.raises(ValueError, match=r"at_fractions must lie in \[0, 1\]"):
        eval_steps([1.5], 10)


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


def test_cli_scores_a_checkpoint_trained_by_studies_run(tmp_path, toy_data, world_config, capsys):
    from studies.run import run

    data = world_config(toy_data[0].parent)  # the prepared folder of the fixture is reused
    cfg = RunConfig(
        name="cli", objective="arm", out_dir=str(tmp_path / "run"),
        model=preset("tiny", max_seq_len=64), data=data,
        trainer=TrainerConfig(seq_len=32, global_batch_size=2, micro_batch_size=2, precision="32-true",
                              accelerator="cpu", num_workers=0, val_batches=1, progress_bar=False,
                              log_every_n_steps=1),
        budget=BudgetConfig(steps=2), eval=EVAL, tracking=TrackingConfig(enabled=False),
    )
    result = run(cfg)
    out = tmp_path / "results.json"
    assert evaluate.main(["--checkpoint", result["checkpoint"], "--limit", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "toy_mc" in printed and "acc_norm" in printed and "exact_match" in printed
    report = json.loads(out.read_text())
    assert report["objective"] == "arm" and report["suite"] == "toy_mc,toy_arithmetic"  # from the run's config
    assert report["mc_samples"] == 2 and report["limit"] == 3
    for task in ("toy_mc", "toy_arithmetic"):
        entry = report["tasks"][task]
        assert entry["n"] == 3 and all(0.0 <= v <= 1.0 for v in entry["metrics"].values())

    lonely = tmp_path / "lonely.ckpt"
    lonely.write_bytes(open(result["checkpoint"], "rb").read())
    # a user's mistake is one line and exit 2, before the checkpoint is loaded
    for args, message in ((["--checkpoint", str(lonely), "--suite", "toy_mc"], "pass --data-dir"),
                          (["--checkpoint", str(tmp_path / "nope.ckpt")], "does not exist"),
                          (["--checkpoint", result["checkpoint"], "--suite", "nosuch"], "unknown suite 'nosuch'"),
                          (["--checkpoint", result["checkpoint"], "--limit", "0"], "--limit (0)")):
        capsys.readouterr()
        assert evaluate.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert evaluate.main(["--checkpoint", str(lonely), "--suite", "toy_forward", "--limit", "2",
                          "--data-dir", str(toy_data[0])]) == 0
    assert "toy_forward" in capsys.readouterr().out

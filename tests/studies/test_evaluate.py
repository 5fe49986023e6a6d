"""Tests of the ``python -m studies.evaluate`` command line on a real tiny checkpoint trained for two steps
on the small toy world."""

import json

from models.config import preset
from studies import evaluate
from studies.config import BudgetConfig, EvalConfig, RunConfig, TrackingConfig, TrainerConfig

EVAL = EvalConfig(suite="toy_mc,toy_arithmetic", at_fractions=[0.0, 0.5, 1.0], limit=2, mc_samples=2,
                  settings={"max_new_tokens": 4, "steps": 2, "batch_size": 4})


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

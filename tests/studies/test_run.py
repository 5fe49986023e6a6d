"""Tests of studies/run.py: one run end to end, exact resume, idempotence, refusal to overwrite."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from run_configs import CrashAt, tiny_run_config, train_losses
from studies.run import run


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_a_resumed_run_continues_exactly(objective, tmp_path, data_cache):
    tracking = {"enabled": False}
    straight = tiny_run_config(tmp_path / "a" / "g" / "straight", data_cache, objective, steps=8, tracking=tracking)
    run(straight)
    resumed = dataclasses.replace(straight, out_dir=str(tmp_path / "b" / "g" / "resumed"))
    with pytest.raises(RuntimeError, match="injected crash"):
        run(resumed, callbacks=[CrashAt(5)])  # last.ckpt was written at step 4
    run(resumed)

    expected, got = train_losses(tmp_path / "a" / "g" / "straight"), train_losses(tmp_path / "b" / "g" / "resumed")
    assert sorted(expected) == list(range(8)) and sorted(got) == list(range(8))
    assert got == expected  # same data position, same masks, same optimizer state: bit for bit
    a = torch.load(tmp_path / "a" / "g" / "straight" / "checkpoints" / "final.ckpt", weights_only=False)
    b = torch.load(tmp_path / "b" / "g" / "resumed" / "checkpoints" / "final.ckpt", weights_only=False)
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    assert sorted(p.name for p in (tmp_path / "b" / "g" / "resumed" / "checkpoints").iterdir()) == \
        sorted(p.name for p in (tmp_path / "a" / "g" / "straight" / "checkpoints").iterdir())


def _weights(out_dir):
    return torch.load(out_dir / "checkpoints" / "final.ckpt", weights_only=False)["state_dict"]


@pytest.mark.parametrize("fault", ["truncated newest checkpoint", "killed mid-write"])
def test_a_damaged_checkpoint_folder_resumes_exactly(fault, tmp_path, data_cache, capsys):
    """A truncated last.ckpt (a full disk, a kill during an old-style write) falls back to the previous
    checkpoint, naming the file; a write killed midway leaves a partial file, removed on resume. Both
    runs end bit for bit where the uninterrupted run ends."""
    tracking = {"enabled": False}
    straight = tiny_run_config(tmp_path / "a" / "g" / "straight", data_cache, "mdm", steps=8, tracking=tracking)
    run(straight)
    damaged = dataclasses.replace(straight, out_dir=str(tmp_path / "b" / "g" / "damaged"))
    with pytest.raises(RuntimeError, match="injected crash"):
        run(damaged, callbacks=[CrashAt(7)])  # checkpoints every 2 steps: last at step 6, previous at 4
    folder = tmp_path / "b" / "g" / "damaged" / "checkpoints"
    last = folder / "last.ckpt"
    assert (folder / "last.ckpt.prev").is_file()
    if fault == "truncated newest checkpoint":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    else:
        (folder / "last.ckpt.partial-99999").write_bytes(last.read_bytes()[:1000])
    capsys.readouterr()
    run(damaged)
    err = capsys.readouterr().err
    if fault == "truncated newest checkpoint":
        assert f"{last} is truncated" in err and "resuming from the previous checkpoint" in err
    else:
        assert "last.ckpt.partial-99999: a checkpoint write that did not finish" in err
    assert sorted(p.name for p in folder.iterdir()) == ["final.ckpt"]  # nothing leaked
    expected, got = _weights(tmp_path / "a" / "g" / "straight"), _weights(tmp_path / "b" / "g" / "damaged")
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    assert train_losses(tmp_path / "b" / "g" / "damaged")[7] == train_losses(tmp_path / "a" / "g" / "straight")[7]


def test_a_finished_run_is_not_run_again_and_a_different_config_is_refused(tmp_path, data_cache, capsys):
    cfg = tiny_run_config(tmp_path / "g" / "r", data_cache, steps=2, tracking={"enabled": False})
    first = run(cfg)
    result_file = tmp_path / "g" / "r" / "result.json"
    stamp = result_file.stat().st_mtime_ns
    assert run(cfg) == first and result_file.stat().st_mtime_ns == stamp
    assert "already finished" in capsys.readouterr().out
    changed = dataclasses.replace(cfg, seed=1)
    with pytest.raises(FileExistsError, match="different config"):
        run(changed)
    assert result_file.stat().st_mtime_ns == stamp
    # another checkpoint cadence, progress bar and MLflow store change no value: the same run, finished
    neutral = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, checkpoint_every_n_steps=7,
                                                                    progress_bar_refresh_steps=5),
                                  tracking=dataclasses.replace(cfg.tracking, uri="http://127.0.0.1:9"))
    assert run(neutral) == first and result_file.stat().st_mtime_ns == stamp
    assert "already finished" in capsys.readouterr().out
    assert "checkpoint_every_n_steps: 7" in (tmp_path / "g" / "r" / "config.yaml").read_text()


def test_a_finished_run_that_lost_its_result_is_not_trained_again(tmp_path, data_cache):
    from studies.run import RunFolderConflict, main

    cfg = tiny_run_config(tmp_path / "g" / "r", data_cache, steps=2, tracking={"enabled": False})
    run(cfg)
    final = tmp_path / "g" / "r" / "checkpoints" / "final.ckpt"
    stamp = final.stat().st_mtime_ns
    (tmp_path / "g" / "r" / "result.json").unlink()
    with pytest.raises(RunFolderConflict, match="the run finished training and its result was lost"):
        run(cfg)
    assert main([str(tmp_path / "g" / "r" / "config.yaml")]) == 2
    assert final.stat().st_mtime_ns == stamp and not (tmp_path / "g" / "r" / "result.json").exists()


def test_an_inconsistent_config_fails_before_anything_is_written(tmp_path, data_cache):
    cfg = tiny_run_config(tmp_path / "g" / "r", data_cache, objective="mdm", steps=2)
    cfg.model.causal = True
    with pytest.raises(ValueError, match="model.causal=False"):
        run(cfg)
    assert not (tmp_path / "g" / "r").exists()

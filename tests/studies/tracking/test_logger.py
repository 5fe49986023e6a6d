"""Tests of studies/tracking/logger.py: training runs that log through TrackerLogger to a real MLflow
server on 127.0.0.1 (what a run records, resume, an outage, a full disk)."""

from __future__ import annotations

import json

import lightning as L
import pytest
from mlflow.tracking import MlflowClient

from mlflow_server import MlflowServer, runs_of
from run_configs import CrashAt, tiny_run_config
from small_disk import fill
from studies.run import run
from studies.tracking.experiments import start_parent_run
from studies.tracking.tracker import PENDING_FILE, read_tracking_file, write_tracking_file

pytestmark = pytest.mark.mlflow_server


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_a_training_run_records_tags_params_metrics_and_artifacts(mlflow_server, tmp_path, data_cache):
    cfg = tiny_run_config(tmp_path / "runs" / "g-record" / "key1", data_cache, objective="mdm", steps=6,
                          grid="g-record", tracking={"uri": mlflow_server.uri})
    parent = start_parent_run(mlflow_server.uri, "g-record")
    write_tracking_file(cfg.out_dir, parent_run_id=parent, run_key="key1")
    result = run(cfg)

    (record,) = [r for r in runs_of(mlflow_server.uri, "g-record") if r.info.run_id != parent]
    client = MlflowClient(mlflow_server.uri)
    assert record.info.status == "FINISHED"
    assert record.info.run_name == "g-record/mdm-tiny"  # {grid}/{the run's name}
    tags = record.data.tags
    assert tags["mlflow.parentRunId"] == parent
    for name in ("grid", "objective", "model", "run_key", "non_embedding_params", "tokens", "flops_budget",
                 "flops", "seed", "git_commit", "git_dirty", "host"):
        assert name in tags, name
    assert (tags["grid"], tags["objective"], tags["model"], tags["run_key"]) == ("g-record", "mdm", "tiny", "key1")
    params = record.data.params
    assert params["trainer.seq_len"] == "32" and params["model.causal"] == "False"
    assert params["optim.weight_decay"] == "0.1"
    loss = client.get_metric_history(record.info.run_id, "train/loss")
    assert sorted(m.step for m in loss) == list(range(6))
    flops = client.get_metric_history(record.info.run_id, "train/flops_seen")
    per_step = 6 * cfg.model.non_embedding_params * 4 * 32
    assert {m.step: m.value for m in flops}[5] == pytest.approx(6 * per_step)
    for key in ("val/loss", "train/lr", "train/tokens_seen", "perf/tokens_per_s", "data/epochs"):
        assert client.get_metric_history(record.info.run_id, key), key
    artifacts = {a.path for a in client.list_artifacts(record.info.run_id)}
    assert {"config.yaml", "result.json", "data"} <= artifacts
    assert result["val_loss"] == pytest.approx(record.data.metrics["final/val_loss"])


def test_a_restarted_run_continues_the_same_mlflow_run(mlflow_server, tmp_path, data_cache):
    cfg = tiny_run_config(tmp_path / "runs" / "g-resume" / "key2", data_cache, steps=6, grid="g-resume",
                          tracking={"uri": mlflow_server.uri})
    with pytest.raises(RuntimeError, match="injected crash"):
        run(cfg, callbacks=[CrashAt(4)])
    first_id = read_tracking_file(cfg.out_dir)["run_id"]
    assert MlflowClient(mlflow_server.uri).get_run(first_id).info.status == "FAILED"
    run(cfg)  # resumes from last.ckpt (step 4)
    records = runs_of(mlflow_server.uri, "g-resume")
    assert [r.info.run_id for r in records] == [first_id]
    assert records[0].info.status == "FINISHED"
    steps = [m.step for m in MlflowClient(mlflow_server.uri).get_metric_history(first_id, "train/loss")]
    assert sorted(steps) == list(range(6))


def test_steps_repeated_after_a_resume_are_logged_once(mlflow_server, tmp_path, data_cache):
    cfg = tiny_run_config(tmp_path / "runs" / "g-replay" / "key5", data_cache, steps=8, grid="g-replay",
                          tracking={"uri": mlflow_server.uri})
    with pytest.raises(RuntimeError, match="injected crash"):
        run(cfg, callbacks=[CrashAt(5)])  # steps 0-4 logged, last.ckpt at step 4: step 4 runs twice
    run(cfg)
    run_id = read_tracking_file(cfg.out_dir)["run_id"]
    client = MlflowClient(mlflow_server.uri)
    for key in ("train/loss", "train/lr", "train/tokens_seen"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(8)), key


def test_outage_mid_run_loses_nothing_and_duplicates_nothing(tmp_path, data_cache):
    server = MlflowServer(tmp_path / "server").start()
    try:
        class Outage(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step == 3:
                    server.stop()
                if trainer.global_step == 7:
                    server.start()

        cfg = tiny_run_config(tmp_path / "runs" / "g-outage" / "key3", data_cache, steps=10, grid="g-outage",
                              tracking={"uri": server.uri})
        run(cfg, callbacks=[Outage()])
        (record,) = runs_of(server.uri, "g-outage")
        history = MlflowClient(server.uri).get_metric_history(record.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(10))  # every step, exactly once
        assert record.info.status == "FINISHED"
        assert (tmp_path / "runs" / "g-outage" / "key3" / PENDING_FILE).read_text() == ""
    finally:
        server.stop()


class FillDiskAt(L.Callback):
    """Fills the run's filesystem at optimizer step ``step`` (every later write fails with ENOSPC)."""

    def __init__(self, step, folder):
        self.step, self.folder, self.filler = step, folder, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.filler is None:
            self.filler = fill(self.folder)


def test_a_full_disk_mid_run_then_freed_resumes_exactly_and_logs_every_step_once(
        mlflow_server, small_disk, tmp_path, data_cache):
    tracking = {"uri": mlflow_server.uri}
    straight = tiny_run_config(tmp_path / "runs" / "g-disk" / "straight", data_cache, steps=10, grid="g-disk",
                               tracking=tracking)
    run(straight)
    cfg = tiny_run_config(small_disk / "g-disk" / "full", data_cache, steps=10, grid="g-disk", tracking=tracking)
    full = FillDiskAt(5, small_disk)
    with pytest.raises(OSError):  # the next checkpoint or metric record cannot be written
        run(cfg, callbacks=[full])
    full.filler.unlink()  # the disk is freed
    result = run(cfg)
    assert result["train_loss"] == json.loads((tmp_path / "runs" / "g-disk" / "straight" / "result.json").read_text())["train_loss"]

    client = MlflowClient(mlflow_server.uri)
    run_id = read_tracking_file(cfg.out_dir)["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in ("train/loss", "train/lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(10)), key
    assert (small_disk / "g-disk" / "full" / PENDING_FILE).read_text() == ""
    assert sorted(p.name for p in (small_disk / "g-disk" / "full" / "checkpoints").iterdir()) == ["final.ckpt"]

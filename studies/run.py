"""Train (and evaluate) one run from a resolved config: the single entry point every job executes.

    python -m studies.run runs/GRID/KEY/config.yaml [dotlist overrides] [--until-step N]

A run lives in its ``out_dir``: the resolved ``config.yaml``, ``checkpoints/`` (``last.ckpt`` while
training, ``final.ckpt`` at the end), training logs, and ``result.json``, written last, which marks
the run finished. Re-running a finished run does nothing; re-running an interrupted one resumes
from ``last.ckpt`` (model, optimizer, schedule, step and data position), so a requeued job continues
exactly where it stopped. Under ``trainer.strategy: fsdp2`` the checkpoints are sharded folders
(``studies/strategy.py``); ``python -m studies.consolidate`` makes one file of them.

In a branched grid (``sweeps/branching.py``) a trunk is trained in segments,

    python -m studies.run TRUNK/config.yaml --until-step N

each ending at one of its branch points with ``checkpoints/branch-stepN.ckpt``, and a branch starts
from its trunk's checkpoint instead of from step 0.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from models.metric_names import FINAL_FLOPS, FINAL_VAL_LOSS, TRAIN_LOSS, VAL_LOSS
from studies.atomic_write import write_atomic
from studies.config import (BRANCH, CONFIG_FILE, RESULT_FILE, TRUNK, ConfigError, RunConfig, accumulate_grad_batches, branch_checkpoint,
                            config_yaml, load_run_config, result_determining)
from studies.validation import first_line, validate_run


class DataNotPrepared(FileNotFoundError):
    """The run reads a hub corpus that has not been prepared: a training job never prepares one itself."""


def _check_data_prepared(cfg: RunConfig, out: Path) -> None:
    """Fail at once, before Lightning is imported or an MLflow run is opened, when the run's hub corpus is
    not prepared: every job of an array would otherwise stream and tokenize it for hours on GPU nodes, and
    all but one would throw their copy away (``sweeps.preparation``)."""
    from studies.data.config import prepared_ahead
    from studies.data.layout import dataset_dir
    from studies.data.prepare import is_prepared

    if prepared_ahead(cfg.data) and not is_prepared(cfg.data):
        config = out / CONFIG_FILE
        raise DataNotPrepared(
            f"{cfg.name}: its dataset {dataset_dir(cfg.data)} ({cfg.data.source} {cfg.data.name}) is not prepared, "
            f"and a training job never prepares a hub corpus itself. Prepare it first: python -m studies.data "
            f"prepare {config if config.is_file() else 'CONFIG'} --workers N (or launch the grid with "
            f"sweeps/launch.py, which prepares it as a job of its own before the runs)")


class RunFolderConflict(FileExistsError):
    """The run folder holds something this run must not overwrite; the message names it and the fix."""


def _claim_out_dir(cfg: RunConfig) -> Path:
    """Create the run folder and write its config; refuse a folder that holds a different run.

    A config that differs only in fields that cannot change the result (``RESULT_NEUTRAL_FIELDS``:
    tracking, progress bar, checkpoint cadence) is the same run: its ``config.yaml`` is rewritten
    with the new settings and the run goes on (or stays finished)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = config_yaml(cfg)
    existing = out / CONFIG_FILE
    if existing.exists() and existing.read_text() != text:
        if _determining(load_run_config(existing)) != _determining(cfg):
            raise RunFolderConflict(
                f"{out} already holds a run with a different config ({existing}); "
                "use another out_dir or delete that run deliberately"
            )
        print(f"[studies.run] {cfg.name}: same run, new tracking/progress/checkpoint settings; "
              f"{existing} updated", flush=True)
    if not existing.exists() or existing.read_text() != text:
        write_atomic(existing, text)
    return out


def _determining(cfg: RunConfig) -> dict:
    return result_determining(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))


def _check_until_step(cfg: RunConfig, until_step: int | None) -> None:
    if until_step is None:
        return
    steps = list(cfg.branching.branch_steps)
    if cfg.branching.role != TRUNK or until_step not in steps:
        raise ConfigError(f"--until-step {until_step}: only a trunk stops early, at one of its branch points "
                          f"(branching.branch_steps of this config: {steps or 'none, it is not a trunk'})")


def run(cfg: RunConfig, callbacks: list | None = None, *, until_step: int | None = None) -> dict:
    """Train one run to its step budget and return its result (also written to result.json).

    ``callbacks`` are extra Lightning callbacks (instrumentation, custom evaluation). ``until_step``:
    train a trunk only up to that branch point (one segment), keeping its branch checkpoint and
    ``last.ckpt`` there; the run finishes when a segment reaches ``budget.steps``."""
    validate_run(cfg)
    _check_until_step(cfg, until_step)
    segment = until_step is not None and until_step < cfg.budget.steps
    out = _claim_out_dir(cfg)
    result_path = out / RESULT_FILE
    if result_path.exists():
        print(f"[studies.run] {cfg.name}: already finished ({result_path})", flush=True)
        return json.loads(result_path.read_text())
    if segment and branch_checkpoint(out, until_step).exists():
        print(f"[studies.run] {cfg.name}: segment to step {until_step} already trained "
              f"({branch_checkpoint(out, until_step)})", flush=True)
        return {"name": cfg.name, "segment_end": until_step}
    _check_data_prepared(cfg, out)
    final_checkpoint = out / "checkpoints" / "final.ckpt"
    if final_checkpoint.exists() and not (out / "checkpoints" / "last.ckpt").exists():
        raise RunFolderConflict(
            f"{final_checkpoint} exists but {result_path} does not: the run finished training and its "
            "result was lost; restore result.json, or move final.ckpt away to train the run again")

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from models.flops import training_flops
    from models.lightning import LanguageModel
    from studies.checkpoints import (PREVIOUS, AtomicCheckpointIO, BranchCheckpoints, remove_checkpoint,
                                     start_checkpoint)
    from studies.cluster.preemption import CheckpointAndRequeue, cluster_plugins
    from studies.strategy import lightning_strategy
    from studies.training_callbacks import DataEpochs, progress_bar
    from studies.data.loader import TokenDataModule
    from studies.data.layout import load_metadata
    from studies.data.prepare import prepare_dataset

    started = time.time()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data_dir = prepare_dataset(cfg.data)
    print(f"[studies.run] {cfg.name}: data {Path(data_dir).resolve()}", flush=True)
    metadata = load_metadata(data_dir)
    # The vocabulary comes from the tokenizer; non-embedding parameters (and so C = 6ND) do not
    # depend on it.
    model_config = dataclasses.replace(cfg.model, vocab_size=int(metadata["vocab_size"]))
    t = cfg.trainer
    module = LanguageModel(
        dataclasses.asdict(model_config),
        cfg.objective,
        total_steps=cfg.budget.steps,
        tokens_per_step=t.global_batch_size * t.seq_len,
        mask_id=int(metadata["special_ids"]["mask"]),
        optim=dataclasses.asdict(cfg.optim),
        schedule=dataclasses.asdict(cfg.schedule),
        mdm=dataclasses.asdict(cfg.mdm),
        seed=cfg.seed,
        peak_flops_per_second=t.peak_flops_per_device,
        loss_chunk_size=t.loss_chunk_size,
    )
    strategy, precision, module.parallelism = lightning_strategy(t)  # applied in configure_model
    datamodule = TokenDataModule(
        data_dir,
        seq_len=t.seq_len,
        micro_batch_size=t.micro_batch_size,
        seed=cfg.seed,
        allow_repeat=cfg.data.allow_repeat,
        num_workers=t.num_workers,
        val_sequences=t.val_batches * t.micro_batch_size,
    )
    checkpoints = out / "checkpoints"
    evaluation = None
    if cfg.eval.suite != "none":
        from studies.tasks.eval_callback import DownstreamEval

        evaluation = DownstreamEval.from_config(cfg.eval, data_dir=data_dir, total_steps=cfg.budget.steps,
                                                results_dir=out / "eval")
    if cfg.branching.role == BRANCH:
        _nest_under_trunk(cfg, out)
    tracker = _tracker(cfg, out)
    loggers = [CSVLogger(out, name="logs")]  # a new version_N per attempt: a restart never overwrites
    if tracker is not None:
        from studies.tracking.logger import TrackerLogger

        loggers.append(TrackerLogger(tracker))
    accumulate = accumulate_grad_batches(t)
    trunk = [BranchCheckpoints(cfg.branching.branch_steps, out)] if cfg.branching.role == TRUNK else []
    trainer = L.Trainer(
        max_steps=until_step if segment else cfg.budget.steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=precision,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=cfg.optim.grad_clip or None,
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=min(t.val_every_n_steps, cfg.budget.steps) * accumulate,
        check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches,
        num_sanity_val_steps=0,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        logger=loggers,
        callbacks=[
            *(callbacks or []),
            *([progress_bar(t.progress_bar_refresh_steps)] if t.progress_bar else []),
            DataEpochs(),
            CheckpointAndRequeue(checkpoints / "last.ckpt"),  # SLURM --signal / preemption
            *([evaluation] if evaluation is not None else []),
            *trunk,
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="step{step}",
                save_last=True,
                save_top_k=0,
                every_n_train_steps=t.checkpoint_every_n_steps,
            )
        ],
        default_root_dir=out,
        plugins=[*cluster_plugins(), AtomicCheckpointIO()],  # ranks from SLURM when srun started the run
    )
    last = checkpoints / "last.ckpt"
    try:
        resume = start_checkpoint(last, cfg)
        if resume is not None and resume.parent != checkpoints:
            import warnings

            # a branch starting from its trunk's checkpoint: the checkpoint callback's folder is this run's
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        if segment:
            return _end_segment(cfg, trainer, until_step, last)
        final = checkpoints / "final.ckpt"
        trainer.save_checkpoint(final)
        train_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        validation = trainer.validate(module, datamodule=datamodule, verbose=False)
    except BaseException as error:
        # SystemExit: checkpointed and requeued (studies.cluster.preemption); the MLflow run stays open
        if tracker is not None and trainer.global_rank == 0 and not isinstance(error, SystemExit):
            tracker.finish("FAILED")
        raise
    tokens = trainer.global_step * t.global_batch_size * t.seq_len
    result = {
        "name": cfg.name,
        "grid": cfg.grid,
        "objective": cfg.objective,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "steps": trainer.global_step,
        "tokens": tokens,
        "flops": training_flops(model_config.non_embedding_params, tokens),
        "flops_budget": cfg.budget.flops_budget,
        "non_embedding_params": cfg.model.non_embedding_params,
        "train_loss": train_metrics.get(TRAIN_LOSS),
        "val_loss": validation[0].get(VAL_LOSS) if validation else None,
        "checkpoint": str(final),
        "eval": evaluation.results if evaluation is not None else [],
        "wall_seconds": time.time() - started,
    }
    if trainer.global_rank == 0:
        write_atomic(result_path, json.dumps(result, indent=2))
        for superseded in (last, last.with_name(last.name + PREVIOUS)):  # the final checkpoint supersedes them
            remove_checkpoint(superseded)
        if tracker is not None:
            tracker.log_metrics({FINAL_VAL_LOSS: result["val_loss"] or float("nan"),
                                 FINAL_FLOPS: result["flops"]}, result["steps"])
            tracker.log_artifact(out / CONFIG_FILE)
            tracker.log_artifact(result_path)
            tracker.log_artifact(Path(data_dir) / "metadata.json", "data")
            if (out / "eval").is_dir():
                tracker.log_artifact(out / "eval")
            tracker.finish("FINISHED")
    return result


def _end_segment(cfg: RunConfig, trainer, until_step: int, last: Path) -> dict:
    """A trunk segment that reached its branch point: that checkpoint becomes ``last.ckpt``, from
    which the next segment resumes. The MLflow run stays open for the next segment."""
    from studies.checkpoints import place_copy

    kept = branch_checkpoint(cfg.out_dir, until_step)
    if trainer.global_step != until_step or not kept.exists():
        raise RunFolderConflict(
            f"{cfg.out_dir}: the trunk stopped at step {trainer.global_step} without a checkpoint at step "
            f"{until_step} (it was already past that step); its branch at step {until_step} trains from step 0")
    if trainer.global_rank == 0:
        place_copy(kept, last)
        print(f"[studies.run] {cfg.name}: segment done at step {until_step} ({kept})", flush=True)
    return {"name": cfg.name, "segment_end": until_step}


def _nest_under_trunk(cfg: RunConfig, out: Path) -> None:
    """A branch's MLflow run is created as a child of its trunk's (``mlflow.parentRunId``)."""
    from studies.tracking import read_tracking_file, write_tracking_file

    if not cfg.tracking.enabled or read_tracking_file(out).get("run_id"):
        return
    trunk_run = read_tracking_file(cfg.branching.trunk_dir).get("run_id")
    if trunk_run:
        write_tracking_file(out, parent_run_id=trunk_run)


def _tracker(cfg: RunConfig, out: Path):
    """The run's MLflow tracker, or None when tracking is disabled."""
    if not cfg.tracking.enabled:
        return None
    from studies.tracking import RunTracker, read_tracking_file, resolve_tracking_uri

    runs_root = out.resolve().parent.parent  # out_dir = <runs root>/<grid>/<run key>
    uri = resolve_tracking_uri(cfg.tracking.uri, runs_root)
    run_key = read_tracking_file(out).get("run_key") or out.name
    config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    return RunTracker(out, uri, cfg.grid, config, run_key, experiment=cfg.tracking.experiment,
                      artifact_location=cfg.tracking.artifact_location)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    until_step = None
    if "--until-step" in argv:
        at = argv.index("--until-step")
        value = argv[at + 1] if at + 1 < len(argv) else ""
        if not value.isdigit():
            print(f"error: --until-step needs a step number, got {value!r}", file=sys.stderr, flush=True)
            return 2
        until_step = int(value)
        del argv[at:at + 2]
    try:
        cfg = load_run_config(argv[0], argv[1:])
        validate_run(cfg)
        _check_until_step(cfg, until_step)
    except (ConfigError, FileNotFoundError, OmegaConfBaseException) as error:
        # A user's mistake, found before anything is written: one line, exit 2.
        print(f"error: {first_line(error)}", file=sys.stderr, flush=True)
        return 2
    try:
        result = run(cfg, until_step=until_step)
    except (RunFolderConflict, DataNotPrepared) as error:
        print(f"error: {first_line(error)}", file=sys.stderr, flush=True)
        return 2
    print(json.dumps(result), flush=True)
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Shut a DDP job's process group down before the interpreter exits: left to process teardown,
    the gloo threads can abort one rank ("terminate called without an active exception"), and srun
    then cancels the whole step although the run has finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

"""The names a run is recorded under: metrics and tags, shared by every writer and reader.

Writers: the Lightning module (``train/*``, ``val/*``, ``perf/*``), the run's callbacks
(``data/*``), the evaluation callback (``eval/*``), the run entry point (``final/*``), tracking (the
run and launch tags). Reader: the analysis, which turns these names back into a tidy table. A name changed here changes on both
sides at once. Every metric is logged at the optimizer step; ``*_flops_seen`` is C = 6 N D at that
step (``models/flops.py``), the x-axis of every scaling plot.
"""

from __future__ import annotations

# --- metrics, logged by the LightningModule every step (validation: every val_check_interval)
TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
TRAIN_TOKENS_SEEN = "train/tokens_seen"
TRAIN_FLOPS_SEEN = "train/flops_seen"
TRAIN_GRAD_NORM = "train/grad_norm"
VAL_LOSS = "val/loss"
TOKENS_PER_S = "perf/tokens_per_s"
MFU = "perf/mfu"
DATA_EPOCHS = "data/epochs"  # passes over the training data so far (studies/training_callbacks.py)
LOSS_METRICS = (TRAIN_LOSS, VAL_LOSS)

# --- downstream evaluation, logged by the evaluation callback at each evaluation step
EVAL_PREFIX = "eval/"
EVAL_FLOPS_SEEN = "eval/flops_seen"
EVAL_TOKENS_SEEN = "eval/tokens_seen"
EVAL_SECONDS = "eval/seconds"
EVAL_ITEMS = "n"  # eval/{task}/n: the documents a task's scores average over


def eval_metric(task: str, metric: str) -> str:
    """``eval/{task}/{metric}``: one downstream score (``eval/arc_challenge/acc_norm``)."""
    return f"{EVAL_PREFIX}{task}/{metric}"


# --- the end of a run, logged once by the run entry point
FINAL_VAL_LOSS = "final/val_loss"
FINAL_FLOPS = "final/flops"

# --- tags of a job's MLflow run
GRID = "grid"
OBJECTIVE = "objective"
MODEL = "model"
RUN_KEY = "run_key"
SEED = "seed"
NON_EMBEDDING_PARAMS = "non_embedding_params"
TOKENS = "tokens"
FLOPS_BUDGET = "flops_budget"
FLOPS = "flops"
ROLE = "role"  # "trunk" or "branch" for a branched cooldown; absent for a plain run
BRANCH_STEP = "branch_step"

# --- tags of a launch's parent run and of an experiment
KIND = "kind"
LAUNCH_KIND = "launch"  # kind of the parent run a launch opens over its job runs
LAUNCH_RUNS = "runs"  # how many job runs the launch submits
EXPERIMENT_GRID = "arm_mdm.grid"  # the grid that owns an MLflow experiment

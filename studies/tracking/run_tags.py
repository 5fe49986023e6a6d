"""What a job's MLflow run records about itself: its tags, its config as params, its display name.

The tags (names in ``models.metric_names``) are what the analysis selects runs by: grid, objective,
model, run key, seed, size, tokens and FLOPs, a branched cooldown's role, plus the code's git state
and where the job ran. Config keys that look like credentials are never logged, and URIs in the
config are masked.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from models.metric_names import (
    BRANCH_STEP,
    FLOPS,
    FLOPS_BUDGET,
    GRID,
    MODEL,
    NON_EMBEDDING_PARAMS,
    OBJECTIVE,
    ROLE,
    RUN_KEY,
    SEED,
    TOKENS,
)
from studies.config import BRANCH, PLAIN_RUN, TRUNK
from studies.credentials import SECRET_KEY, mask_uri


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts to {"a.b.c": "value"}; credential-like keys are left out."""
    flat: dict[str, str] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            if SECRET_KEY.search(str(key)):
                continue
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    flat[prefix[:-1]] = mask_uri(config) if isinstance(config, str) and "://" in config else str(config)
    return flat


def git_state(path: str | Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the code that runs (empty strings outside a git checkout)."""
    path = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "", "git_dirty": ""}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def environment_tags() -> dict[str, str]:
    """Where the job ran: host, SLURM job, submitit folder."""
    tags = {"host": socket.gethostname()}
    for tag, variable in (("slurm_job_id", "SLURM_JOB_ID"), ("slurm_array_job_id", "SLURM_ARRAY_JOB_ID"),
                          ("slurm_array_task_id", "SLURM_ARRAY_TASK_ID"), ("submitit_folder", "SUBMITIT_FOLDER")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


def run_tags(config: dict, run_key: str) -> dict[str, str]:
    budget = config.get("budget", {})
    return {
        GRID: str(config.get("grid")),
        OBJECTIVE: str(config.get("objective")),
        MODEL: str(config.get("model", {}).get("name")),
        RUN_KEY: run_key,
        SEED: str(config.get("seed")),
        NON_EMBEDDING_PARAMS: str(budget.get("non_embedding_params")),
        TOKENS: str(budget.get("tokens")),
        FLOPS_BUDGET: repr(float(budget.get("flops_budget", 0.0))),
        FLOPS: repr(float(budget.get("flops", 0.0))),
        **_branching_tags(config.get("branching") or {}),
        **git_state(),
        **environment_tags(),
    }


def _branching_tags(branching: dict) -> dict[str, str]:
    """``role`` (trunk or branch) and a branch's ``branch_step``: the analysis uses branches as the
    grid's runs and leaves trunks out."""
    role = branching.get("role", PLAIN_RUN)
    if role == TRUNK:
        return {ROLE: TRUNK}
    if role == BRANCH:
        return {ROLE: BRANCH, BRANCH_STEP: str(branching.get("branch_step"))}
    return {}


def run_display_name(config: dict) -> str:
    """``{grid}/{name}``: the planner names a run ``{objective}-{model}-{budget}`` (with ``-s{seed}``
    when the grid has several seeds), distinct within its grid, and the UI shows that name."""
    return f"{config.get('grid')}/{config.get('name')}"

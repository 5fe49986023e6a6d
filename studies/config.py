"""The typed schema of one run: what `studies/run.py` executes and what the sweep planner resolves.

Every section is a dataclass used as an OmegaConf structured config, so a YAML key or a dotlist
override that does not exist in the schema is an error, not a silent default. The planner fills
``budget`` (tokens, steps, FLOPs); everything else comes from the grid's study config.

A run's resolved config is its ``config.yaml`` (``CONFIG_FILE``) in the run folder: written by
``config_yaml``, read back over the schema by ``load_run_config``, and found from one of the run's
checkpoints by ``find_run_config``.

This module imports no torch: the launcher's dry run builds and hashes these configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from models.config import ModelConfig, preset
from models.objective_names import ARM, check_attention
from models.recipe import (MDMConfig, OptimConfig, ScheduleConfig, branch_point, check_schedule_names,
                           check_t_sampling)
from studies.credentials import check_no_credentials
from studies.data.config import DataConfig

CONFIG_FILE = "config.yaml"  # a run's resolved config, in its out_dir
RESULT_FILE = "result.json"  # a finished run's final scores, in its out_dir; its presence marks the run done
STRATEGIES = ("auto", "ddp", "fsdp2")
FSDP2_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")  # bf16-mixed: FSDP2's policy (studies/strategy.py)


@dataclass
class TrainerConfig:
    seq_len: int = 4096
    global_batch_size: int = 1280  # sequences per optimizer step, over all devices
    micro_batch_size: int = 4  # sequences per device per forward pass
    precision: str = "bf16-mixed"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    # auto: one device, or Lightning's choice; ddp: replicated weights and optimizer states; fsdp2:
    # weights, gradients and optimizer states sharded over the data-parallel ranks (models/parallelize.py).
    strategy: str = "auto"
    # Recompute each block's activations in the backward pass instead of keeping them: one more forward
    # per step for a block's input alone kept per layer (sweeps/memory.py counts both).
    activation_checkpointing: bool = False
    # Rows of the output head computed at once in the loss (models/objectives.py,
    # linear_cross_entropy); 0 computes every row's logits at once.
    loss_chunk_size: int = 0
    log_every_n_steps: int = 10
    val_every_n_steps: int = 500
    # Validation windows: val_batches x micro_batch_size sequences in total, split across ranks, so
    # every run validates on the same windows whatever its parallelism.
    val_batches: int = 20
    checkpoint_every_n_steps: int = 500
    num_workers: int = 2
    progress_bar: bool = True
    # Redraw Lightning's bar every this many steps: each redraw costs a few percent of a tiny model's step.
    progress_bar_refresh_steps: int = 1
    compile: bool = False  # torch.compile per Transformer block
    # Dense peak of one device (e.g. 989e12 for an H100 SXM in bf16): enables the perf/mfu metric.
    peak_flops_per_device: Optional[float] = None


@dataclass
class BudgetConfig:
    """Compute accounting of the run (C = 6 N D, N = non-embedding parameters), set by the planner."""

    flops_budget: float = 0.0
    flops: float = 0.0  # realised 6 N D after rounding to whole optimizer steps
    tokens: int = 0
    steps: int = 0
    non_embedding_params: int = 0


@dataclass
class EvalConfig:
    """Downstream evaluation: which suite, at which fractions of the run, and with what settings."""

    suite: str = "none"
    at_fractions: List[float] = field(default_factory=lambda: [1.0])
    limit: Optional[int] = None  # items per task (None: all)
    mc_samples: int = 128
    cfg_scale: float = 0.0
    settings: Any = field(default_factory=dict)


@dataclass
class TrackingConfig:
    """Where MLflow runs go; ``uri=None`` means MLFLOW_TRACKING_URI or the embedded SQLite store."""

    uri: Optional[str] = None
    experiment: Optional[str] = None
    artifact_location: Optional[str] = None
    enabled: bool = True


@dataclass
class StudyConfig:
    """The sections a grid defines once and every run of it carries verbatim (``sweeps/grid.py``)."""

    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mdm: MDMConfig = field(default_factory=MDMConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


STUDY_SECTIONS = tuple(f.name for f in fields(StudyConfig))


# A run's place in a branched grid (``BranchingConfig.role``), also the value of its ``role`` tag.
PLAIN_RUN, TRUNK, BRANCH = "run", "trunk", "branch"
ROLES = (PLAIN_RUN, TRUNK, BRANCH)


@dataclass
class BranchingConfig:
    """A run's place in a branched grid (``sweeps/branching.py``), set by the planner.

    - ``run``: trained from step 0.
    - ``trunk``: the constant-rate stable phase shared by the budgets of one (objective, model,
      seed); it keeps a checkpoint at each of ``branch_steps``.
    - ``branch``: starts from the trunk's checkpoint at ``branch_step`` (when it exists) and trains
      its own cooldown. Its schedule, data order and MDM noise make it equal, step for step, to the
      same config trained from step 0, so this section decides how a run is executed, never what it
      computes, and is not part of a run's identity (``RESULT_NEUTRAL_FIELDS``).
    """

    role: str = "run"
    trunk_dir: str = ""  # branch: the trunk's out_dir
    branch_step: int = 0  # branch: the trunk step its cooldown starts from
    branch_steps: List[int] = field(default_factory=list)  # trunk: the steps it keeps a checkpoint at


def branch_checkpoint(trunk_dir: str | Path, step: int) -> Path:
    """Where a trunk keeps the checkpoint its branch at ``step`` starts from."""
    return Path(trunk_dir) / "checkpoints" / f"branch-step{int(step)}.ckpt"


@dataclass
class RunConfig(StudyConfig):
    """One run: the study sections plus what the planner sets per run."""

    grid: str = "adhoc"
    name: str = "run"
    objective: str = ARM
    seed: int = 0
    out_dir: str = "runs/adhoc/run"
    model: ModelConfig = field(default_factory=lambda: preset("tiny"))
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    branching: BranchingConfig = field(default_factory=BranchingConfig)


# Fields that decide where a run lives and reports, how it shows progress, how often it saves a
# checkpoint (a resume is exact, so the cadence changes no value) and whether it starts from a trunk
# (a branch equals the run trained from step 0), never what it computes. A run's
# identity leaves them out: the planner's run key, and the claim of a run folder by a later launch.
RESULT_NEUTRAL_FIELDS = (
    ("out_dir",),
    ("tracking",),
    ("trainer", "progress_bar"),
    ("trainer", "progress_bar_refresh_steps"),
    ("trainer", "checkpoint_every_n_steps"),
    ("trainer", "activation_checkpointing"),  # a recomputed forward is bit for bit the kept one
    ("branching",),
    ("data", "source_tokens"),  # planning only: the run's data section carries the amount it reads
    ("data", "max_epochs_warning"),
)


# Fields added after run keys were first issued, with the value every earlier run had. At that value a
# field is left out of the key, so a run planned before the field existed keeps its key and folder.
KEYED_WHEN_CHANGED = {
    ("trainer", "loss_chunk_size"): 0,
    ("data", "tokenizer", "pretrained"): None,
    ("data", "tokenizer", "revision"): None,
}


# Schedule fields that only ``schedule.kind: cooldown`` reads; under any other kind they cannot change a
# result, so the run keys of such runs do not depend on them.
COOLDOWN_FIELDS = ("cooldown_fraction", "cooldown_shape")


def result_determining(config: dict) -> dict:
    """A resolved config (plain containers) without ``RESULT_NEUTRAL_FIELDS``: what fixes the result."""
    kept = {section: dict(value) if isinstance(value, dict) else value for section, value in config.items()}
    for path in RESULT_NEUTRAL_FIELDS:
        node = kept
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    for path, earlier in KEYED_WHEN_CHANGED.items():
        node = kept
        for part in path[:-1]:  # copied on the way down: the caller's config is never changed
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                node = None
                break
            node[part] = node = dict(child)
        if isinstance(node, dict) and path[-1] in node and node[path[-1]] == earlier:
            node.pop(path[-1])
    schedule = kept.get("schedule")
    if isinstance(schedule, dict) and schedule.get("kind") != "cooldown":
        for unread in COOLDOWN_FIELDS:  # only the cooldown schedule reads them
            schedule.pop(unread, None)
    return kept


class ConfigError(ValueError):
    """A run config that cannot run; the message names the field and the fix."""


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config YAML over the typed schema; unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run config {path} does not exist")
    loaded = OmegaConf.load(path)
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"run config {path} holds a {type(loaded).__name__}, not a mapping of sections "
                          "(grid, model, trainer, ...); give a config.yaml written by the planner")
    schema = OmegaConf.structured(RunConfig)
    merged = OmegaConf.merge(schema, loaded, OmegaConf.from_dotlist(overrides or []))
    return OmegaConf.to_object(merged)


def config_yaml(cfg: RunConfig) -> str:
    """The text of a run's ``config.yaml``: every field, keys sorted, so one config has one text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), sort_keys=True)


def find_run_config(checkpoint: Path) -> Optional[Path]:
    """``config.yaml`` of the run a checkpoint belongs to (``out_dir/checkpoints/X.ckpt``)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None


def check_run_config(cfg: RunConfig) -> None:
    """Consistency checks that the schema's types cannot express; each error names the fix."""
    check_attention(cfg.objective, cfg.model.causal)
    t = cfg.trainer
    per_step = t.micro_batch_size * t.devices * t.num_nodes
    if t.global_batch_size % per_step:
        raise ValueError(
            f"trainer.global_batch_size={t.global_batch_size} is not a multiple of "
            f"micro_batch_size x devices x num_nodes = {per_step}"
        )
    if t.seq_len > cfg.model.max_seq_len:
        raise ValueError(
            f"trainer.seq_len={t.seq_len} exceeds model.max_seq_len={cfg.model.max_seq_len}"
        )
    if cfg.budget.steps < 1:
        raise ValueError("budget.steps must be at least 1 (the planner sets it from the FLOP budget)")
    s = cfg.schedule
    check_schedule_names(s)
    if not 0 <= s.cooldown_fraction < 1:
        raise ValueError(f"schedule.cooldown_fraction={s.cooldown_fraction} must lie in [0, 1) "
                         "(Hägele et al. 2024: 0.1 to 0.2)")
    if s.kind == "wsd" and not 0 <= s.drop_at <= s.decay_start <= 1:
        raise ValueError("schedule needs 0 <= drop_at <= decay_start <= 1")
    if t.strategy not in STRATEGIES:
        hint = " (FSDP2, fully_shard, is spelled fsdp2)" if t.strategy.startswith("fsdp") else ""
        raise ValueError(f"trainer.strategy must be one of {', '.join(STRATEGIES)}, got {t.strategy!r}{hint}")
    if t.strategy == "fsdp2" and t.precision not in FSDP2_PRECISIONS:
        raise ValueError(f"trainer.strategy=fsdp2 runs at precision {', '.join(FSDP2_PRECISIONS)}; got {t.precision!r}")
    if t.loss_chunk_size < 0:
        raise ValueError(f"trainer.loss_chunk_size must be 0 (no chunks) or a number of rows, got {t.loss_chunk_size}")
    if t.progress_bar_refresh_steps < 1:
        raise ValueError(f"trainer.progress_bar_refresh_steps must be at least 1, got {t.progress_bar_refresh_steps}")
    check_no_credentials(cfg.tracking.uri, "tracking.uri")
    check_no_credentials(cfg.tracking.artifact_location, "tracking.artifact_location")
    _check_branching(cfg)
    check_t_sampling(cfg.mdm.t_sampling)


def _check_branching(cfg: RunConfig) -> None:
    b, s = cfg.branching, cfg.schedule
    if b.role not in ROLES:
        raise ValueError(f"branching.role must be one of {', '.join(ROLES)}, got {b.role!r}")
    if b.role == "run":
        return
    if s.kind != "cooldown":
        raise ValueError(f"branching.role={b.role} needs schedule.kind=cooldown, whose stable phase does not "
                         f"depend on the run's length; got {s.kind!r}")
    if b.role == BRANCH:
        expected = branch_point(cfg.budget.steps, s.cooldown_fraction)
        if b.branch_step != expected:
            raise ValueError(f"a branch of {cfg.budget.steps} steps with cooldown_fraction={s.cooldown_fraction} "
                             f"starts at step {expected}; got branching.branch_step={b.branch_step}")
    else:
        steps = list(b.branch_steps)
        if not steps or steps != sorted(set(steps)) or steps[0] < 1 or steps[-1] != cfg.budget.steps:
            raise ValueError(f"a trunk's branching.branch_steps must rise strictly from 1 or more and end at "
                             f"its budget.steps={cfg.budget.steps}; got {steps}")
        if s.cooldown_fraction != 0:
            raise ValueError("a trunk never cools down: it needs schedule.cooldown_fraction=0")


def eval_steps(at_fractions: Sequence[float], total_steps: int) -> List[int]:
    """The optimizer steps of the evaluation points (sorted, unique)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    bad = [f for f in at_fractions if not 0.0 <= float(f) <= 1.0]
    if bad:
        raise ValueError(f"eval.at_fractions must lie in [0, 1] (fractions of the step budget), got {bad}")
    return sorted({int(round(float(f) * total_steps)) for f in at_fractions})


def accumulate_grad_batches(trainer: TrainerConfig) -> int:
    return trainer.global_batch_size // (trainer.micro_batch_size * trainer.devices * trainer.num_nodes)

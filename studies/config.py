"""The typed schema of one run: what `studies/run.py` executes and what the sweep planner resolves.

Every section is a dataclass used as an OmegaConf structured config, so a YAML key or a dotlist
override that does not exist in the schema is an error, not a silent default. The planner fills
``budget`` (tokens, steps, FLOPs); everything else comes from the grid's study config.

This module imports no torch: the launcher's dry run builds and hashes these configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from models.config import ModelConfig, preset
from studies.credentials import check_no_credentials
from models.recipe import MDMConfig, OptimConfig, ScheduleConfig
from studies.data.config import DataConfig

OBJECTIVES = ("arm", "mdm")


@dataclass
class TrainerConfig:
    seq_len: int = 4096
    global_batch_size: int = 1280  # sequences per optimizer step, over all devices
    micro_batch_size: int = 4  # sequences per device per forward pass
    precision: str = "bf16-mixed"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
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
    compile: bool = False
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


@dataclass
class RunConfig(StudyConfig):
    """One run: the study sections plus what the planner sets per run."""

    grid: str = "adhoc"
    name: str = "run"
    objective: str = "arm"
    seed: int = 0
    out_dir: str = "runs/adhoc/run"
    model: ModelConfig = field(default_factory=lambda: preset("tiny"))
    budget: BudgetConfig = field(default_factory=BudgetConfig)


# Fields that decide where a run lives and reports, how it shows progress and how often it saves a
# checkpoint (a resume is exact, so the cadence changes no value), never what it computes. A run's
# identity leaves them out: the planner's run key, and the claim of a run folder by a later launch.
RESULT_NEUTRAL_FIELDS = (
    ("out_dir",),
    ("tracking",),
    ("trainer", "progress_bar"),
    ("trainer", "progress_bar_refresh_steps"),
    ("trainer", "checkpoint_every_n_steps"),
)


def result_determining(config: dict) -> dict:
    """A resolved config (plain containers) without ``RESULT_NEUTRAL_FIELDS``: what fixes the result."""
    kept = {section: dict(value) if isinstance(value, dict) else value for section, value in config.items()}
    for path in RESULT_NEUTRAL_FIELDS:
        node = kept
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return kept


def check_run_config(cfg: RunConfig) -> None:
    """Consistency checks that the schema's types cannot express; each error names the fix."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    wants_causal = cfg.objective == "arm"
    if cfg.model.causal != wants_causal:
        raise ValueError(
            f"objective {cfg.objective!r} needs model.causal={wants_causal} "
            f"(ARM: causal attention, MDM: bidirectional), got model.causal={cfg.model.causal}"
        )
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
    if s.kind not in ("wsd", "cosine", "constant"):
        raise ValueError(f"schedule.kind must be wsd, cosine or constant, got {s.kind!r}")
    if s.kind == "wsd" and not 0 <= s.drop_at <= s.decay_start <= 1:
        raise ValueError("schedule needs 0 <= drop_at <= decay_start <= 1")
    if t.progress_bar_refresh_steps < 1:
        raise ValueError(f"trainer.progress_bar_refresh_steps must be at least 1, got {t.progress_bar_refresh_steps}")
    check_no_credentials(cfg.tracking.uri, "tracking.uri")
    check_no_credentials(cfg.tracking.artifact_location, "tracking.artifact_location")
    if cfg.mdm.t_sampling not in ("uniform", "stratified"):
        raise ValueError(f"mdm.t_sampling must be uniform or stratified, got {cfg.mdm.t_sampling!r}")


def accumulate_grad_batches(trainer: TrainerConfig) -> int:
    return trainer.global_batch_size // (trainer.micro_batch_size * trainer.devices * trainer.num_nodes)

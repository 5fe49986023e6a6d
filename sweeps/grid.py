"""The typed schema of a named grid and how a grid YAML plus command-line overrides is loaded.

A grid is objectives x models x budgets (x seeds) plus the study config every run shares (data,
recipe, evaluation suite, cluster profile). The study sections are the sections of
``studies.config.RunConfig``, so a key that a run does not know is an error here, at planning time,
not a silently ignored typo in a job three days later. Command-line overrides are OmegaConf dotlists
over the same schema (``trainer.precision=bf16-mixed``, ``budgets=[1e20,1e21]``).

``models`` entries are either a preset name (the same architecture for every objective) or a mapping
that names a preset per objective, for presets that encode the objective::

    models:
      - cpu-1m                          # ARM and MDM both use cpu-1m
      - {arm: arm-1b, mdm: llada-1b}    # LLaDA Table 5: one architecture, two names
      - {preset: cpu-2m, label: cpu-2m-deep, overrides: {n_layers: 8}}
      - {arm: arm-7b, mdm: llada-8b, pairing: compute}   # LLaDA Table 5: two architectures

An entry that names a preset for only one objective runs only that objective. An entry's ``pairing``
says what its ARM and MDM share at a grid point: ``twins`` (the default) one architecture, so N, D, C
and step counts too, only the objective differs (LLaDA's 1B comparison); ``compute`` only the budget
C, each with its own N and D = C / 6N (LLaDA's ARM 7B against LLaDA 8B, Fig. 3).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from models.objective_names import OBJECTIVES
from studies.config import STUDY_SECTIONS, StudyConfig
from studies.validation import first_line

GRIDS_DIR = Path(__file__).resolve().parent / "grids"
# What an entry's ARM and MDM share at a grid point (``ModelEntry.pairing``).
TWINS = "twins"  # one architecture: N, D, C, steps; only the objective differs
COMPUTE = "compute"  # the budget C only: different architectures, each with its own N and D = C / 6N
PAIRINGS = (TWINS, COMPUTE)


@dataclass
class ModelEntry:
    """One model of a grid: a preset for every objective, or one per objective, plus field overrides."""

    preset: Optional[str] = None
    arm: Optional[str] = None
    mdm: Optional[str] = None
    label: Optional[str] = None  # display name (and ModelConfig.name) when overrides change the preset
    overrides: Dict[str, Any] = field(default_factory=dict)
    pairing: str = TWINS  # one of PAIRINGS; ``compute`` lets arm and mdm name different architectures

    def preset_for(self, objective: str) -> Optional[str]:
        return getattr(self, objective) or self.preset


@dataclass
class GridConfig(StudyConfig):
    """A grid: the study sections (shared by every run) plus what it sweeps over."""

    description: str = ""
    objectives: List[str] = field(default_factory=lambda: list(OBJECTIVES))
    models: List[Any] = MISSING
    budgets: List[float] = MISSING  # FLOPs, C = 6 N D
    seeds: List[int] = field(default_factory=lambda: [0])
    # More seeds at some budgets only: every (objective, model) at each of ``extra_seed_budgets``
    # also runs with each of ``extra_seeds``. Seeds at the cheapest budgets put seed noise into the
    # bootstrap intervals of the fits for a few percent of the grid's compute.
    extra_seeds: List[int] = field(default_factory=list)
    extra_seed_budgets: List[float] = field(default_factory=list)
    # An IsoFLOP window: only the (model, budget) pairs whose tokens per parameter D/N = C/(6 N^2)
    # lie in [low, high] are trained. Each budget then trains the sizes around its optimum, as in
    # Chinchilla's Approach 2 (Hoffmann et al. 2022), instead of every size at every budget: the
    # smallest model at the largest budget would repeat a small corpus many times, and the largest
    # at the smallest budget would stop after a few dozen steps. Empty: the full cross product.
    tokens_per_parameter: List[float] = field(default_factory=list)
    # One constant-rate trunk per (objective, model, seed), cooled down at each budget
    # (sweeps/branching.py); needs schedule.kind=cooldown.
    branching: bool = False
    cluster_profile: str = "local"  # slurm/clusters/<name>.yaml
    runs_dir: str = "runs"


def known_grids(grids_dir: Path = GRIDS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(grids_dir).glob("*.yaml"))


def grid_path(name: str, grids_dir: Path = GRIDS_DIR) -> Path:
    """``name`` is a grid under sweeps/grids/ or a path to a grid YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    path = Path(grids_dir) / f"{name}.yaml"
    if not path.is_file():
        known = known_grids(grids_dir)
        close = difflib.get_close_matches(name, known, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown grid {name!r}.{hint} Known grids: {', '.join(known) or '(none)'}")
    return path


def grid_name(name: str) -> str:
    return Path(name).stem if Path(name).suffix in (".yaml", ".yml") else name


def _describe_override_error(item: str, base: DictConfig, exc: Exception) -> str:
    key = item.split("=", 1)[0].lstrip("+~")
    parts = key.split(".")
    node: Any = base
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            where = ".".join(parts[:depth]) or "the grid"
            options = list(node.keys()) if isinstance(node, DictConfig) else []
            close = difflib.get_close_matches(part, [str(o) for o in options], n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            return (
                f"override {item!r}: key {key!r} does not exist ({part!r} is not a key of {where}).{hint} "
                f"Keys there: {', '.join(str(o) for o in options)}"
            )
        node = node[part]
    return f"override {item!r} is invalid: {first_line(exc)}"


def load_grid(name: str, overrides: list[str] = (), grids_dir: Path = GRIDS_DIR) -> GridConfig:
    """The grid's YAML merged over the schema, then the dotlist ``overrides``; typed and checked."""
    path = grid_path(name, grids_dir)
    schema = OmegaConf.structured(GridConfig)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.load(path))
    except OmegaConfBaseException as exc:
        raise ValueError(f"grid file {path} does not match the grid schema: {first_line(exc)}") from None
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. trainer.precision=bf16-mixed)")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise ValueError(_describe_override_error(item, merged, exc)) from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ValueError(f"grid {path} sets no value for {', '.join(missing)}")
    try:
        grid: GridConfig = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise ValueError(f"grid {path}: {first_line(exc)}") from None
    grid.models = [parse_model_entry(entry) for entry in grid.models]
    check_grid(grid)
    return grid


def parse_model_entry(entry: Any) -> ModelEntry:
    if isinstance(entry, ModelEntry):
        return entry
    if isinstance(entry, str):
        return ModelEntry(preset=entry)
    if isinstance(entry, dict):
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelEntry), entry))
        except OmegaConfBaseException as exc:
            names = ", ".join(f.name for f in fields(ModelEntry))
            raise ValueError(f"models entry {entry!r}: {first_line(exc)} (an entry's keys are {names})") from None
    raise ValueError(f"models entry {entry!r} must be a preset name or a mapping such as {{arm: arm-1b, mdm: llada-1b}}")


def seeds_at(grid: GridConfig, budget: float) -> list[int]:
    """The seeds a grid trains at ``budget``: ``seeds``, plus ``extra_seeds`` at ``extra_seed_budgets``."""
    from sweeps.budgets import same_budget

    extra = any(same_budget(budget, b) for b in grid.extra_seed_budgets)
    return list(grid.seeds) + (list(grid.extra_seeds) if extra else [])


def in_window(grid: GridConfig, tokens_per_param: float) -> bool:
    """Whether a run with D/N = ``tokens_per_param`` is inside the grid's ``tokens_per_parameter`` window."""
    if not grid.tokens_per_parameter:
        return True
    low, high = grid.tokens_per_parameter
    return low <= tokens_per_param <= high


def check_grid(grid: GridConfig) -> None:
    """Checks across fields that the schema's types cannot express; each error names the fix."""
    from sweeps.budgets import check_budget_value, same_budget

    unknown = [o for o in grid.objectives if o not in OBJECTIVES]
    if unknown or not grid.objectives:
        raise ValueError(f"objectives must be a non-empty subset of {list(OBJECTIVES)}, got {grid.objectives}")
    if len(set(grid.objectives)) != len(grid.objectives):
        raise ValueError(f"objectives lists a duplicate: {grid.objectives}")
    if not grid.models:
        raise ValueError("models is empty: list at least one preset (models=[tiny])")
    if not grid.budgets:
        raise ValueError("budgets is empty: list at least one FLOP budget (budgets=[1e20])")
    for budget in grid.budgets:
        check_budget_value(budget)
    if len(set(grid.budgets)) != len(grid.budgets):
        raise ValueError(f"budgets lists a duplicate: {grid.budgets}")
    if not grid.seeds or len(set(grid.seeds)) != len(grid.seeds):
        raise ValueError(f"seeds must be a non-empty list without duplicates, got {grid.seeds}")
    if bool(grid.extra_seeds) != bool(grid.extra_seed_budgets):
        raise ValueError("extra_seeds and extra_seed_budgets go together: set both (extra_seeds=[1] "
                         "extra_seed_budgets=[1e11]) or neither")
    if len(set(grid.extra_seeds)) != len(grid.extra_seeds) or set(grid.extra_seeds) & set(grid.seeds):
        raise ValueError(f"extra_seeds {grid.extra_seeds} must be distinct and not among seeds {grid.seeds}")
    stray = [b for b in grid.extra_seed_budgets if not any(same_budget(b, g) for g in grid.budgets)]
    if stray:
        listed = lambda values: "[" + ", ".join(f"{v:g}" for v in values) + "]"  # noqa: E731
        raise ValueError(f"extra_seed_budgets {listed(stray)} are not among the grid's budgets "
                         f"{listed(grid.budgets)}: list budgets the grid trains")
    window = list(grid.tokens_per_parameter)
    if window and not (len(window) == 2 and all(w > 0 and math.isfinite(w) for w in window) and window[0] < window[1]):
        raise ValueError(f"tokens_per_parameter={window} must be two positive numbers [low, high] with low < high "
                         "(tokens_per_parameter=[3,110]), or [] for every model at every budget")
    for entry in grid.models:
        if not any(entry.preset_for(o) for o in grid.objectives):
            raise ValueError(
                f"models entry {entry} names no preset for the grid's objectives {grid.objectives}: "
                "set preset (both objectives) or arm / mdm"
            )
        check_pairing(entry)


def check_pairing(entry: ModelEntry) -> None:
    """An entry's ``pairing`` is one of ``PAIRINGS``; a misspelt one is an error, not the default."""
    if entry.pairing == COMPUTE and entry.label:
        raise ValueError(
            f"models entry {entry.arm}/{entry.mdm}: label {entry.label!r} would name both architectures of a "
            f"pairing: {COMPUTE} entry alike; drop label (each run keeps its preset's name)"
        )
    if entry.pairing in PAIRINGS:
        return
    close = difflib.get_close_matches(str(entry.pairing), PAIRINGS, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise ValueError(
        f"models entry {entry.arm or entry.preset}/{entry.mdm or entry.preset}: pairing {entry.pairing!r} is not "
        f"one of {', '.join(PAIRINGS)}.{hint} ({TWINS}, the default: ARM and MDM share one architecture and so N, "
        f"D and C; {COMPUTE}: different architectures matched on C alone, each with its own N and D = C / 6N)"
    )


__all__ = [
    "COMPUTE",
    "GRIDS_DIR",
    "PAIRINGS",
    "TWINS",
    "GridConfig",
    "ModelEntry",
    "STUDY_SECTIONS",
    "check_grid",
    "check_pairing",
    "in_window",
    "seeds_at",
    "grid_name",
    "grid_path",
    "known_grids",
    "load_grid",
    "parse_model_entry",
]

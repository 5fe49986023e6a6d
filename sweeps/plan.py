"""Expand a grid into resolved, FLOP-matched runs, each with a deterministic key.

One run = one (objective, model, budget, seed). Its resolved ``RunConfig`` holds everything the job
needs: the model's preset fields (``causal`` set by the objective), the grid's study sections, and the
``budget`` section from ``sweeps.budgets.plan_budget``. ARM and MDM twins at one grid point share N, D,
C, steps, seed and the data section byte for byte; only ``objective`` and ``model.causal`` (and the
preset's name) differ. A models entry with ``pairing: compute`` (``sweeps.grid``) pairs an ARM and an MDM
of different architectures on the budget alone: each gets its own N and D = C / 6N, and so its own step
count, and everything else is shared as between twins.

The run key is a short SHA-256 of the resolved config as sorted-key JSON, without the fields that
cannot change a result (``studies.config.RESULT_NEUTRAL_FIELDS``: the run folder, derived from the key
itself; the tracking section; the progress bar; the checkpoint cadence). A change to any other value
changes the key, so a re-launch finds exactly the runs that already exist, and a finished grid
pointed at another MLflow server is not trained again.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from models.config import preset
from models.flops import FLOPS_PER_PARAM_PER_TOKEN, device_hours, model_flops_per_token, tokens_for_budget
from models.objective_names import causal_attention
from models.recipe import branch_point
from studies.atomic_write import write_atomic
from studies.config import (CONFIG_FILE, RESULT_FILE, BranchingConfig, BudgetConfig, RunConfig, config_yaml,
                            result_determining)
from studies.validation import first_line, validate_run
from sweeps import branching as branched
from sweeps.budgets import BudgetPlan, budget_label, plan_budget, same_budget
from sweeps.grid import (COMPUTE, STUDY_SECTIONS, GridConfig, ModelEntry, grid_name, in_window, load_grid,
                         seeds_at)
from sweeps.memory import MemoryPlan, run_memory
from sweeps.preparation import bounded_data, needs_bound
from sweeps.profiles import ClusterProfile, load_profile

KEY_LENGTH = 12
ONLY_FIELDS = ("objective", "model", "budget", "seed")


def run_key(config: dict) -> str:
    """SHA-256 (first 12 hex digits) of the resolved run config as canonical JSON, without the fields
    that cannot change its result (``RESULT_NEUTRAL_FIELDS``)."""
    text = json.dumps(result_determining(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


@dataclass
class PlannedRun:
    key: str
    name: str
    objective: str
    model: str
    seed: int
    budget: BudgetPlan
    device_hours: float
    config: dict  # the resolved RunConfig as plain containers, out_dir included
    run_config: RunConfig
    # What this run itself costs in a branched grid (its cooldown; a trunk: all of it); else device_hours.
    own_device_hours: Optional[float] = None

    @property
    def role(self) -> str:
        return self.config["branching"]["role"]

    @property
    def device_hours_branched(self) -> float:
        """What this job itself costs in a branched grid: a branch its cooldown, a trunk all of it."""
        return self.device_hours if self.own_device_hours is None else self.own_device_hours

    @property
    def extra_args(self) -> list[str]:
        """Arguments of ``studies.run`` after the config (a trunk's segments add ``--until-step``)."""
        return []

    def done(self) -> bool:
        return (self.out_dir / RESULT_FILE).is_file()

    @functools.cached_property
    def memory(self) -> MemoryPlan:
        """Its memory per device at the peak of a training step (``sweeps.memory``), planned once: the
        table, the JSON and the launcher's fit check all read it."""
        return run_memory(self.run_config)

    @property
    def out_dir(self) -> Path:
        return Path(self.config["out_dir"])

    @property
    def config_path(self) -> Path:
        return self.out_dir / CONFIG_FILE

    def summary(self) -> dict:
        """One JSON-ready row of the plan (``--format json``)."""
        return {
            "run_key": self.key,
            "name": self.name,
            "objective": self.objective,
            "model": self.model,
            "seed": self.seed,
            "non_embedding_params": self.budget.non_embedding_params,
            "tokens": self.budget.tokens,
            "flops_budget": self.budget.flops_budget,
            "flops": self.budget.flops,
            "steps": self.budget.steps,
            "tokens_per_param": self.budget.tokens_per_param,
            "device_hours": self.device_hours,
            "memory_gib_per_device": round(self.memory.gib, 2),
            "out_dir": str(self.out_dir),
            **self._branching_summary(),
        }

    def _branching_summary(self) -> dict:
        """In a branched grid: the role, the branch point(s), and what this job itself costs
        (``device_hours_branched``: a branch's cooldown, a trunk's whole length; their sum over a
        plan is what the launch spends, the sum of the branches' ``device_hours`` what independent
        runs would)."""
        branching = self.config["branching"]
        if self.role == branched.BRANCH:
            return {"role": self.role, "branch_step": branching["branch_step"],
                    "device_hours_branched": self.device_hours_branched}
        if self.role == branched.TRUNK:
            return {"role": self.role, "branch_steps": list(branching["branch_steps"]),
                    "device_hours_branched": self.device_hours_branched}
        return {}

    def write_config(self) -> Path:
        """Write the resolved config as YAML and return its path.

        The text is rendered by ``studies.config.config_yaml``, the function the run itself uses to
        check that its folder holds its own config, so the two always agree byte for byte.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config_path, config_yaml(self.run_config))
        return self.config_path


@dataclass
class Plan:
    grid: str
    grid_config: GridConfig
    profile_name: str
    profile: ClusterProfile
    runs_root: Path  # <runs_dir>/<grid>
    runs: list[PlannedRun]
    trunks: list[PlannedRun] = dataclasses.field(default_factory=list)  # a branched grid's (sweeps/branching.py)

    @property
    def sweep_dir(self) -> Path:
        return self.runs_root / "sweep"


def _model_for(entry: ModelEntry, objective: str):
    name = entry.preset_for(objective)
    if "causal" in entry.overrides:
        raise ValueError(f"models entry {name!r}: causal is set by the objective (ARM causal, MDM not); drop it")
    model = preset(name, **entry.overrides, causal=causal_attention(objective))
    return dataclasses.replace(model, name=entry.label) if entry.label else model


def _check_twins(entry: ModelEntry, models: dict) -> None:
    """Twins (the default pairing) share the architecture (LLaDA Sec. 3.1, the 1B comparison); an
    entry with ``pairing: compute`` pairs two different ones (ARM 7B against LLaDA 8B), and two equal
    architectures there would be twins under another name."""
    shapes = {
        o: {k: v for k, v in dataclasses.asdict(m).items() if k not in ("name", "causal")} for o, m in models.items()
    }
    where = f"models entry {entry.arm or entry.preset}/{entry.mdm or entry.preset}"
    first, *rest = shapes
    for other in rest:
        diff = sorted(k for k in shapes[first] if shapes[first][k] != shapes[other][k])
        if diff and entry.pairing != COMPUTE:
            raise ValueError(
                f"{where}: the {first} and {other} presets differ in {diff}; twins at one grid point must share "
                f"the architecture. To compare different architectures at matched compute (LLaDA's ARM 7B against "
                f"LLaDA 8B), add pairing: {COMPUTE} to the entry ({{{first}: {entry.preset_for(first)}, {other}: "
                f"{entry.preset_for(other)}, pairing: {COMPUTE}}}): each then gets its own N and D = C / 6N"
            )
        if not diff and entry.pairing == COMPUTE:
            raise ValueError(
                f"{where}: pairing: {COMPUTE} is for an ARM and an MDM of different architectures, and these share "
                f"one; drop pairing (twins share N, D and C)"
            )


def _container(section) -> dict:
    """A dataclass as the plain containers OmegaConf would write (types normalised by the schema)."""
    try:
        return OmegaConf.to_container(OmegaConf.structured(section), resolve=True)
    except OmegaConfBaseException as exc:
        raise ValueError(f"{type(section).__name__}: {first_line(exc)}") from None


def _resolved_config(run: RunConfig, sections: dict, model: dict, own_schedule: bool = False) -> dict:
    """The run's config as plain containers, equal to ``OmegaConf.to_container(OmegaConf.structured(run))``.

    The grid-wide sections and each model are converted once per grid; converting every run through
    OmegaConf would cost tens of milliseconds per run, too slow for large grids.
    """
    validate_run(run)
    b = run.budget
    return {
        "grid": str(run.grid),
        "name": str(run.name),
        "objective": str(run.objective),
        "seed": int(run.seed),
        "out_dir": str(run.out_dir),
        "model": copy.deepcopy(model),
        **copy.deepcopy(sections),
        **({"schedule": _container(run.schedule)} if own_schedule else {}),  # a branched group's warmup
        "budget": {
            "flops_budget": float(b.flops_budget),
            "flops": float(b.flops),
            "tokens": int(b.tokens),
            "steps": int(b.steps),
            "non_embedding_params": int(b.non_embedding_params),
        },
        "branching": _container(run.branching),
    }


def expand(grid: GridConfig, name: str, profile: ClusterProfile, runs_root: Path) -> list[PlannedRun]:
    """Every (model, budget, seed, objective) of the grid as a resolved run, twins next to each other."""
    sections = {s: getattr(grid, s) for s in STUDY_SECTIONS}
    if needs_bound(grid.data):  # a hub corpus: prepared up to what the grid's largest run reads
        sections["data"] = bounded_data(grid.data, _largest_tokens(grid))
    section_containers = {s: _container(v) for s, v in sections.items()}
    runs: list[PlannedRun] = []
    sizes: set[int] = set()
    several_seeds = _several_seeds(grid)
    if grid.branching:
        branched.check_branchable(grid)
    for entry in grid.models:
        models = {o: _model_for(entry, o) for o in grid.objectives if entry.preset_for(o)}
        _check_twins(entry, models)
        params = sorted({m.non_embedding_params for m in models.values()})  # one N for twins, two for a compute pair
        sizes.update(params)
        model_containers = {o: _container(m) for o, m in models.items()}
        # A pair trains at a budget when every member's D/N lies in the window, so it stays a pair.
        budgets = [b for b in grid.budgets if all(in_window(grid, tokens_for_budget(b, n) / n) for n in params)]
        warmups = _group_warmups(grid, models, budgets) if grid.branching and models else {}
        for budget in budgets:
            for seed in seeds_at(grid, budget):
                for objective, model in models.items():
                    n = model.non_embedding_params
                    t = grid.trainer
                    plan = plan_budget(budget, n, t.global_batch_size, t.seq_len, model=model.name)
                    label = f"{objective}-{model.name}-{budget_label(budget)}" + (f"-s{seed}" if several_seeds else "")
                    per_run = {}
                    if grid.branching:
                        branched.check_eval_in_cooldown(grid, label, plan.steps)
                        per_run = {
                            "schedule": dataclasses.replace(grid.schedule, warmup_steps=warmups[objective, seed],
                                                            max_warmup_fraction=1.0),
                            "branching": BranchingConfig(role=branched.BRANCH, branch_step=branch_point(
                                plan.steps, grid.schedule.cooldown_fraction)),
                        }
                    cfg = RunConfig(
                        grid=name,
                        name=label,
                        objective=objective,
                        seed=seed,
                        out_dir="",
                        model=model,
                        budget=BudgetConfig(
                            flops_budget=plan.flops_budget,
                            flops=plan.flops,
                            tokens=plan.tokens,
                            steps=plan.steps,
                            non_embedding_params=n,
                        ),
                        **{**sections, **per_run},
                    )
                    config = _resolved_config(cfg, section_containers, model_containers[objective],
                                              own_schedule="schedule" in per_run)
                    key = run_key(config)
                    config["out_dir"] = cfg.out_dir = str(runs_root / key)
                    hours = _hours(model, t.seq_len, plan.tokens, profile)
                    own = None
                    if grid.branching:
                        cooldown = plan.steps - cfg.branching.branch_step
                        own = hours * cooldown / plan.steps
                    runs.append(PlannedRun(key, label, objective, model.name, seed, plan, hours, config, cfg, own))
    _check_window_keeps_every_budget(grid, runs, sizes)
    seen: dict[str, str] = {}
    for run in runs:
        if run.key in seen:
            raise ValueError(f"runs {seen[run.key]} and {run.name} resolve to the same config: a model is listed twice")
        seen[run.key] = run.name
    return runs


def _largest_tokens(grid: GridConfig) -> int:
    """The most tokens any run of the whole grid reads (``--only`` aside: a filter never changes a key)."""
    t = grid.trainer
    largest = 0
    for entry in grid.models:
        models = {o: _model_for(entry, o) for o in grid.objectives if entry.preset_for(o)}
        _check_twins(entry, models)  # the grid's own errors first, as the expansion reports them
        params = sorted({m.non_embedding_params for m in models.values()})
        for budget in grid.budgets:
            if all(in_window(grid, tokens_for_budget(budget, n) / n) for n in params):
                for n in params:
                    largest = max(largest, plan_budget(budget, n, t.global_batch_size, t.seq_len).tokens)
    return largest


def _group_warmups(grid: GridConfig, models: dict, budgets: list[float]) -> dict[tuple[str, int], int]:
    """Per (objective, seed), the warmup shared by the runs of one branched (objective, model, seed)
    group: capped at the group's shortest run. Twins share N and so the step counts and the warmup; the
    members of a compute pair each cap it at their own shortest run, as an unbranched run would."""
    t = grid.trainer
    shortest: dict[tuple[str, int], int] = {}
    for budget in budgets:
        for objective, model in models.items():
            steps = plan_budget(budget, model.non_embedding_params, t.global_batch_size, t.seq_len,
                                model=model.name).steps
            for seed in seeds_at(grid, budget):
                shortest[objective, seed] = min(shortest.get((objective, seed), steps), steps)
    return {group: branched.group_warmup(grid.schedule, steps) for group, steps in shortest.items()}


def add_trunks(runs: list[PlannedRun], grid: GridConfig, profile: ClusterProfile, runs_root: Path) -> list[PlannedRun]:
    """One trunk per (objective, model, seed) of a branched grid; each branch learns its trunk's folder."""
    trunks = []
    for (objective, model_name, seed), members in branched.groups(runs).items():
        steps = sorted({m.run_config.branching.branch_step for m in members})
        first = members[0].run_config
        name = f"{objective}-{model_name}-trunk" + (f"-s{seed}" if _several_seeds(grid) else "")
        cfg = branched.trunk_config(first, name, steps[-1], steps)
        config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
        key = run_key(config)
        config["out_dir"] = cfg.out_dir = str(runs_root / key)
        hours = _hours(cfg.model, cfg.trainer.seq_len, cfg.budget.tokens, profile)
        b = cfg.budget
        plan = BudgetPlan(b.flops_budget, b.non_embedding_params, cfg.trainer.global_batch_size * cfg.trainer.seq_len,
                          b.steps, b.tokens, b.flops)
        trunk = PlannedRun(key, name, objective, model_name, seed, plan, hours, config, cfg, hours)
        trunks.append(trunk)
        for member in members:
            member.run_config.branching.trunk_dir = member.config["branching"]["trunk_dir"] = str(trunk.out_dir)
    return trunks


def _several_seeds(grid: GridConfig) -> bool:
    """Whether run names carry their seed (``-s{seed}``)."""
    return len(grid.seeds) + len(grid.extra_seeds) > 1


def _hours(model, seq_len: int, tokens: int, profile: ClusterProfile) -> float:
    """Device-hours to train ``model`` on ``tokens`` at the profile's peak and MFU (attention included)."""
    return device_hours(tokens * model_flops_per_token(model, seq_len), profile.peak_tflops * 1e12, profile.mfu)


def _check_window_keeps_every_budget(grid: GridConfig, runs: list[PlannedRun], sizes: set[int]) -> None:
    """A ``tokens_per_parameter`` window that leaves a budget without any model is a mistake in the grid."""
    if not grid.tokens_per_parameter:
        return
    trained = {float(r.budget.flops_budget) for r in runs}
    empty = [b for b in grid.budgets if not any(same_budget(b, t) for t in trained)]
    if empty:
        low, high = grid.tokens_per_parameter
        # D/N = C / (6 N^2) = r  <=>  N = sqrt(C / (6 r))
        size_at = lambda b, r: math.sqrt(b / (FLOPS_PER_PARAM_PER_TOKEN * r))  # noqa: E731
        wanted = ", ".join(f"{b:g}: N in [{size_at(b, high):,.0f}, {size_at(b, low):,.0f}]" for b in empty)
        raise ValueError(f"tokens_per_parameter=[{low:g}, {high:g}] leaves no model at budget(s) {wanted} "
                         f"(the grid's sizes: {', '.join(f'{n:,}' for n in sorted(sizes))}): widen the window, "
                         "add a model of that size, or drop the budget")


def parse_only(filters: Iterable[str]) -> dict[str, list[str]]:
    """``["objective=arm", "budget=1e20,1e21"]`` -> {"objective": ["arm"], "budget": ["1e20", "1e21"]}."""
    parsed: dict[str, list[str]] = {}
    for item in filters:
        field, sep, values = item.partition("=")
        if not sep or field not in ONLY_FIELDS or not values:
            raise ValueError(f"--only {item!r}: write FIELD=VALUE[,VALUE...] with FIELD one of {', '.join(ONLY_FIELDS)}")
        parsed.setdefault(field, []).extend(v.strip() for v in values.split(","))
    for value in parsed.get("budget", []) + parsed.get("seed", []):
        try:
            float(value)
        except ValueError:
            raise ValueError(f"--only: {value!r} is not a number") from None
    return parsed


def _matches(run: PlannedRun, only: dict[str, list[str]]) -> bool:
    for field, values in only.items():
        if field == "budget":
            ok = any(same_budget(float(v), run.budget.flops_budget) for v in values)
        elif field == "seed":
            ok = any(float(v) == run.seed for v in values)
        else:
            ok = getattr(run, field) in values
        if not ok:
            return False
    return True


def select(runs: list[PlannedRun], only: dict[str, list[str]]) -> list[PlannedRun]:
    chosen = [r for r in runs if _matches(r, only)]
    if only and not chosen:
        options = {
            "objective": sorted({r.objective for r in runs}),
            "model": sorted({r.model for r in runs}),
            "budget": sorted({f"{r.budget.flops_budget:g}" for r in runs}, key=float),
            "seed": sorted({str(r.seed) for r in runs}),
        }
        listing = "; ".join(f"{f}: {', '.join(options[f])}" for f in only)
        raise ValueError(f"no run of the grid matches --only {only}; the grid has {listing}")
    return chosen


def plan_grid(
    grid: str,
    overrides: list[str] = (),
    *,
    runs_dir: Optional[str] = None,
    only: Iterable[str] = (),
    profile: Optional[str] = None,
) -> Plan:
    """Load, expand and filter a grid. ``runs_dir`` and ``profile`` win over the grid's own fields."""
    config = load_grid(grid, list(overrides))
    name = grid_name(grid)
    profile_name = profile or config.cluster_profile
    cluster = load_profile(profile_name)
    root = Path(runs_dir or config.runs_dir).expanduser().resolve() / name
    filters = parse_only(only)
    every = expand(config, name, cluster, root)
    trunks = add_trunks(every, config, cluster, root) if config.branching else []
    runs = select(every, filters)
    wanted = {r.config["branching"]["trunk_dir"] for r in runs}
    return Plan(name, config, profile_name, cluster, root, runs, [t for t in trunks if str(t.out_dir) in wanted])


__all__ = ["Plan", "PlannedRun", "expand", "parse_only", "plan_grid", "run_key", "select"]

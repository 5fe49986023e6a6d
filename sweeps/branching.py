"""Many budgets from one run: a constant-rate trunk per (objective, model, seed), cooled down at each budget.

With ``branching: true`` in a grid, every run of one (objective, model, seed) shares the warmup and
the constant-rate stable phase of the ``cooldown`` schedule (``models.recipe``): a run of S steps is
that trunk up to its branch point b = S - cooldown_steps(S), then its own cooldown (MiniCPM, Hu et al.
2024; Hägele et al. 2024). The planner therefore emits

- one **trunk** per group: the stable phase up to the group's last branch point, trained in
  **segments** that each end at a branch point and keep a checkpoint there (``studies.run
  --until-step``);
- one **branch** per budget: the grid's run, with its own key (the same as the run trained from step
  0, which it equals step for step), starting from its segment's checkpoint.

Accounting: a branch's compute is C = 6 N (trunk tokens to b + cooldown tokens) = 6 N D, its budget;
what a launch spends is each trunk once plus every cooldown. With log-spaced budgets that is a little
more than the largest run plus the cooldowns, instead of the sum of all runs.

The warmup must be the same for the whole group, so it is capped once, at ``max_warmup_fraction`` of
the group's shortest run, and written into every config (``max_warmup_fraction`` then 1.0).

Imports no torch.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from models.flops import training_flops
from models.recipe import branch_point
from studies.config import BRANCH, TRUNK, BranchingConfig, BudgetConfig, branch_checkpoint, eval_steps



def check_branchable(grid) -> None:
    """A branched grid needs a schedule whose stable phase does not depend on the budget, and
    evaluation points inside the cooldowns (a branch starts at its branch point)."""
    s = grid.schedule
    if s.kind != "cooldown":
        raise ValueError(
            f"branching=true needs schedule.kind=cooldown (warmup, constant peak, cooldown over the last "
            f"schedule.cooldown_fraction of each run), whose stable phase is the same for every budget; the "
            f"grid's schedule.kind is {s.kind!r}. Set schedule.kind=cooldown, or branching=false")
    if s.cooldown_fraction <= 0:
        raise ValueError("branching=true needs schedule.cooldown_fraction > 0 (Hägele et al. 2024: 0.1 to 0.2)")
    if s.max_warmup_fraction + s.cooldown_fraction > 1:
        raise ValueError(f"schedule.max_warmup_fraction={s.max_warmup_fraction} + cooldown_fraction="
                         f"{s.cooldown_fraction} exceed 1: a cooldown would start inside the warmup")


def group_warmup(schedule, shortest_steps: int) -> int:
    """The warmup every run of a group uses: ``warmup_steps``, capped at ``max_warmup_fraction`` of
    the group's shortest run (the cap ``models.recipe.lr_multiplier`` applies to a single run)."""
    return min(schedule.warmup_steps, int(schedule.max_warmup_fraction * shortest_steps))


def check_eval_in_cooldown(grid, name: str, steps: int) -> None:
    start = branch_point(steps, grid.schedule.cooldown_fraction)
    early = [s for s in eval_steps(grid.eval.at_fractions, steps) if s <= start] if grid.eval.suite != "none" else []
    if early:
        raise ValueError(
            f"{name}: eval.at_fractions={list(grid.eval.at_fractions)} put evaluations at steps {early}, at or "
            f"before its branch point (step {start} of {steps}), which a branch does not train; with branching, "
            f"evaluate inside the cooldowns, above 1 - cooldown_fraction = {1 - grid.schedule.cooldown_fraction:g} "
            "(eval.at_fractions=[1.0])")


@dataclass
class Segment:
    """One job of a trunk: train it from the previous branch point to ``until_step``."""

    trunk: object  # sweeps.plan.PlannedRun
    until_step: int
    role = "segment"

    @property
    def key(self) -> str:
        return f"{self.trunk.key}@{self.until_step}"

    @property
    def name(self) -> str:
        return f"{self.trunk.name}@{self.until_step}"

    @property
    def objective(self) -> str:
        return self.trunk.objective

    @property
    def model(self) -> str:
        return self.trunk.model

    @property
    def out_dir(self) -> Path:
        return self.trunk.out_dir

    @property
    def budget(self):
        return self.trunk.budget

    @property
    def config(self) -> dict:
        return self.trunk.config

    @property
    def config_path(self) -> Path:
        return self.trunk.config_path

    @property
    def extra_args(self) -> list[str]:
        return ["--until-step", str(self.until_step)]

    def write_config(self) -> Path:
        return self.trunk.write_config()

    def done(self) -> bool:
        """Its branch checkpoint exists (or the trunk finished, which keeps every one)."""
        return branch_checkpoint(self.out_dir, self.until_step).exists() or self.trunk.done()


def segments(trunk) -> list[Segment]:
    return [Segment(trunk, step) for step in trunk.config["branching"]["branch_steps"]]


def jobs(trunks, todo) -> tuple[list, dict[str, str]]:
    """What a launch executes for the branches in ``todo``: the trunk segments not trained yet up to
    the last branch point they need, then the branches (and any other runs), in an order where every
    job comes after the one it waits for; and ``after``, each job's prerequisite key."""
    ordered, after = [], {}
    by_dir = {str(t.out_dir): t for t in trunks}
    waiting: dict[str, list] = defaultdict(list)
    needed: dict[str, int] = {}
    plain = []
    for run in todo:
        trunk = by_dir.get(run.config["branching"]["trunk_dir"]) if run.role == BRANCH else None
        if trunk is None:
            plain.append(run)
            continue
        step = run.config["branching"]["branch_step"]
        waiting[f"{trunk.key}@{step}"].append(run)
        needed[trunk.key] = max(needed.get(trunk.key, 0), step)
    for trunk in trunks:
        if trunk.key not in needed or trunk.done():
            continue
        previous = None
        for segment in segments(trunk):
            if segment.until_step > needed[trunk.key]:
                break
            if not segment.done():
                ordered.append(segment)
                if previous is not None:
                    after[segment.key] = previous
                previous = segment.key
            for run in waiting.pop(segment.key, []):
                ordered.append(run)
                if not segment.done():
                    after[run.key] = segment.key
    for rest in waiting.values():
        ordered.extend(rest)  # their trunk finished: its checkpoints exist
    return ordered + plain, after


def trunk_config(branch, name: str, steps: int, branch_steps: list[int]):
    """The trunk of a group, from one of its branches' ``RunConfig``: no cooldown, no evaluation, the
    group's last branch point as its length."""
    n = branch.budget.non_embedding_params
    tokens = steps * branch.trainer.global_batch_size * branch.trainer.seq_len
    flops = training_flops(n, tokens)
    return dataclasses.replace(
        branch, name=name,
        schedule=dataclasses.replace(branch.schedule, cooldown_fraction=0.0),
        eval=dataclasses.replace(branch.eval, suite="none"),
        budget=BudgetConfig(flops_budget=flops, flops=flops, tokens=tokens, steps=steps, non_embedding_params=n),
        branching=BranchingConfig(role=TRUNK, branch_steps=list(branch_steps)),
    )


def groups(runs) -> dict[tuple, list]:
    """Branches by (objective, model, seed), each group sorted by length."""
    grouped: dict[tuple, list] = defaultdict(list)
    for run in runs:
        grouped[(run.objective, run.model, run.seed)].append(run)
    return {k: sorted(v, key=lambda r: r.budget.steps) for k, v in grouped.items()}


def branching_hours(plan) -> tuple[float, float]:
    """(device-hours with branching: every trunk once plus every cooldown, device-hours of the same
    runs trained independently)."""
    independent = sum(r.device_hours for r in plan.runs)
    branched = sum(t.device_hours for t in plan.trunks) + sum(r.device_hours_branched for r in plan.runs)
    return branched, independent


__all__ = ["BRANCH", "TRUNK", "Segment", "branching_hours", "check_branchable",
           "check_eval_in_cooldown", "group_warmup", "groups", "jobs", "segments", "trunk_config"]

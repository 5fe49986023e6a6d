"""Plain-text and JSON renderings of a plan and of run states (tables through ``studies.text_table``)."""

from __future__ import annotations

import json
from typing import Optional

from models.objective_names import ARM, MDM
from studies.text_table import render_table, si
from sweeps.preparation import step_of
from sweeps.run_states import RunStatus


def _hours(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def _gib(run) -> str:
    value = run.memory.gib
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def hours_unit(plan) -> str:
    return "GPU-h" if plan.profile.gpus_per_node else "CPU-h"


def _epochs(run, steps) -> str:
    """How many times the run reads its prepared data ('?' until a dataset of unknown size is prepared)."""
    step = step_of(steps, run)
    epochs = step.epochs(run) if step is not None else None
    if epochs is None:
        return "?"
    return f"{epochs:,.0f}" if epochs >= 100 else f"{epochs:.3g}"


def plan_table(plan, states: Optional[dict[str, RunStatus]] = None, steps=()) -> str:
    """The plan, a row per run; ``steps`` (``sweeps.preparation``) add the epochs each run makes over its
    prepared data."""
    unit = hours_unit(plan)
    header = ["key", "objective", "model", "N", "D", "C", "steps", "D/N", "epochs", unit, "mem GiB"]
    if states is not None:
        header.append("state")
    rows = []
    for run in plan.runs:
        b = run.budget
        row = [run.key, run.objective, run.model, si(b.non_embedding_params), si(b.tokens), f"{b.flops:.3g}",
               f"{b.steps:,}", (f"{b.tokens_per_param:,.0f}" if b.tokens_per_param >= 100 else f"{b.tokens_per_param:.3g}"),
               _epochs(run, steps), _hours(run.device_hours), _gib(run)]
        if states is not None:
            row.append(states[run.key].state)
        rows.append(row)
    if plan.trunks:
        header.insert(7, "branch at")
        for run, row in zip(plan.runs, rows):
            row.insert(7, f"{run.config['branching']['branch_step']:,}")
        for trunk in plan.trunks:
            b = trunk.budget
            row = [trunk.key, trunk.objective, f"{trunk.model} trunk", si(b.non_embedding_params), si(b.tokens),
                   f"{b.flops:.3g}", f"{b.steps:,}", "-", "-", _epochs(trunk, steps), _hours(trunk.device_hours),
                   _gib(trunk)]
            if states is not None:
                row.append(trunk_state(trunk))
            rows.append(row)
    table = render_table(header, rows, right={3, 4, 5, 6, 7, 8, 9, 10} | ({11} if plan.trunks else set()))
    total_c = sum(r.budget.flops for r in plan.runs)
    total_d = sum(r.budget.tokens for r in plan.runs)
    total_h = sum(r.device_hours for r in plan.runs)
    p = plan.profile
    lines = [
        f"grid {plan.grid}: {plan.grid_config.description}".rstrip(": "),
        table,
        f"total: {len(plan.runs)} runs, C = {total_c:.3g} FLOPs, D = {si(total_d)} tokens, ~{_hours(total_h)} {unit}",
        f"C = 6 N D with N the non-embedding parameters; {unit} = D x (6N + 12 n_layers L d_model) / "
        f"({p.peak_tflops:g} TFLOP/s x {p.mfu:.0%} MFU), {p.device}, profile {plan.profile_name}",
        memory_line(plan),
        f"runs folder: {plan.runs_root}",
    ]
    if plan.trunks:
        lines.insert(3, branching_line(plan))
    lines[-1:-1] = pairing_lines(plan)  # before the runs folder
    return "\n".join(lines)


def memory_line(plan) -> str:
    """What the ``mem GiB`` column counts (``sweeps.memory``) and the budget it is checked against."""
    from sweeps.memory import GB, GIB

    budget = plan.profile.gpu_memory_gb
    checked = (f"checked against {budget * GB / GIB:.1f} GiB (gpu_memory_gb: {budget:g})" if budget is not None
               else f"not checked (profile {plan.profile_name} sets no gpu_memory_gb)")
    return ("mem GiB = per device at a training step's peak (sweeps/memory.py: parameters, gradients, AdamW states, "
            f"activations, logits, buffers, headroom); {checked}")


def pairing_lines(plan) -> list[str]:
    """One line per ``pairing: compute`` entry with both objectives planned: why its two rows at a
    budget have different N, D and steps."""
    from sweeps.grid import COMPUTE

    lines = []
    for entry in plan.grid_config.models:
        arm, mdm = entry.preset_for(ARM), entry.preset_for(MDM)  # a compute pair has no label
        planned = {(r.objective, r.model) for r in plan.runs}
        if entry.pairing == COMPUTE and {(ARM, arm), (MDM, mdm)} <= planned:
            lines.append(f"{arm} ({ARM}) and {mdm} ({MDM}) are matched on C alone (pairing: {COMPUTE}): each has its own "
                         f"N and D = C / 6N, so its own steps")
    return lines


def branching_line(plan) -> str:
    """``branching: X GPU-h, independent runs: Y GPU-h, ratio Z`` (sweeps.branching.branching_hours)."""
    from sweeps.branching import branching_hours

    branched, independent = branching_hours(plan)
    unit = hours_unit(plan)
    return (f"branching: {_hours(branched)} {unit}, independent runs: {_hours(independent)} {unit}, ratio "
            f"{branched / independent:.3f} ({len(plan.trunks)} trunk(s) trained once, then each run's cooldown of "
            f"{plan.grid_config.schedule.cooldown_fraction:.0%})")


def trunk_state(trunk) -> str:
    """finished, or how many of its segments (one per branch point) are trained."""
    from sweeps.branching import segments

    parts = segments(trunk)
    done = sum(1 for s in parts if s.done())
    return "finished" if trunk.done() else f"{done}/{len(parts)} segments"


def _data_fields(run, steps) -> dict:
    """A run's prepared dataset (folder name) and the epochs it makes over it (None: not known yet)."""
    step = step_of(steps, run)
    if step is None:
        return {}
    epochs = step.epochs(run)
    return {"dataset": step.folder.name, "epochs": None if epochs is None else round(epochs, 4)}


def plan_json(plan, states: Optional[dict[str, RunStatus]] = None, steps=()) -> str:
    rows = []
    for run in plan.runs:
        row = {**run.summary(), **_data_fields(run, steps)}
        if states is not None:
            row["state"] = states[run.key].state
        rows.append(row)
    for trunk in plan.trunks:
        rows.append({**trunk.summary(), **_data_fields(trunk, steps),
                     **({"state": trunk_state(trunk)} if states is not None else {})})
    return json.dumps(rows, indent=2)


def status_table(plan, states: dict[str, RunStatus], segments=()) -> str:
    """Runs, then a branched grid's trunk segments (``key@step``: the trunk trained to that branch point)."""
    header = ["key", "name", "state", "job", "progress", "detail"]
    rows = []
    for run in [*plan.runs, *segments]:
        s = states[run.key]
        detail = s.detail
        if s.state == "failed" and s.log:
            detail = f"{detail}; log: {s.log}".lstrip("; ")
        if s.attempts > 1:
            detail = f"{detail} (attempt {s.attempts})".strip()
        rows.append([run.key, run.name, s.state, s.job_id or "-", s.progress or "-", detail])
    return render_table(header, rows, right=set())


def state_counts(states: dict[str, RunStatus]) -> str:
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    order = ("finished", "running", "queued", "failed", "planned", "unknown")
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))


def status_json(plan, states: dict[str, RunStatus], segments=()) -> str:
    rows = []
    for run in [*plan.runs, *segments]:
        s = states[run.key]
        rows.append({"run_key": run.key, "name": run.name, "objective": run.objective, "model": run.model,
                     **({"role": run.role, "until_step": run.until_step} if run.role == "segment" else {}),
                     "flops_budget": run.budget.flops_budget, "state": s.state, "job_id": s.job_id,
                     "executor": s.executor, "progress": s.progress, "detail": s.detail, "log": s.log,
                     "attempts": s.attempts, "out_dir": str(run.out_dir)})
    return json.dumps(rows, indent=2)


__all__ = ["memory_line", "pairing_lines", "plan_json", "plan_table", "state_counts", "status_json", "status_table"]

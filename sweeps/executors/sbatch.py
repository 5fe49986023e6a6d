"""Plain sbatch scripts for users who submit with ``sbatch`` rather than submitit.

``python sweeps/launch.py --grid NAME --emit-sbatch DIR`` writes

- ``DIR/configs/NNN-<run key>.yaml``: each run's resolved config (what ``studies.run`` executes);
- ``DIR/configs.txt``: those paths, one a line, line i+1 for array task i;
- ``DIR/array.sbatch``: a job array, one task per run, from ``slurm/templates/single_node.sbatch``
  (or ``multi_node.sbatch`` when the profile asks for several nodes), resources from the cluster
  profile; logs go to ``DIR/logs/<array job>_<task>.out``.

When a run reads a hub corpus that is not prepared yet (``sweeps.preparation``), it also writes

- ``DIR/data/<dataset>.yaml`` and ``DIR/prepare-<dataset>.sbatch``: the CPU job that prepares it
  (``slurm/templates/prepare.sbatch``, resources from the profile's ``prepare`` section);
- ``DIR/submit.sh``: submits the preparation jobs, then the array with ``--dependency=afterok`` on them.

``sbatch DIR/array.sbatch`` (or ``bash DIR/submit.sh`` where it exists) then runs the grid. Each task
runs ``srun ... python -m studies.run CONFIG`` with one task per device, requeues itself on SIGUSR1
(``--signal``, preemption) and resumes from its checkpoint (``studies.cluster.preemption``). A run
that finished already returns at once.

``python -m sweeps.executors.sbatch CONFIG --profile NAME -o job.sbatch`` renders the script of one run.
Imports no torch, lightning or mlflow.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from studies.config import config_yaml
from sweeps.profiles import ClusterProfile, check_resources, load_profile
from sweeps.run_command import REPO_ROOT

TEMPLATES = REPO_ROOT / "slurm" / "templates"
ARRAY_SCRIPT = "array.sbatch"
SUBMIT_SCRIPT = "submit.sh"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def template_for(profile: ClusterProfile) -> Path:
    """The multi-node template when the profile asks for more than one node, else the single-node one."""
    return TEMPLATES / ("multi_node.sbatch" if profile.nodes > 1 else "single_node.sbatch")


def render(template: str, values: dict) -> str:
    """Fill every ``{{name}}``; a placeholder without a value is an error, not an empty string."""
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise ValueError(f"sbatch template needs values for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def _job_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "run"


def sbatch_options(profile: ClusterProfile, array: Optional[str] = None) -> list[str]:
    """``#SBATCH`` lines that depend on the profile (partition, account, GPUs, extras) and the array."""
    options: dict[str, object] = {}
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(profile, key)
        if value:
            options[key] = value
    if profile.gpus_per_node:
        options["gpus-per-node"] = profile.gpus_per_node
    if array:
        options["array"] = array
    for key, value in profile.additional_parameters.items():
        options[str(key).replace("_", "-")] = value
    return [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={v}" for k, v in options.items()]


def script_text(profile: ClusterProfile, trainer: dict, *, job_name: str, select_config: str, log_pattern: str,
                array: Optional[str] = None, workdir: Optional[Path] = None, python: str = sys.executable,
                profile_name: str = "profile") -> str:
    """An sbatch script for runs with ``trainer``'s devices and nodes on ``profile``'s resources."""
    check_resources(profile, int(trainer["devices"]), int(trainer["num_nodes"]), profile_name)
    values = {
        "job_name": _job_name(job_name),
        "nodes": profile.nodes,
        "tasks_per_node": int(trainer["devices"]),
        "cpus_per_task": profile.cpus_per_task,
        "mem_mb": int(profile.mem_gb * 1024),
        "time_min": profile.time_min,
        "signal_delay_s": profile.signal_delay_s,
        "log_pattern": log_pattern,
        "sbatch_options": "\n".join(sbatch_options(profile, array)),
        "select_config": select_config,
        "workdir": shlex.quote(str(workdir or Path.cwd())),
        "repo": shlex.quote(str(REPO_ROOT)),
        "setup": "\n".join(profile.setup),
        "python": shlex.quote(python),
    }
    return render(template_for(profile).read_text(), values)


def emit_sbatch(runs: Sequence, profile: ClusterProfile, grid: str, out_dir: Path | str,
                profile_name: str = "profile") -> Path:
    """Write the per-run configs and ``array.sbatch`` for ``runs`` (``sweeps.plan.PlannedRun``)."""
    if not runs:
        raise ValueError("no runs to write an sbatch array for")
    trainers = {(r.config["trainer"]["devices"], r.config["trainer"]["num_nodes"]) for r in runs}
    if len(trainers) > 1:
        raise ValueError(f"one job array needs one shape of job; the runs ask for (devices, num_nodes) {sorted(trainers)}")
    out = Path(out_dir).expanduser().resolve()
    configs_dir = out / "configs"
    configs_dir.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    paths = []
    for index, run in enumerate(runs):
        path = configs_dir / f"{index:03d}-{run.key}.yaml"
        path.write_text(config_yaml(run.run_config))
        paths.append(path)
    listing = out / "configs.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    select = (f'CONFIG=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(listing))})\n'
              f'[ -n "$CONFIG" ] || {{ echo "no config for array task $SLURM_ARRAY_TASK_ID in {listing}" >&2; exit 2; }}')
    array = f"0-{len(runs) - 1}%{max(1, profile.array_parallelism)}"
    text = script_text(profile, runs[0].config["trainer"], job_name=grid, select_config=select,
                       log_pattern=str(out / "logs" / "%A_%a.out"), array=array, profile_name=profile_name)
    script = out / ARRAY_SCRIPT
    script.write_text(text)
    script.chmod(0o755)
    return script


def emit_preparation(steps: Sequence, profile: ClusterProfile, grid: str, out_dir: Path | str,
                     python: str = sys.executable) -> Optional[Path]:
    """Write a ``prepare-<dataset>.sbatch`` per step (``sweeps.preparation``) and ``submit.sh``, which
    submits them and then ``array.sbatch`` after them; None (and nothing written) without steps."""
    from sweeps.preparation import write_data_config

    if not steps:
        return None
    out = Path(out_dir).expanduser().resolve()
    prep = profile.prepare
    options = sbatch_options(dataclasses.replace(profile, partition=prep.partition or profile.partition,
                                                 gpus_per_node=0, constraint=None, additional_parameters={}))
    scripts = []
    for step in steps:
        config = write_data_config(step, out / "data")
        values = {
            "job_name": _job_name(f"{grid}-prepare"),
            "cpus": prep.cpus,
            "mem_mb": int(prep.mem_gb * 1024),
            "time_min": prep.time_min,
            "log": str(out / "logs" / f"prepare-{step.folder.name}-%j.out"),
            "sbatch_options": "\n".join(options),
            "workdir": shlex.quote(str(Path.cwd())),
            "repo": shlex.quote(str(REPO_ROOT)),
            "setup": "\n".join(profile.setup),
            "python": shlex.quote(python),
            "config": shlex.quote(str(config)),
        }
        script = out / f"prepare-{step.folder.name}.sbatch"
        script.write_text(render((TEMPLATES / "prepare.sbatch").read_text(), values))
        script.chmod(0o755)
        scripts.append(script)
    lines = ["#!/usr/bin/env bash",
             f"# The data preparation of grid {grid}, then its job array, which waits for it (afterok).",
             "set -euo pipefail", 'cd "$(dirname "$0")"', "after=''"]
    for script in scripts:
        lines.append(f'after="$after:$(sbatch --parsable {shlex.quote(script.name)} | cut -d";" -f1)"')
    lines += ['echo "preparation job(s): ${after#:}"',
              f'sbatch --dependency="afterok$after" --kill-on-invalid-dep=yes {ARRAY_SCRIPT}']
    submit = out / SUBMIT_SCRIPT
    submit.write_text("\n".join(lines) + "\n")
    submit.chmod(0o755)
    return submit


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.executors.sbatch",
                                     description="Render the sbatch script of one resolved run config.")
    parser.add_argument("config", help="a resolved run config (runs/GRID/KEY/config.yaml)")
    parser.add_argument("--profile", required=True, help="cluster profile in slurm/clusters/ or a YAML path")
    parser.add_argument("-o", "--output", default=None, help="where to write the script (default: stdout)")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    try:
        profile = load_profile(args.profile)
        config = Path(args.config).resolve()
        if not config.is_file():
            raise ValueError(f"run config {config} does not exist")
        run = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
        trainer = {"devices": 1, "num_nodes": 1, **run.get("trainer", {})}
        log = config.parent / "slurm-%j.out"  # exists at submission; SLURM opens it before the run starts
        text = script_text(profile, trainer, job_name=str(run.get("name", "run")),
                           select_config=f"CONFIG=${{1:-{shlex.quote(str(config))}}}", log_pattern=str(log),
                           profile_name=args.profile)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ARRAY_SCRIPT", "SUBMIT_SCRIPT", "emit_preparation", "emit_sbatch", "render", "sbatch_options", "script_text", "template_for"]

"""Executors: which one a launch uses, and the SLURM one (the local one is ``sweeps.executors.local``).

Both write each run's resolved config to ``<out_dir>/config.yaml`` first and record every submission
in the sweep log (``sweeps.sweep_log``) so that a re-launch knows what exists.

- Local (``sweeps.executors.local``): ``python -m studies.run <out_dir>/config.yaml`` per run on this
  machine, one or several at a time.
- SLURM: one submitit job array (``executor.batch()``) of ``studies.cluster.jobs.RunJob``, a
  ``Checkpointable`` that runs ``studies.run.main`` in the job and requeues itself on preemption or
  time-out; the run resumes from its own ``last.ckpt``. Resources come from the cluster profile. A
  branched grid (``sweeps.branching``) is submitted job by job instead: each trunk segment
  ``afterok`` the one before it, each branch ``afterok`` its segment; a requeued job keeps its id, so
  the chain holds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from sweeps.profiles import ClusterProfile, check_resources
from sweeps.run_command import REPO_ROOT
from sweeps.sweep_log import SweepLog


def resolve_cluster(choice: str, slurm_profile: bool = True) -> str:
    """``auto`` is SLURM when ``sbatch`` is on PATH and the cluster profile is a SLURM one, else
    local: the ``local`` profile (``executor: local``) describes this machine, so the smoke grid runs
    here even where a SLURM client is installed. ``slurm`` without sbatch is an error."""
    if choice not in ("auto", "slurm", "local"):
        raise ValueError(f"--cluster must be slurm, local or auto, got {choice!r}")
    has_sbatch = shutil.which("sbatch") is not None
    if choice == "slurm" and not has_sbatch:
        raise ValueError(
            "--cluster slurm needs SLURM's sbatch on PATH, and there is none on this machine: run on a "
            "login node, start the dev cluster (slurm/dev-cluster), or use --cluster local"
        )
    if choice == "auto":
        return "slurm" if has_sbatch and slurm_profile else "local"
    return choice


def _job_environment(profile: ClusterProfile, partition: str | None) -> dict:
    """What every job of a launch shares: it runs from the submission directory with the repository
    importable and the profile's setup lines, on ``partition`` under the profile's account and qos."""
    params = dict(slurm_setup=[f"cd {os.getcwd()}", f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}",
                               *profile.setup])
    optional = {"slurm_partition": partition, "slurm_account": profile.account, "slurm_qos": profile.qos}
    params.update({k: v for k, v in optional.items() if v})
    return params


def slurm_parameters(profile: ClusterProfile, trainer: dict, job_name: str) -> dict:
    """submitit ``update_parameters`` keywords for one run: resources from the profile, one task per
    device; the job runs from the submission directory with the repository importable."""
    check_resources(profile, trainer["devices"], trainer["num_nodes"])
    params = dict(
        name=job_name,
        timeout_min=profile.time_min,
        nodes=profile.nodes,
        tasks_per_node=trainer["devices"],
        cpus_per_task=profile.cpus_per_task,
        mem_gb=profile.mem_gb,
        slurm_signal_delay_s=profile.signal_delay_s,
        slurm_array_parallelism=profile.array_parallelism,
        **_job_environment(profile, profile.partition),
    )
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.constraint:
        params["slurm_constraint"] = profile.constraint
    if profile.additional_parameters:
        params["slurm_additional_parameters"] = dict(profile.additional_parameters)
    return params


def _refused(what: str, exc: Exception) -> RuntimeError:
    message = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    return RuntimeError(f"sbatch refused {what}: {str(message).strip()}")


def submit_preparation(step, profile: ClusterProfile, log: SweepLog, grid: str, say=print) -> str:
    """Submit the CPU job that prepares ``step``'s dataset (``sweeps.preparation``) with the profile's
    ``prepare`` resources; record it in the sweep log and return its job id."""
    import submitit

    from studies.cluster.jobs import PrepareJob
    from sweeps.preparation import PREPARE_EVENT, note_job, write_data_config

    prep = profile.prepare
    config = write_data_config(step, Path(log.sweep_dir) / "prepare")
    executor = submitit.AutoExecutor(folder=Path(log.sweep_dir) / "submitit" / "%j", cluster="slurm",
                                     slurm_max_num_timeout=prep.max_num_timeout)
    executor.update_parameters(name=f"{grid}-prepare", timeout_min=prep.time_min, nodes=1, tasks_per_node=1,
                               cpus_per_task=prep.cpus, mem_gb=prep.mem_gb,
                               **_job_environment(profile, prep.partition or profile.partition))
    try:
        job = executor.submit(PrepareJob(str(config), prep.cpus))
    except Exception as exc:  # noqa: BLE001 - sbatch's own message
        raise _refused(f"the preparation job of {step.folder.name}", exc) from exc
    note_job(step, job.job_id)  # for every grid that reads this dataset
    log.append({"event": PREPARE_EVENT, "dataset": step.folder.name, "job_id": job.job_id, "executor": "slurm",
                "config": str(config), "log": str(job.paths.stderr)})
    say(f"submitted the preparation of {step.folder.name} ({step.source}) as SLURM job {job.job_id} "
        f"({prep.cpus} CPUs); log: {job.paths.stderr}", flush=True)
    return job.job_id


def submit_slurm(runs: Sequence, log: SweepLog, profile: ClusterProfile, grid: str, say=print,
                 after: dict | None = None, wait_for: Sequence[str] = ()) -> list:
    """Submit ``runs`` as one submitit job array; returns the submitit jobs. With ``after`` (a run key
    to the key it waits for: a branched grid's segments and branches) each run is a job of its own,
    submitted in order with ``--dependency=afterok:<job of its prerequisite>``. ``wait_for``: jobs that
    every run waits for (the preparation of its data), ``afterok`` as well."""
    import submitit

    from studies.cluster.jobs import RunJob

    folder = Path(log.sweep_dir) / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=profile.max_num_timeout)
    parameters = slurm_parameters(profile, runs[0].config["trainer"], f"{grid}")
    if wait_for:
        extra = dict(parameters.get("slurm_additional_parameters", {}))
        extra["dependency"] = "afterok:" + ":".join(wait_for)
        # a failed preparation cancels the jobs that wait for it instead of leaving them pending forever
        # (DependencyNeverSatisfied); sweeps/status.py then shows them failed, for --retry-failed
        extra["kill_on_invalid_dep"] = "yes"
        parameters["slurm_additional_parameters"] = extra
    executor.update_parameters(**parameters)
    configs = [run.write_config() for run in runs]
    calls = [RunJob(str(config), list(run.extra_args)) for run, config in zip(runs, configs)]
    try:
        if after:
            jobs, ids = [], {}
            for run, call in zip(runs, calls):
                extra = dict(parameters.get("slurm_additional_parameters", {}))
                if run.key in after and after[run.key] in ids:  # its segment (which waits for the data)
                    extra["dependency"] = f"afterok:{ids[after[run.key]]}"
                executor.update_parameters(slurm_additional_parameters=extra)
                jobs.append(executor.submit(call))
                ids[run.key] = jobs[-1].job_id
        else:
            with executor.batch():
                jobs = [executor.submit(call) for call in calls]
    except Exception as exc:  # noqa: BLE001 - surface sbatch's own message, submit nothing else
        raise _refused(f"the job array for grid {grid!r}", exc) from exc
    ids = {run.key: job.job_id for run, job in zip(runs, jobs)}
    for run, job in zip(runs, jobs):
        paths = job.paths
        # the resolved config also sits next to the job's submitit files, for whoever reads the logs
        paths.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.config_path, paths.folder / f"{job.job_id}_config.yaml")
        log.submitted(run.key, run.name, job.job_id, "slurm", log=str(paths.stderr), stdout=str(paths.stdout),
                      result_pickle=str(paths.result_pickle), config=str(run.config_path))
        waits = (f", after job {ids[after[run.key]]}" if after and after.get(run.key) in ids
                 else f", after preparation job(s) {', '.join(wait_for)}" if wait_for else "")
        say(f"submitted {run.name} ({run.key}) as SLURM job {job.job_id}{waits}", flush=True)
    return jobs


__all__ = ["resolve_cluster", "slurm_parameters", "submit_preparation", "submit_slurm"]

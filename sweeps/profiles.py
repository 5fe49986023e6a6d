"""Cluster profiles (``slurm/clusters/<name>.yaml``): what a SLURM job asks for, and what a device
delivers, so that the planner can estimate device-hours before anything is submitted.

The estimate is stated, not hidden: device-hours = D x (6 N + 12 n_layers L d_model) /
(peak FLOP/s x MFU), the PaLM MFU accounting of ``models.flops.model_flops_per_token``. For scale,
LLaDA 8B's pretraining (about 1.1e23 FLOPs by 6ND in 0.13M H800 hours) ran at roughly 24% of the
H800's 989 TFLOP/s dense bf16 peak.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from studies.validation import first_line

CLUSTERS_DIR = Path(__file__).resolve().parent.parent / "slurm" / "clusters"


@dataclass
class PrepareResources:
    """The CPU job that prepares a hub corpus before the runs that read it (``sweeps.preparation``): its
    workers are its CPUs (``python -m studies.data prepare --workers cpus``). A killed or timed-out
    preparation is requeued and continues from the parts it has written."""

    partition: Optional[str] = None  # None: the profile's partition
    cpus: int = 16
    mem_gb: float = 64
    time_min: int = 1440
    max_num_timeout: int = 10  # requeues after a time-out


@dataclass
class ClusterProfile:
    """Fields without a default are required in every profile (``partition: null`` means the
    cluster's default partition). ``nodes`` and ``gpus_per_node`` must agree with the grid's
    ``trainer.num_nodes`` and ``trainer.devices``; one SLURM task runs per device."""

    partition: Optional[str] = MISSING
    time_min: int = MISSING  # SLURM --time, minutes; longer runs are requeued from their checkpoint
    nodes: int = MISSING
    gpus_per_node: int = MISSING  # 0 on a CPU-only cluster
    cpus_per_task: int = MISSING
    mem_gb: float = MISSING  # per node
    device: str = MISSING  # what peak_tflops refers to, e.g. "H100 SXM (bf16 dense)"
    peak_tflops: float = MISSING  # per device
    mfu: float = MISSING  # assumed model FLOPs utilisation for the estimate
    gpu_memory_gb: Optional[float] = None  # memory of one device (GB), for the memory plan; None: not checked
    description: str = ""
    # What `--cluster auto` picks where sbatch is on PATH: "slurm", or "local" for a profile that
    # describes this machine (so the smoke grid runs here even where a SLURM client is installed).
    executor: str = "slurm"
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: checkpoint and requeue
    max_num_timeout: int = 3  # requeues after a time-out (preemptions are not counted)
    array_parallelism: int = 256  # runs of one job array allowed to run at once
    # The local executor (sweeps/executors/local.py): runs at once on this machine, 0 = one per core;
    # the cores are shared out among them. One run streams its output (progress bar included) to the
    # terminal.
    local_parallel_runs: int = 1
    setup: List[str] = field(default_factory=list)  # shell lines run before a job (module load, ...)
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # extra #SBATCH options
    prepare: PrepareResources = field(default_factory=PrepareResources)


def known_profiles(clusters_dir: Path = CLUSTERS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(clusters_dir).glob("*.yaml"))


def load_profile(name: str, clusters_dir: Path = CLUSTERS_DIR) -> ClusterProfile:
    """Load ``<clusters_dir>/<name>.yaml`` (or a path to a YAML file) and check every field."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = Path(clusters_dir) / f"{name}.yaml"
    if not path.is_file():
        known = known_profiles(clusters_dir)
        close = difflib.get_close_matches(name, known, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown cluster profile {name!r}.{hint} Known profiles (in {clusters_dir}): "
            f"{', '.join(known) or '(none)'}; pick one with cluster_profile=NAME"
        )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ClusterProfile), OmegaConf.load(path))
    except OmegaConfBaseException as exc:
        raise ValueError(f"cluster profile {path}: {first_line(exc)}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ValueError(
            f"cluster profile {path} is missing required field(s): {', '.join(missing)} "
            f"(see sweeps/profiles.py ClusterProfile for what each means)"
        )
    profile: ClusterProfile = OmegaConf.to_object(merged)
    check_profile(profile, path)
    return profile


def check_profile(profile: ClusterProfile, path: Path | str = "profile") -> None:
    for name in ("time_min", "nodes", "cpus_per_task"):
        if getattr(profile, name) < 1:
            raise ValueError(f"cluster profile {path}: {name} must be >= 1, got {getattr(profile, name)}")
    if profile.gpus_per_node < 0 or profile.mem_gb <= 0 or profile.peak_tflops <= 0:
        raise ValueError(f"cluster profile {path}: gpus_per_node >= 0, mem_gb > 0 and peak_tflops > 0 needed")
    if profile.gpu_memory_gb is not None and profile.gpu_memory_gb <= 0:
        raise ValueError(f"cluster profile {path}: gpu_memory_gb must be positive (GB per device) or absent, "
                         f"got {profile.gpu_memory_gb}")
    if not 0 < profile.mfu <= 1:
        raise ValueError(f"cluster profile {path}: mfu must be in (0, 1], got {profile.mfu}")
    if profile.executor not in ("slurm", "local"):
        raise ValueError(f"cluster profile {path}: executor must be slurm or local, got {profile.executor!r}")
    prep = profile.prepare
    if prep.cpus < 1 or prep.mem_gb <= 0 or prep.time_min < 1 or prep.max_num_timeout < 0:
        raise ValueError(f"cluster profile {path}: prepare needs cpus >= 1, mem_gb > 0, time_min >= 1 and "
                         f"max_num_timeout >= 0, got {prep}")
    if profile.local_parallel_runs < 0:
        raise ValueError(f"cluster profile {path}: local_parallel_runs must be 0 (one per core) or more, "
                         f"got {profile.local_parallel_runs}")


def check_resources(profile: ClusterProfile, devices: int, num_nodes: int, name: str = "profile") -> None:
    """A run's Lightning trainer must use exactly the devices SLURM allocates to it."""
    if num_nodes != profile.nodes:
        raise ValueError(
            f"trainer.num_nodes={num_nodes} but cluster profile {name!r} asks for {profile.nodes} node(s): "
            f"set trainer.num_nodes={profile.nodes} or pick another profile"
        )
    if profile.gpus_per_node and devices != profile.gpus_per_node:
        raise ValueError(
            f"trainer.devices={devices} but cluster profile {name!r} has {profile.gpus_per_node} GPUs per "
            f"node: set trainer.devices={profile.gpus_per_node} or pick another profile"
        )


__all__ = ["CLUSTERS_DIR", "ClusterProfile", "PrepareResources", "check_profile", "check_resources", "known_profiles", "load_profile"]

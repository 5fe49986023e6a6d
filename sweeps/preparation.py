"""Data preparation as a stage of a launch: each distinct dataset of a plan prepared once, before the runs
that read it.

Runs that share a data section (byte for byte, so the content hash of ``studies.data.prepare``) share one
prepared folder. A launch prepares each folder that is not ready yet:

- a hub corpus (``studies.data.config.prepared_ahead``) as a step of its own: in the launch process under
  the local executor, as a CPU job on SLURM (the profile's ``prepare`` section) that the training jobs
  wait for with ``--dependency=afterok``, or as ``prepare-*.sbatch`` beside the array under
  ``--emit-sbatch``. A training job never streams a hub corpus itself (``studies.run`` refuses, naming
  the command that prepares it): the jobs of an array start together, and each would tokenize the same
  corpus on GPU nodes for hours;
- the toy world and local files, which take seconds, in the launch process before anything runs.

How much of a hub corpus is prepared follows from the grid (``bounded_data``): its largest run's tokens,
capped by ``data.max_tokens`` or by the source's size (``data.source_tokens`` when known). A run that
reads more than that repeats the data; ``repetition_warnings`` names the runs past
``data.max_epochs_warning`` epochs. Imports no torch (the dry run stays light).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from studies.atomic_write import write_atomic
from studies.data.config import DataConfig, prepared_ahead
from studies.text_table import render_table, si
from studies.validation import first_line

PREPARE_EVENT = "prepare"  # the sweep log's record of a submitted preparation job
READY, RUNNING, PLANNED, UNAVAILABLE = "ready", "running", "planned", "unavailable"
# Where the epochs threshold comes from: returns from repeating data fall off for an ARM after about 4
# epochs (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"), and the data-reuse
# half-life R_D* is about 500 epochs for an MDM against about 31 for an ARM (Prabhudesai et al. 2025,
# "Diffusion Beats Autoregressive in Data-Constrained Settings").
REPETITION_EVIDENCE = ("an ARM's returns from repeated data fall off after about 4 epochs (Muennighoff et al. "
                       "2023), while an MDM's data-reuse half-life is about 500 epochs against about 31 for an ARM "
                       "(Prabhudesai et al. 2025)")


def needs_bound(data: DataConfig) -> bool:
    """Whether the amount ``data`` prepares follows from the grid: a hub corpus with no bound of its own."""
    return prepared_ahead(data) and data.max_tokens is None and data.max_documents is None


def bounded_data(data: DataConfig, tokens_needed: int) -> DataConfig:
    """``data`` with the amount a hub corpus is prepared to: the grid's largest run's tokens, unless
    ``max_tokens`` already bounds it or the source is known (``source_tokens``) to hold no more.

    The amount is part of the data section, so of every run's key: the order a run reads its data in
    depends on how much there is (``studies.data.order``). Set ``data.max_tokens`` to share one prepared
    dataset between grids whose largest budgets differ."""
    if not needs_bound(data):
        return data
    if data.source_tokens is not None and tokens_needed >= data.source_tokens:
        return data  # the whole source
    return dataclasses.replace(data, max_tokens=int(tokens_needed))


@dataclass
class PreparationStep:
    """One dataset of a plan: where it is prepared, for which runs, and how far along it is."""

    data: DataConfig
    folder: Path
    runs: list = field(default_factory=list)  # sweeps.plan.PlannedRun
    state: str = PLANNED
    detail: str = ""  # UNAVAILABLE: why; RUNNING: the job or process that prepares it
    job_id: Optional[str] = None  # RUNNING on SLURM: the preparation job the runs wait for
    prepared_tokens: Optional[int] = None  # READY: the training tokens of the prepared folder

    @property
    def ahead(self) -> bool:
        return prepared_ahead(self.data)

    @property
    def tokens_needed(self) -> int:
        return max(int(r.budget.tokens) for r in self.runs)

    @property
    def train_tokens(self) -> Optional[int]:
        """What the runs read: the prepared count, else the planned bound (None: known once prepared)."""
        if self.prepared_tokens is not None:
            return self.prepared_tokens
        bounds = [b for b in (self.data.max_tokens, self.data.source_tokens) if b is not None]
        return min(bounds) if bounds else None

    def epochs(self, run) -> Optional[float]:
        tokens = self.train_tokens
        return None if not tokens else run.budget.tokens / tokens

    @property
    def source(self) -> str:
        d = self.data
        if d.source == "hub":
            return f"{d.name}" + (f" ({d.subset})" if d.subset else "")
        if d.source == "files":
            return f"{len(d.files)} file pattern(s)"
        return "toy world"


def _data_config(run) -> DataConfig:
    return run.run_config.data


def preparation_steps(runs: Sequence, records: Sequence[dict] = ()) -> list[PreparationStep]:
    """The datasets ``runs`` read, one step each, in the order of their first run, with their state:
    ready (prepared), running (a preparation job in SLURM's queue, or a process holding the dataset's
    lock), planned, or unavailable (its input is missing: the detail says how to get it). ``records``:
    the sweep log's (``SweepLog.records``), where the preparation jobs it submitted are noted."""
    from studies.data.layout import config_hash, dataset_dir

    steps: dict[str, PreparationStep] = {}
    digests: dict[str, str] = {}  # data section -> content hash: local files are read once, not once per run
    for run in runs:
        data = _data_config(run)
        section = repr(data)
        if section not in digests:
            try:
                digests[section] = config_hash(data)
            except (OSError, ValueError) as error:
                digests[section] = f"unavailable:{section}"
                steps[digests[section]] = PreparationStep(data, Path(data.cache_dir), state=UNAVAILABLE,
                                                          detail=first_line(error))
        digest = digests[section]
        if digest not in steps:
            steps[digest] = PreparationStep(data, dataset_dir(data, digest))
        steps[digest].runs.append(run)
    jobs = submitted_jobs(records)
    for step in steps.values():
        if step.state != UNAVAILABLE:
            refresh(step, jobs)
    return list(steps.values())


def refresh(step: PreparationStep, jobs: Optional[dict] = None) -> None:
    """Read the step's state again: ready, running (a process holding the dataset's lock here, or the
    preparation job ``jobs`` records for it still in SLURM's queue), else planned."""
    from studies.data.layout import load_metadata
    from studies.data.prepare import is_prepared, preparation_running

    step.state, step.detail, step.job_id = PLANNED, "", None
    if is_prepared(step.data):
        step.state = READY
        step.prepared_tokens = int(load_metadata(step.folder)["tokens"])
        return
    job = recorded_job(step) or (jobs or {}).get(step.folder.name)
    if job is not None:  # first: the job's own process may hold the lock, on this machine or a node
        from sweeps.run_states import squeue_states

        queued = (squeue_states([job]) or {}).get(job)
        if queued is not None:
            step.state, step.job_id, step.detail = RUNNING, job, f"SLURM job {job} ({queued.lower()})"
            return
    if preparation_running(step.data):
        step.state, step.detail = RUNNING, "a process on this machine is preparing it"


def job_record(step: PreparationStep) -> Path:
    """Where a launch notes the SLURM job preparing ``step``, beside the dataset, so that every grid
    reading it (each with its own sweep log) waits for that job instead of submitting another. The
    record goes with the preparation's working folder when the dataset is finished."""
    from studies.data.layout import work_dir

    return work_dir(step.folder) / "slurm-job"


def recorded_job(step: PreparationStep) -> Optional[str]:
    try:
        return job_record(step).read_text().strip() or None
    except OSError:
        return None


def note_job(step: PreparationStep, job_id: str) -> None:
    record = job_record(step)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(record, f"{job_id}\n")


def submitted_jobs(records: Sequence[dict]) -> dict[str, str]:
    """The last preparation job the sweep log's ``records`` note for each dataset folder name."""
    return {r["dataset"]: str(r["job_id"]) for r in records if r.get("event") == PREPARE_EVENT}


def step_of(steps: Sequence[PreparationStep], run) -> Optional[PreparationStep]:
    for step in steps:
        if any(r is run for r in step.runs):
            return step
    return None


def preparation_lines(steps: Sequence[PreparationStep], executor: str = "") -> list[str]:
    """The plan's preparation stage: one line per dataset (folder, source, tokens, state, runs)."""
    if not steps:
        return []
    rows = []
    for step in steps:
        tokens = step.train_tokens
        amount = "all" if tokens is None else si(tokens) if step.prepared_tokens is not None else f"~{si(tokens)}"
        state = step.state + (f": {step.detail}" if step.detail else "")
        if step.state == PLANNED:
            state += (" (a CPU job of its own; the runs wait for it)" if step.ahead and executor == "slurm"
                      else " (by the launch, before the runs)")
        name = "?" if step.state == UNAVAILABLE else step.folder.name
        rows.append([name, step.source, amount, str(len(step.runs)), state])
    table = render_table(["dataset", "source", "train tokens", "runs", "state"], rows, right={2, 3})
    return ["data preparation (python -m studies.data prepare; each dataset once, before its runs):",
            *("  " + line for line in table.splitlines())]


def repetition_warnings(plan, steps: Sequence[PreparationStep]) -> list[str]:
    """A warning per dataset whose runs repeat it more than ``data.max_epochs_warning`` times."""
    lines = []
    for step in steps:
        limit = step.data.max_epochs_warning
        over = [(r, step.epochs(r)) for r in step.runs if (step.epochs(r) or 0) > limit]
        if not over:
            continue
        worst, most = max(over, key=lambda pair: pair[1])
        lines.append(
            f"warning: {len(over)} run(s) repeat their data more than {limit:g} epochs (up to {most:.1f} for "
            f"{worst.name}): {REPETITION_EVIDENCE}, so past a few epochs the comparison measures data reuse as "
            f"well as compute. Give these runs more data (a larger source, or a larger data.max_tokens where it "
            f"caps them) or, to accept the repetition, raise data.max_epochs_warning")
    return lines


def prepare_here(steps: Sequence[PreparationStep], workers: int, say=print) -> None:
    """Prepare every step not ready yet in this process (``studies.data.prepare``, with its progress)."""
    from studies.data.prepare import prepare_dataset

    for step in steps:
        if step.state == READY:
            continue
        say(f"preparing {step.folder.name} ({step.source}) for {len(step.runs)} run(s), {workers} worker(s)",
            flush=True)
        prepare_dataset(step.data, workers=workers)
        step.state = READY


def write_data_config(step: PreparationStep, folder: Path) -> Path:
    """The step's data section as a YAML file (the ``DataConfig`` schema) for ``studies.data prepare``."""
    from omegaconf import OmegaConf

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{step.folder.name}.yaml"
    write_atomic(path, OmegaConf.to_yaml(OmegaConf.structured(step.data)))
    return path


__all__ = ["PLANNED", "PREPARE_EVENT", "READY", "RUNNING", "UNAVAILABLE", "PreparationStep", "bounded_data",
           "needs_bound", "note_job", "prepare_here", "preparation_lines", "preparation_steps", "recorded_job", "refresh",
           "repetition_warnings", "step_of", "submitted_jobs", "write_data_config"]

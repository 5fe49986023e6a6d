"""MLflow wiring: where runs go, what a run records, resume into the same run, outage buffering.

- Where: ``tracking.uri`` of the run config, else ``MLFLOW_TRACKING_URI``, else an embedded SQLite
  store ``sqlite:///<runs root>/mlflow.db`` that needs no server (browse it with ``mlflow ui``).
- One MLflow experiment per grid; a launch of a grid is a parent run and each job a nested child
  run (tag ``mlflow.parentRunId``), so the UI groups a sweep.
- Resume: the run id lives in ``<out_dir>/tracking.json``; a requeued or restarted job reopens that
  run instead of creating another.
- Outages: every metric goes first to an on-disk write-ahead buffer (``<out_dir>/mlflow-pending.jsonl``)
  and is flushed to MLflow in batches. When the server is unreachable, training goes on and the
  buffer grows (bounded); it is flushed when the server returns. Each metric's step is sent once:
  ``tracking.json`` keeps the last step sent per metric, so a replayed buffer and the steps a resumed
  run repeats after its last checkpoint are not logged twice. A line cut short (a full disk, a kill
  mid-write) is skipped with a message and never blocks the lines after it. Anything still unsent
  when the run ends stays in the buffer, and ``python -m studies.tracking sync RUN_DIR`` replays it.
- Secrets stay out: a tracking URI with credentials is refused (``studies.credentials``; MLflow
  reads them from its environment variables), config keys that look like credentials are never
  logged, and URIs are masked wherever they are printed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from studies.credentials import SECRET_KEY, check_no_credentials, mask_uri

TRACKING_FILE = "tracking.json"
PENDING_FILE = "mlflow-pending.jsonl"
GRID_TAG = "arm_mdm.grid"
MAX_PENDING_BYTES = 256 * 2**20
METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
PARAMS_PER_BATCH = 100


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; the message names the URI and the error."""


# ----------------------------------------------------------------------------- where runs go
def default_tracking_uri(runs_root: str | Path = "runs") -> str:
    return f"sqlite:///{Path(runs_root).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None, runs_root: str | Path = "runs") -> str:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else the embedded store; refuses one that
    carries credentials (ValueError naming MLflow's credential variables)."""
    check_no_credentials(configured, "tracking.uri")
    check_no_credentials(os.environ.get("MLFLOW_TRACKING_URI"), "MLFLOW_TRACKING_URI")
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(runs_root)


def ui_command(uri: str) -> str:
    """How to browse a store: ``mlflow ui`` for a local store, the server's address otherwise."""
    if uri.startswith(("http://", "https://")):
        return f"open {mask_uri(uri)} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """For a local SQLite store, artifacts go next to the database (not into the working
    directory's ./mlruns, MLflow's default); a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts" / experiment).as_uri()
    return None


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise TrackingUnavailable (with the URI and the error) if the store cannot be used."""
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
                if response.status != 200:
                    raise TrackingUnavailable(f"MLflow server {mask_uri(uri)} answered /health with {response.status}")
        except TrackingUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - any failure means unreachable
            raise TrackingUnavailable(
                f"MLflow tracking server {mask_uri(uri)} is unreachable: {error}. Start it, fix "
                "MLFLOW_TRACKING_URI / tracking.uri, or unset it to use the embedded SQLite store"
            ) from error
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingUnavailable(f"cannot create the folder of the tracking store {uri}: {error}") from error


# --------------------------------------------------------------------------- what is recorded
def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts to {"a.b.c": "value"}; credential-like keys are left out."""
    flat: dict[str, str] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            if SECRET_KEY.search(str(key)):
                continue
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    flat[prefix[:-1]] = mask_uri(config) if isinstance(config, str) and "://" in config else str(config)
    return flat


def git_state(path: str | Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the code that runs (empty strings outside a git checkout)."""
    path = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "", "git_dirty": ""}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def environment_tags() -> dict[str, str]:
    """Where the job ran: host, SLURM job, submitit folder."""
    tags = {"host": socket.gethostname()}
    for tag, variable in (("slurm_job_id", "SLURM_JOB_ID"), ("slurm_array_job_id", "SLURM_ARRAY_JOB_ID"),
                          ("slurm_array_task_id", "SLURM_ARRAY_TASK_ID"), ("submitit_folder", "SUBMITIT_FOLDER")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


def run_tags(config: dict, run_key: str) -> dict[str, str]:
    budget = config.get("budget", {})
    return {
        "grid": str(config.get("grid")),
        "objective": str(config.get("objective")),
        "model": str(config.get("model", {}).get("name")),
        "run_key": run_key,
        "seed": str(config.get("seed")),
        "non_embedding_params": str(budget.get("non_embedding_params")),
        "tokens": str(budget.get("tokens")),
        "flops_budget": repr(float(budget.get("flops_budget", 0.0))),
        "flops": repr(float(budget.get("flops", 0.0))),
        **_branching_tags(config.get("branching") or {}),
        **git_state(),
        **environment_tags(),
    }


def _branching_tags(branching: dict) -> dict[str, str]:
    """``role`` (trunk or branch) and a branch's ``branch_step``: the analysis uses branches as the
    grid's runs and leaves trunks out."""
    role = branching.get("role", "run")
    if role == "trunk":
        return {"role": "trunk"}
    if role == "branch":
        return {"role": "branch", "branch_step": str(branching.get("branch_step"))}
    return {}


def run_display_name(config: dict) -> str:
    """``{grid}/{name}``: the planner names a run ``{objective}-{model}-{budget}`` (with ``-s{seed}``
    when the grid has several seeds), distinct within its grid, and the UI shows that name."""
    return f"{config.get('grid')}/{config.get('name')}"


# ------------------------------------------------------------------------------ experiments
def ensure_experiment(client, name: str, grid: str, artifact_location: str | None = None) -> str:
    """The experiment of a grid; refuses one that belongs to a different grid or to someone else."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_location or default_artifact_location(client.tracking_uri, name)
        return client.create_experiment(name, artifact_location=location, tags={GRID_TAG: grid})
    owner = experiment.tags.get(GRID_TAG)
    if owner != grid:
        held = f"the runs of grid {owner!r}" if owner else "runs not made by this project"
        raise ValueError(
            f"MLflow experiment {name!r} already holds {held}; refusing to mix grid {grid!r} into it. "
            "Set tracking.experiment to another name"
        )
    return experiment.experiment_id


def start_parent_run(uri: str, grid: str, experiment: str | None = None, tags: dict | None = None) -> str:
    """A parent run for one launch of a grid; the jobs' runs nest under it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, experiment or grid, grid)
    run = client.create_run(
        experiment_id,
        run_name=f"{grid}/launch-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"grid": grid, "kind": "launch", **git_state(), **(tags or {})},
    )
    return run.info.run_id


# ------------------------------------------------------------------------------- one run
def read_tracking_file(out_dir: str | Path) -> dict:
    path = Path(out_dir) / TRACKING_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_tracking_file(out_dir: str | Path, **values: Any) -> dict:
    """Merge ``values`` into ``<out_dir>/tracking.json`` (atomic replace)."""
    path = Path(out_dir) / TRACKING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**read_tracking_file(out_dir), **values}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)
    return state


@dataclass
class RunTracker:
    """The MLflow run of one job, with an on-disk buffer in front of it.

    Every call only appends to the buffer; :meth:`flush` (called every ``flush_every_s`` seconds
    and at the end) sends the buffer. A failed flush backs off (doubling, up to five minutes) so an
    outage costs training almost nothing.
    """

    out_dir: Path
    uri: str
    grid: str
    config: dict
    run_key: str
    experiment: str | None = None
    artifact_location: str | None = None
    flush_every_s: float = 10.0
    max_pending_bytes: int = MAX_PENDING_BYTES
    run_id: str | None = None
    dropped: int = 0
    _last_attempt: float = 0.0
    _backoff_s: float = 0.0
    _client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = read_tracking_file(self.out_dir)
        self.run_id = state.get("run_id")
        recorded = state.get("tracking_uri")
        if self.run_id and recorded and recorded != mask_uri(self.uri):
            # The run key leaves the store out, so a run may continue towards another store: a new
            # MLflow run there holds what is logged from now on.
            print(f"[tracking] {self.out_dir} was tracked at {recorded} (run {self.run_id}); it continues "
                  f"as a new MLflow run at {mask_uri(self.uri)}", file=sys.stderr, flush=True)
            self.run_id = None
            write_tracking_file(self.out_dir, run_id=None, logged_steps={})
        _quiet_http_retries()

    @property
    def pending_path(self) -> Path:
        return self.out_dir / PENDING_FILE

    # --------------------------------------------------------------- buffer
    def _append(self, entries: Iterable[dict]) -> None:
        lines = "".join(json.dumps(entry) + "\n" for entry in entries)
        size = self.pending_path.stat().st_size if self.pending_path.exists() else 0
        if size + len(lines) > self.max_pending_bytes:
            if not self.dropped:
                print(f"[tracking] buffer {self.pending_path} is full ({size} bytes): dropping new "
                      "metrics until the tracking server is back", file=sys.stderr, flush=True)
            self.dropped += len(lines.splitlines())
            return
        with self.pending_path.open("a") as handle:
            if size and not self._ends_with_newline():
                lines = "\n" + lines  # a torn last line (disk full, a kill mid-write) stays a line of its own
            handle.write(lines)

    def _ends_with_newline(self) -> bool:
        with self.pending_path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._append({"kind": "metric", "key": key, "value": float(value), "step": int(step), "timestamp": now}
                     for key, value in metrics.items())
        self.maybe_flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._append([{"kind": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path}])

    def set_tags(self, tags: dict[str, str]) -> None:
        self._append([{"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}}])

    def finish(self, status: str = "FINISHED") -> bool:
        """Record the final status and flush; True when nothing is left unsent."""
        self._append([{"kind": "status", "status": status}])
        done = self.flush()
        if not done:
            print(f"[tracking] MLflow at {mask_uri(self.uri)} is unreachable; the run's unsent records are in "
                  f"{self.pending_path}. Replay them with: python -m studies.tracking sync {self.out_dir}",
                  file=sys.stderr, flush=True)
        return done

    # ---------------------------------------------------------------- flush
    def maybe_flush(self) -> None:
        now = time.monotonic()
        if now - self._last_attempt >= max(self.flush_every_s, self._backoff_s):
            self.flush()

    def flush(self) -> bool:
        """Send everything buffered; True on success. Never raises on connection errors."""
        self._last_attempt = time.monotonic()
        try:
            self._open()
            self._send_pending()
        except Exception as error:  # noqa: BLE001 - an outage must not stop training
            self._backoff_s = min(max(2 * self._backoff_s, self.flush_every_s), 300.0)
            print(f"[tracking] flush to {mask_uri(self.uri)} failed ({type(error).__name__}: "
                  f"{str(error)[:200]}); retrying in {self._backoff_s:.0f} s", file=sys.stderr, flush=True)
            return False
        self._backoff_s = 0.0
        return True

    def _open(self) -> None:
        """Create the MLflow run (first time) or reopen it (resume), and record its id."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        client = self._client
        if self.run_id is None:
            state = read_tracking_file(self.out_dir)
            experiment_id = ensure_experiment(client, self.experiment or self.grid, self.grid, self.artifact_location)
            tags = run_tags(self.config, self.run_key)
            if state.get("parent_run_id"):
                tags["mlflow.parentRunId"] = state["parent_run_id"]
            run = client.create_run(experiment_id, run_name=run_display_name(self.config), tags=tags)
            self.run_id = run.info.run_id
            write_tracking_file(self.out_dir, run_id=self.run_id, run_key=self.run_key,
                                tracking_uri=mask_uri(self.uri), experiment_id=experiment_id)
            self._log_params(client)
        else:
            run = client.get_run(self.run_id)
            if run.info.status != "RUNNING":
                client.update_run(self.run_id, status="RUNNING")
            client.set_tag(self.run_id, "resumed_on_host", socket.gethostname())

    def _log_params(self, client) -> None:
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in sorted(flatten(self.config).items())]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=params[start:start + PARAMS_PER_BATCH])

    def _send_pending(self) -> None:
        from mlflow.entities import Metric, RunTag

        if not self.pending_path.exists():
            return
        lines = self.pending_path.read_bytes().decode(errors="replace").splitlines(keepends=True)
        entries = [entry for entry in map(_pending_entry, lines) if entry is not None]
        torn = sum(1 for line in lines if line.strip()) - len(entries)
        client = self._client
        # A resumed run repeats the steps between its last checkpoint and the interruption (with the
        # same values: resume is exact); each metric's step is logged once, the first time.
        logged_steps = dict(read_tracking_file(self.out_dir).get("logged_steps", {}))
        metrics, repeated = [], 0
        for e in entries:
            if e["kind"] != "metric":
                continue
            if e["step"] <= logged_steps.get(e["key"], -1):
                repeated += 1
                continue
            logged_steps[e["key"]] = e["step"]
            metrics.append(Metric(e["key"], e["value"], e["timestamp"], e["step"]))
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            client.log_batch(self.run_id, metrics=metrics[start:start + METRICS_PER_BATCH])
        tags = {k: v for e in entries if e["kind"] == "tags" for k, v in e["tags"].items()}
        if self.dropped:
            tags["metrics_dropped_in_outage"] = str(self.dropped)
        if tags:
            client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        for entry in entries:
            if entry["kind"] == "artifact":
                source = Path(entry["path"])
                if source.is_dir():
                    client.log_artifacts(self.run_id, str(source), entry.get("artifact_path") or source.name)
                else:
                    client.log_artifact(self.run_id, str(source), entry.get("artifact_path"))
        statuses = [e["status"] for e in entries if e["kind"] == "status"]
        if statuses:
            client.set_terminated(self.run_id, status=statuses[-1])
        write_tracking_file(self.out_dir, logged_steps=logged_steps)
        if torn or repeated:
            print(f"[tracking] {self.pending_path}: skipped {torn} torn line(s) and {repeated} metric record(s) "
                  "at steps already logged", file=sys.stderr, flush=True)
        # Everything above succeeded: drop exactly the lines read (new lines may have been appended).
        remaining = self.pending_path.read_bytes().decode(errors="replace").splitlines(keepends=True)[len(lines):]
        tmp = self.pending_path.with_suffix(".tmp")
        tmp.write_text("".join(remaining))
        tmp.replace(self.pending_path)


def _pending_entry(line: str) -> dict | None:
    """One buffered record, or None for a line that is not one (torn by a full disk or a kill)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    kinds = {"metric": ("key", "value", "step", "timestamp"), "artifact": ("path",), "tags": ("tags",),
             "status": ("status",)}
    if not isinstance(entry, dict) or entry.get("kind") not in kinds or not all(k in entry for k in kinds[entry["kind"]]):
        return None
    return entry


def _quiet_http_retries() -> None:
    """Fail fast on an unreachable server: our buffer, not MLflow's client, retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


# ------------------------------------------------------------------------- finished runs
def finished_run_keys(uri: str, experiment: str) -> set[str]:
    """Run keys of an experiment's runs whose MLflow status is FINISHED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return set()
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              max_results=50_000)
    return {run.data.tags["run_key"] for run in runs if "run_key" in run.data.tags}


# -------------------------------------------------------------------------------- CLI
def sync(run_dirs: list[str]) -> int:
    """Replay the unsent buffer of each run folder into MLflow."""
    failures = 0
    for run_dir in run_dirs:
        out = Path(run_dir)
        state = read_tracking_file(out)
        config_path = out / "config.yaml"
        if not config_path.exists():
            print(f"{out}: no config.yaml, not a run folder", file=sys.stderr)
            failures += 1
            continue
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
        recorded = state.get("tracking_uri") if "***" not in state.get("tracking_uri", "***") else None
        uri = config.get("tracking", {}).get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or recorded
        if not uri:
            print(f"{out}: no tracking URI recorded; set MLFLOW_TRACKING_URI", file=sys.stderr)
            failures += 1
            continue
        tracker = RunTracker(out, uri, config["grid"], config, state.get("run_key", out.name),
                             experiment=config.get("tracking", {}).get("experiment"))
        pending = tracker.pending_path
        count = len(pending.read_text().splitlines()) if pending.exists() else 0
        if tracker.flush():
            print(f"{out}: sent {count} buffered records to {mask_uri(uri)} (run {tracker.run_id})")
        else:
            failures += 1
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m studies.tracking")
    commands = parser.add_subparsers(dest="command", required=True)
    sync_parser = commands.add_parser("sync", help="replay buffered metrics of run folders into MLflow")
    sync_parser.add_argument("run_dirs", nargs="+")
    args = parser.parse_args(argv)
    return sync(args.run_dirs)


if __name__ == "__main__":
    sys.exit(main())

"""The MLflow run of one job: resume into the same run, an on-disk buffer in front of MLflow.

- Resume: the run id lives in ``<out_dir>/tracking.json``; a requeued or restarted job reopens that
  run instead of creating another.
- Outages: every metric goes first to an on-disk write-ahead buffer (``<out_dir>/mlflow-pending.jsonl``)
  and is flushed to MLflow in batches. When the server is unreachable, training goes on and the
  buffer grows (bounded); it is flushed when the server returns. Each metric's step is sent once:
  ``tracking.json`` keeps the last step sent per metric, so a replayed buffer and the steps a resumed
  run repeats after its last checkpoint are not logged twice. A line cut short (a full disk, a kill
  mid-write) is skipped with a message and never blocks the lines after it. Anything still unsent
  when the run ends stays in the buffer, and ``python -m studies.tracking sync RUN_DIR`` replays it.

MLflow is imported only when the buffer is flushed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from studies.atomic_write import write_atomic
from studies.credentials import mask_uri
from studies.tracking.experiments import ensure_experiment
from studies.tracking.run_tags import flatten, run_display_name, run_tags

TRACKING_FILE = "tracking.json"
PENDING_FILE = "mlflow-pending.jsonl"
MAX_PENDING_BYTES = 256 * 2**20
METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
PARAMS_PER_BATCH = 100


def read_tracking_file(out_dir: str | Path) -> dict:
    path = Path(out_dir) / TRACKING_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_tracking_file(out_dir: str | Path, **values: Any) -> dict:
    """Merge ``values`` into ``<out_dir>/tracking.json`` (atomic replace)."""
    path = Path(out_dir) / TRACKING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**read_tracking_file(out_dir), **values}
    write_atomic(path, json.dumps(state, indent=2))
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
    _opened: bool = field(default=False, repr=False)  # the run was created or reopened by this process

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
        """Create the MLflow run (a new run) or reopen it (a resumed one), and record its id: once per
        process, at its first successful flush; later flushes only send."""
        if self._opened:
            return
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
        self._opened = True

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
        write_atomic(self.pending_path, "".join(remaining))


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

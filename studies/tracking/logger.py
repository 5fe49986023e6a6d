"""A Lightning logger that writes through :class:`studies.tracking.tracker.RunTracker`.

Lightning's own MLFlowLogger sends every call straight to the server, so an outage either stops
training or loses metrics; this one appends to the tracker's on-disk buffer and lets the tracker
flush it in batches. It imports Lightning, so ``studies.tracking`` leaves it out of its own names.
"""

from __future__ import annotations

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from studies.tracking.tracker import RunTracker


class TrackerLogger(Logger):
    def __init__(self, tracker: RunTracker):
        super().__init__()
        self.tracker = tracker

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.tracker.run_id or "pending"

    @property
    @rank_zero_experiment
    def experiment(self) -> RunTracker:
        return self.tracker

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The tracker logs the whole resolved run config as params; the module's are a subset."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.tracker.log_metrics({k: float(v) for k, v in metrics.items()}, step or 0)

    @rank_zero_only
    def save(self) -> None:
        self.tracker.maybe_flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.tracker.flush()

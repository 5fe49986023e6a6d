"""Where runs go: the tracking store's URI, how to browse it, where its artifacts live, whether it answers.

``tracking.uri`` of the run config, else ``MLFLOW_TRACKING_URI``, else an embedded SQLite store
``sqlite:///<runs root>/mlflow.db`` that needs no server (browse it with ``mlflow ui``). A URI that
carries credentials is refused (``studies.credentials``; MLflow reads them from its environment
variables), and URIs are masked wherever they are printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from studies.credentials import check_no_credentials, mask_uri


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; the message names the URI and the error."""


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

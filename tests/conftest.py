"""Fixtures shared across test folders."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from chromium import ensure_chromium  # noqa: E402
from mlflow_server import MlflowServer  # noqa: E402


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1, shared by the session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium's executable, installed with apt-get on first use (see tests/chromium.py)."""
    return ensure_chromium()

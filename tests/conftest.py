"""Fixtures shared across test folders."""

import os
import shutil
import subprocess
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


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs: a filesystem of its own that a test can fill (mounting needs root)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    reason = None if os.geteuid() == 0 and shutil.which("mount") else "mounting a tmpfs needs root and mount(8)"
    if reason is None:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True,
                              text=True)
        reason = None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)

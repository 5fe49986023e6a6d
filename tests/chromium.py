"""Headless Chromium for the UI tests, installed on first use as the SLURM fixture installs SLURM.

``python -m pytest -q`` on a fresh Debian machine (as root) installs Debian's ``chromium`` package
with apt-get the first time a test needs it, so the README's test command needs no other setup.
Where it cannot be installed (not root, no apt-get), the UI tests are skipped with the reason, or
fail when ``CI`` is set, since CI must run every test.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

import pytest

PACKAGE = "chromium"
EXECUTABLES = ("chromium", "chromium-browser")
# Parallel test sessions may all want to install it; apt-get also waits for dpkg's own lock.
LOCK = "/var/lock/arm-mdm-chromium-install.lock"
INSTALL_TIMEOUT_S = 900


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, EXECUTABLES) if path), None)


def _why_not_installable() -> str | None:
    if shutil.which("apt-get") is None:
        return "there is no apt-get on this machine"
    if os.geteuid() != 0:
        return "installing it with apt-get needs root"
    return None


def _install() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if find_chromium():  # another session installed it while this one waited
            return
        for args in (["update"], ["install", "--no-install-recommends", PACKAGE]):
            done = subprocess.run(apt + args, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S)
            if done.returncode != 0:
                pytest.fail(f"`{' '.join(apt + args)}` failed ({done.returncode}):\n{done.stderr[-3000:]}",
                            pytrace=False)


def ensure_chromium() -> str:
    """The path of a Chromium executable, installing Debian's package when there is none."""
    path = find_chromium()
    if path is not None:
        return path
    reason = _why_not_installable()
    if reason is not None:
        message = (f"chromium is not installed and cannot be installed here ({reason}): "
                   f"install Debian's {PACKAGE} package (apt-get install {PACKAGE}); UI tests not run")
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(message)
    _install()
    path = find_chromium()
    if path is None:
        pytest.fail(f"apt-get installed {PACKAGE} but none of {EXECUTABLES} is on PATH", pytrace=False)
    return path

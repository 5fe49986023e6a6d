"""Processes by their command line, for tests that check what a sandboxed program left running."""

from __future__ import annotations

import os


def processes_with(token: str) -> list[int]:
    """The pids whose command line contains ``token``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if token.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found

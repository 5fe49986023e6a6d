"""Filling a small filesystem (the ``small_disk`` fixture's tmpfs) to make every later write fail."""

from __future__ import annotations

from pathlib import Path


def fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until its filesystem is full (ENOSPC); returns the filler file,
    whose removal frees the space again."""
    filler = Path(folder) / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 2**20)
                handle.flush()
        except OSError:
            pass
    return filler

"""Write a file so that a reader sees the old content or the new, never a torn one.

The content goes to a hidden temporary file beside the target (same file system, so the rename is
atomic), is flushed to disk, and replaces the target with ``os.replace``. The temporary name holds
the process id, so concurrent writers (preparation workers, ranks) never share one. Every small
state file of the project (run config, result, tracking state, evaluation points, preparation
progress and metadata) is written this way; a crash mid-write leaves at most a stray hidden file.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes, durable: bool = True) -> None:
    """``durable=False`` skips the fsync, for a file rewritten every second whose loss in a crash costs
    nothing (a progress display): on a network file system each fsync is a round trip to the server."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)

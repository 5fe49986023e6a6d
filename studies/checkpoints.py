"""Checkpoints that a kill, a full disk or a truncated file cannot cost a run.

Lightning's default writer stages a checkpoint through fsspec's temporary folder; where that folder
and the run folder are on different filesystems (a node-local /tmp, a shared runs folder), the move
falls back to a copy over the old file, so a job killed mid-write leaves neither checkpoint whole.
``AtomicCheckpointIO`` instead writes ``NAME.partial-PID`` next to the target, flushes it to disk,
moves the previous checkpoint to ``NAME.prev`` and renames the new one into place (one filesystem,
so each rename is atomic). At every moment one complete checkpoint exists.

On resume, ``resume_checkpoint`` picks the newest readable one: ``last.ckpt``, else ``last.ckpt.prev``
with a message naming the file that was skipped and why. Both are exact resume points (a run resumed
from either follows the uninterrupted run bit for bit). Partial files left by a kill are removed
with a message.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Optional

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

PARTIAL = ".partial-"
PREVIOUS = ".prev"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint beside its target and rename it into place; keep the previous one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        import torch

        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}{PARTIAL}{os.getpid()}")
        try:
            with open(partial, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)  # a full disk or an interrupt: the old checkpoint stands
            raise
        if target.exists():
            os.replace(target, target.with_name(target.name + PREVIOUS))
        os.replace(partial, target)
        _fsync_dir(target.parent)


def readable(path: Path) -> Optional[str]:
    """None when ``path`` is a complete checkpoint file (a zip archive with its central directory),
    else why not. Cheap: reads the archive's directory, not the tensors."""
    if not path.is_file():
        return "missing"
    if not zipfile.is_zipfile(path):
        return "truncated or not a checkpoint (no zip central directory)"
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return f"unreadable ({error})"
    return None


def resume_checkpoint(last: Path) -> Optional[Path]:
    """The checkpoint to resume from: ``last``, else its previous version, else None (start fresh
    only when neither exists). Removes partial files a kill left behind, with a message."""
    for stale in sorted(last.parent.glob(f"*{PARTIAL}*")) if last.parent.is_dir() else []:
        print(f"[checkpoints] removing {stale}: a checkpoint write that did not finish", file=sys.stderr, flush=True)
        stale.unlink(missing_ok=True)
    previous = last.with_name(last.name + PREVIOUS)
    if not last.exists() and not previous.exists():
        return None
    problem = readable(last)
    if problem is None:
        return last
    if readable(previous) is None:
        print(f"[checkpoints] {last} is {problem}; resuming from the previous checkpoint {previous}",
              file=sys.stderr, flush=True)
        return previous
    raise RuntimeError(f"{last} is {problem} and {previous} is {readable(previous)}: no checkpoint to resume "
                       f"from; move them away to train the run from the start")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

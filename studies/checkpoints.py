"""Checkpoints that a kill, a full disk or a truncated file cannot cost a run.

Lightning's default writer stages a checkpoint through fsspec's temporary folder; where that folder
and the run folder are on different filesystems (a node-local /tmp, a shared runs folder), the move
falls back to a copy over the old file, so a job killed mid-write leaves neither checkpoint whole.
``AtomicCheckpointIO`` instead writes ``NAME.partial-PID`` next to the target, flushes it to disk,
moves the previous checkpoint to ``NAME.prev`` and renames the new one into place (one filesystem,
so each rename is atomic). At every moment one complete checkpoint exists.

A sharded checkpoint (``trainer.strategy: fsdp2``, ``studies.strategy``) is a folder of torch
distributed checkpoint files, written beside its target as ``NAME.partial-sharded`` and installed the
same way.

On resume, ``resume_checkpoint`` picks the newest readable one: ``last.ckpt``, else ``last.ckpt.prev``
with a message naming the file that was skipped and why. Both are exact resume points (a run resumed
from either follows the uninterrupted run bit for bit). Partial files left by a kill are removed
with a message.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from studies.config import BRANCH, branch_checkpoint

PARTIAL = ".partial-"
SHARDED_PARTIAL = PARTIAL + "sharded"  # one name for every rank of a sharded save
PREVIOUS = ".prev"
SHARDED_METADATA = (".metadata", "meta.pt")  # DCP's index (written last) and Lightning's loop state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint beside its target and rename it into place; keep the previous one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        import torch

        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = _partial(target)
        try:
            with open(partial, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)  # a full disk or an interrupt: the old checkpoint stands
            raise
        install_checkpoint(partial, target)


def _partial(target: Path) -> Path:
    return target.with_name(f"{target.name}{PARTIAL}{os.getpid()}")


def install_checkpoint(partial: Path, target: Path) -> None:
    """Rename a complete ``partial`` (a file, or a sharded checkpoint's folder) into ``target``,
    keeping the previous target as ``NAME.prev``."""
    if target.exists():
        previous = target.with_name(target.name + PREVIOUS)
        if previous.is_dir():
            shutil.rmtree(previous)  # a folder cannot be renamed over; the target stays complete meanwhile
        os.replace(target, previous)
    os.replace(partial, target)
    _fsync_dir(target.parent)


def remove_checkpoint(path: Path) -> None:
    """Remove a checkpoint file or a sharded checkpoint's folder, if it is there. Every rank of a job
    may call it for one path: whichever comes first removes it."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, onerror=_raise_unless_missing)
    else:
        path.unlink(missing_ok=True)


def _raise_unless_missing(function, path, exc_info) -> None:
    if not issubclass(exc_info[0], FileNotFoundError):  # gone already: another rank removed it
        raise exc_info[1]


def place_copy(source: Path, target: Path) -> None:
    """Make ``target`` a checkpoint with ``source``'s bytes, the way ``AtomicCheckpointIO`` writes one:
    a hard link where the filesystem allows it (no copy of a large file), else a copy. A sharded
    checkpoint's folder is placed file by file."""
    partial = _partial(Path(target))
    if Path(source).is_dir():
        shutil.copytree(source, partial, copy_function=_link_or_copy)
    else:
        _link_or_copy(source, partial)
    install_checkpoint(partial, Path(target))


def _link_or_copy(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def readable(path: Path) -> Optional[str]:
    """None when ``path`` is a complete checkpoint file (a zip archive with its central directory) or
    a complete sharded checkpoint folder (with DCP's index and Lightning's meta.pt), else why not.
    Cheap: reads the archive's directory, not the tensors."""
    if path.is_dir():
        absent = [name for name in SHARDED_METADATA if not (path / name).is_file()]
        return f"an incomplete sharded checkpoint (no {', '.join(absent)})" if absent else None
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
        remove_checkpoint(stale)
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


def start_checkpoint(last: Path, cfg) -> Optional[Path]:
    """Where a run starts: its own newest checkpoint (``resume_checkpoint``); for a branch without
    one, its trunk's checkpoint at the branch point; else None (step 0). A branch whose trunk
    checkpoint is missing trains from step 0, which gives the same run at the full cost."""
    own = resume_checkpoint(last)
    b = cfg.branching
    if own is not None or b.role != BRANCH:
        return own
    trunk = branch_checkpoint(b.trunk_dir, b.branch_step) if b.trunk_dir else None
    problem = readable(trunk) if trunk else "not given (branching.trunk_dir is empty)"
    if problem is None:
        print(f"[checkpoints] {cfg.name}: starting from the trunk at step {b.branch_step} ({trunk})",
              file=sys.stderr, flush=True)
        return trunk
    print(f"[checkpoints] {cfg.name}: the trunk checkpoint {trunk or ''} is {problem}; training from step 0 "
          "(the same run, at its full cost)", file=sys.stderr, flush=True)
    return None


class BranchCheckpoints(L.Callback):
    """A trunk keeps a checkpoint at each branch point, right after that optimizer step (where
    ``ModelCheckpoint`` would save): an exact resume point from which a branch trains its cooldown."""

    def __init__(self, steps, out_dir: Path) -> None:
        self.steps = set(int(s) for s in steps)
        self.out_dir = Path(out_dir)
        self._done: set[int] = set()  # once per step: accumulation calls this hook per micro-batch

    def on_train_start(self, trainer, pl_module) -> None:
        """A run resumed exactly at a branch point (its last save came before the branch checkpoint)
        already holds that state in the checkpoint it resumed from: keep a copy of it."""
        step = trainer.global_step
        self._done.add(step)  # the first batch-end at this step comes mid-way through the next step
        target = branch_checkpoint(self.out_dir, step)
        if step in self.steps and trainer.ckpt_path and not target.exists() and trainer.global_rank == 0:
            place_copy(Path(trainer.ckpt_path), target)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step not in self.steps or step in self._done:
            return
        self._done.add(step)
        target = branch_checkpoint(self.out_dir, step)
        if not target.exists():
            trainer.save_checkpoint(target)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

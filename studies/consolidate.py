"""One checkpoint file from a sharded one, for the commands that read a single file.

    python -m studies.consolidate RUN/checkpoints/final.ckpt [--output FILE] [--optimizer]

A run under ``trainer.strategy: fsdp2`` saves torch distributed checkpoint folders, one file per rank
(``studies.strategy``), and resumes from them. ``studies.evaluate``, ``studies.toyworld.probe`` and
``models.convert`` read one Lightning checkpoint file: this command gathers the folder's shards into
full tensors on the CPU (the whole model must fit in host memory) and writes that file, by default
``final.consolidated.ckpt`` beside ``final.ckpt``. It holds the weights, the hyperparameters and the
loop state; the optimizer states (three times the weights' size) only with ``--optimizer``, keyed by
parameter name as DCP stores them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional

CONSOLIDATED_SUFFIX = ".consolidated.ckpt"


def consolidated_path(folder: Path) -> Path:
    return folder.with_name(folder.name.removesuffix(".ckpt") + CONSOLIDATED_SUFFIX)


def consolidate(folder: Path, output: Optional[Path] = None, *, optimizer: bool = False) -> Path:
    """Write the single-file checkpoint of the sharded checkpoint ``folder``; return its path."""
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    from studies.checkpoints import AtomicCheckpointIO, readable

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a sharded checkpoint folder"
                                + (" (it is already a single file)" if folder.is_file() else ""))
    problem = readable(folder)
    if problem is not None:
        raise ValueError(f"{folder} is {problem}; consolidate a checkpoint whose save finished")
    output = Path(output) if output else consolidated_path(folder)
    checkpoint = _load_distributed_checkpoint(folder)  # full tensors on the CPU, meta.pt merged in
    states = sorted((key for key in checkpoint if re.fullmatch(r"optimizer_\d+", key)), key=lambda k: int(k[10:]))
    optimizer_states = [checkpoint.pop(key) for key in states]
    if optimizer:
        checkpoint["optimizer_states"] = optimizer_states
    AtomicCheckpointIO().save_checkpoint(checkpoint, output)
    return output


def sharded_checkpoint_error(path: Path) -> str:
    """What a reader of single checkpoint files says when handed a sharded folder."""
    return (f"{path} is a sharded checkpoint (a folder, trainer.strategy=fsdp2); consolidate it into one file "
            f"with `python -m studies.consolidate {path}` and pass {consolidated_path(Path(path))}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a sharded checkpoint folder, e.g. RUN/checkpoints/final.ckpt")
    parser.add_argument("--output", type=Path, help=f"the file to write (default: FOLDER without .ckpt + {CONSOLIDATED_SUFFIX})")
    parser.add_argument("--optimizer", action="store_true", help="keep the AdamW states as well")
    args = parser.parse_args(argv)
    try:
        written = consolidate(args.folder, args.output, optimizer=args.optimizer)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    print(written, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

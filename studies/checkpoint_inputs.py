"""What a command that reads a finished checkpoint needs beside it: its run's config and the prepared
data folder the run trained on.

A run folder holds ``config.yaml`` and ``checkpoints/X.ckpt``; the config names the prepared data
folder (tokenizer, special-token ids, toy-world task files). The evaluation command, the toy-world
probes and lm-eval's ``--model arm_mdm`` find that folder the same way (``checkpoint_run_data``);
each names its own way of passing the folder explicitly when it cannot be found there. Readers of one
checkpoint file refuse a sharded checkpoint folder with the command that consolidates it
(``check_checkpoint_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from studies.config import RunConfig, find_run_config, load_run_config


class CheckpointInputError(ValueError):
    """A checkpoint, or what it needs beside it, that cannot be read; the message ends with the fix."""


class RunDataNotFound(CheckpointInputError):
    """A checkpoint whose prepared data folder cannot be found."""


def check_checkpoint_file(checkpoint: Path, *, fix: str = "") -> None:
    """Refuse what is not one checkpoint file: a sharded folder (naming the command that consolidates
    it) or a missing path (followed by ``fix``, how the caller's user names another)."""
    if checkpoint.is_dir():
        from studies.consolidate import sharded_checkpoint_error

        raise CheckpointInputError(sharded_checkpoint_error(checkpoint))
    if not checkpoint.is_file():
        raise CheckpointInputError(f"checkpoint {checkpoint} does not exist" + (f"; {fix}" if fix else ""))


def checkpoint_run_data(checkpoint: Path, data_dir=None, *, fix: str) -> Tuple[Optional[RunConfig], Path]:
    """(the run config beside ``checkpoint`` or None, the prepared data folder).

    The data folder is ``data_dir`` when given, else the one the run's config names, which must exist
    here. Raises ``RunDataNotFound`` ending with ``fix`` (how the caller's user passes the folder)."""
    config = find_run_config(checkpoint)
    run_cfg = load_run_config(config) if config is not None else None
    if data_dir:
        return run_cfg, Path(data_dir)
    if run_cfg is None:
        raise RunDataNotFound(f"no config.yaml next to {checkpoint} names its prepared data folder; {fix}")
    from studies.data.layout import dataset_dir

    data_dir = dataset_dir(run_cfg.data)
    if not (data_dir / "metadata.json").is_file():
        raise RunDataNotFound(f"the run's prepared data folder {data_dir} (from {config}) does not exist here; "
                              f"run from the directory the run was launched in, or {fix}")
    return run_cfg, data_dir


def resolve_checkpoint(checkpoint, data_dir=None) -> tuple:
    """(checkpoint path, its run's config or None, prepared data folder) for a command that scores a
    checkpoint: the data folder is ``data_dir`` if given, else the one the run trained on. Exits with
    an error that names the fix when either cannot be found."""
    checkpoint = Path(checkpoint)
    try:
        check_checkpoint_file(checkpoint)
        run_cfg, data_dir = checkpoint_run_data(checkpoint, data_dir, fix="pass --data-dir")
    except CheckpointInputError as error:
        raise SystemExit(f"error: {error}") from None
    return checkpoint, run_cfg, data_dir

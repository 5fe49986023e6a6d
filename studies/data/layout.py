"""A prepared dataset's identity and folder: the content hash of its config, where the folder lives,
and its ``metadata.json``.

The folder name ends with a hash of everything that determines its bytes (the content fields of the
config, the bytes of local input files and of a given tokenizer, a pretrained tokenizer's identity),
so re-running with the same config finds and reuses the prepared data, and a different dataset can
never be written over it. A preparation works beside it, in ``cache_dir/.prepare-<final name>/``.

Nothing in the folder records time, host or worker count: it is byte-identical for any number of
workers and however often the preparation was interrupted. Layout::

    metadata.json              counts, dtype, special ids/tokens, tokenizer, shards (tokens, sha256)
    tokenizer.json
    train/PPPPP-SSSSS.bin      shard SSSSS of part PPPPP
    validation/PPPPP-SSSSS.bin
    tasks/NAME.jsonl           (toy world only)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Dict

from .config import DataConfig, TokenizerConfig

FORMAT_VERSION = 2
# Fields that change where and how a dataset is built or read, or what a planner assumes, but not its
# bytes. ``streaming`` is content for a hub source only (it changes how the source is cut into parts).
NON_CONTENT_FIELDS = ("allow_repeat", "num_proc", "cache_dir", "streaming", "source_tokens", "max_epochs_warning")


def file_digest(path) -> str:
    """SHA-256 of a file's bytes (local inputs and tokenizer files in a dataset's content hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pretrained_identity(cfg: TokenizerConfig) -> Dict:
    """What decides a pretrained tokenizer's bytes, for the dataset's content hash without downloading:
    the SHA-256 of a local folder's files, or the hub id and revision."""
    from .tokenizer import PRETRAINED_FILES, pretrained_is_local

    if pretrained_is_local(cfg):
        folder = Path(os.path.expanduser(cfg.pretrained))
        return {"files": {name: file_digest(folder / name) for name in PRETRAINED_FILES if (folder / name).is_file()}}
    return {"repo": cfg.pretrained, "revision": cfg.revision}


def content_config(cfg: DataConfig) -> Dict:
    """The config fields that determine the dataset's bytes, plus digests of local inputs."""
    from .ingest import resolve_files

    content = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NON_CONTENT_FIELDS}
    if cfg.source != "toyworld":
        content.pop("toyworld")
    else:  # the generator's code decides the text as much as its config does
        from studies.toyworld.world import GENERATOR_VERSION

        content["toyworld_version"] = GENERATOR_VERSION
    if cfg.source == "hub":
        content["streaming"] = cfg.streaming
    if cfg.source == "files":
        content["file_digests"] = {f: file_digest(f) for f in resolve_files(cfg)}
    if cfg.tokenizer.path is not None:
        content["tokenizer_digest"] = file_digest(cfg.tokenizer.path) if Path(cfg.tokenizer.path).is_file() else None
    if cfg.tokenizer.pretrained is not None:
        content["tokenizer_pretrained"] = pretrained_identity(cfg.tokenizer)
    content["format_version"] = FORMAT_VERSION
    return content


def config_hash(cfg: DataConfig) -> str:
    return content_hash(content_config(cfg))


def content_hash(content: Dict) -> str:
    """The dataset's identity: SHA-256 of its ``content_config``. A preparation computes the content
    once (it reads every local input file) and takes the hash and ``metadata.json``'s copy from it."""
    blob = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def dataset_dir(cfg: DataConfig, digest: str | None = None) -> Path:
    """Where ``cfg`` is (or will be) prepared: ``cache_dir/<source>[-<name>]-<hash16>``."""
    label = cfg.source
    if cfg.source == "hub":
        label += "-" + "".join(c if c.isalnum() else "_" for c in str(cfg.name))[-40:]
    return Path(cfg.cache_dir) / f"{label}-{(digest or config_hash(cfg))[:16]}"


def work_dir(final: Path) -> Path:
    """The working folder of a preparation of ``final``: beside it, stable across runs."""
    return final.parent / f".prepare-{final.name}"


def load_metadata(path) -> Dict:
    """Read ``metadata.json`` of a prepared dataset folder."""
    file = Path(path) / "metadata.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a prepared dataset (no metadata.json); run `python -m studies.data prepare`")
    with open(file) as f:
        return json.load(f)

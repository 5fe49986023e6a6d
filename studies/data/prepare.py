"""Prepare a dataset: ingest, tokenize, pack, and store it content-addressed under ``cache_dir``.

The folder name ends with a hash of everything that determines the bytes of the shards (the
content fields of the config, the bytes of local input files and of a given tokenizer.json), so
re-running with the same config finds and reuses the prepared data, and a different dataset can
never be written over it. A build happens in a private temporary folder that is renamed into place
only when complete: an error leaves no partial shards, and two processes preparing the same config
at once both end up using the one folder that won the rename.

Layout of a prepared folder::

    metadata.json        counts, dtype, special ids, tokenizer hash, source, config
    tokenizer.json
    train/shard_00000.bin ...
    validation/shard_00000.bin ...
    tasks/NAME.jsonl     (toy world only)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict

from .config import DataConfig, to_config

FORMAT_VERSION = 1
# Fields that change where and how a dataset is built or read, but not its bytes.
NON_CONTENT_FIELDS = ("allow_repeat", "num_proc", "cache_dir", "streaming")

log = logging.getLogger(__name__)


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_config(cfg: DataConfig) -> Dict:
    """The config fields that determine the dataset's bytes, plus digests of local inputs."""
    from .ingest import resolve_files

    content = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NON_CONTENT_FIELDS}
    if cfg.source != "toyworld":
        content.pop("toyworld")
    else:  # the generator's code decides the text as much as its config does
        from .toyworld import GENERATOR_VERSION

        content["toyworld_version"] = GENERATOR_VERSION
    if cfg.source == "files":
        content["file_digests"] = {f: _file_digest(f) for f in resolve_files(cfg)}
    if cfg.tokenizer.path is not None:
        content["tokenizer_digest"] = _file_digest(cfg.tokenizer.path) if Path(cfg.tokenizer.path).is_file() else None
    content["format_version"] = FORMAT_VERSION
    return content


def config_hash(cfg: DataConfig) -> str:
    blob = json.dumps(content_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def dataset_dir(cfg: DataConfig, digest: str | None = None) -> Path:
    """Where ``cfg`` is (or will be) prepared: ``cache_dir/<source>[-<name>]-<hash16>``."""
    label = cfg.source
    if cfg.source == "hub":
        label += "-" + "".join(c if c.isalnum() else "_" for c in str(cfg.name))[-40:]
    return Path(cfg.cache_dir) / f"{label}-{(digest or config_hash(cfg))[:16]}"


def load_metadata(path) -> Dict:
    """Read ``metadata.json`` of a prepared dataset folder."""
    file = Path(path) / "metadata.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a prepared dataset (no metadata.json); run `python -m studies.data prepare`")
    with open(file) as f:
        return json.load(f)


def _check_existing(folder: Path, digest: str) -> None:
    meta = load_metadata(folder)
    if meta.get("config_hash") != digest:
        raise FileExistsError(
            f"{folder} holds a different dataset (config hash {meta.get('config_hash')}, expected {digest}); "
            "it is never overwritten: move it away or use another data.cache_dir"
        )


def prepare_dataset(cfg) -> Path:
    """Build (or reuse) the prepared dataset of ``cfg`` and return its folder."""
    cfg = to_config(cfg)
    digest = config_hash(cfg)
    final = dataset_dir(cfg, digest)
    if final.exists():
        _check_existing(final, digest)
        log.info("reusing prepared dataset %s", final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o755)
    try:
        _build(cfg, tmp, digest)
        shutil.rmtree(tmp / "work", ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            # Another process finished the same dataset first: use its folder.
            shutil.rmtree(tmp, ignore_errors=True)
            _check_existing(final, digest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("prepared dataset %s", final)
    return final


def _build(cfg: DataConfig, out: Path, digest: str) -> None:
    from . import ingest, packing, tokenizer as tok
    from .toyworld import write_tasks

    work = out / "work"
    work.mkdir()
    world = None
    if cfg.source == "toyworld":
        train_docs, val_docs, world = ingest.toyworld_documents(cfg)
    else:
        train_docs, val_docs = ingest.load_documents(cfg, work)

    if cfg.tokenizer.path is not None:
        tokenizer = tok.load_tokenizer(cfg.tokenizer.path, cfg.tokenizer)
    else:
        n_train = len(train_docs) if cfg.tokenizer.train_documents is None else min(len(train_docs), cfg.tokenizer.train_documents)
        tokenizer = tok.train_bpe((row["text"] for row in train_docs.select(range(n_train))), cfg.tokenizer)
    vocab = tok.vocab_size(tokenizer)
    dtype = packing.choose_dtype(vocab, cfg.token_dtype)
    ids = tok.special_ids(tokenizer, cfg.tokenizer)
    tokenizer.save(str(out / "tokenizer.json"))

    splits = {}
    for name, docs, limit in (("train", train_docs, cfg.max_tokens), ("validation", val_docs, None)):
        tokenized = packing.tokenize(docs, tokenizer, cfg.num_proc)
        splits[name] = packing.write_split(tokenized, out / name, dtype, ids["eos"], cfg.shard_tokens, limit)
    if splits["train"]["tokens"] == 0:
        raise ValueError("the training split tokenized to zero tokens; the corpus is empty")

    meta = {
        "format_version": FORMAT_VERSION,
        "config_hash": digest,
        "source": cfg.source,
        "name": cfg.name,
        "subset": cfg.subset,
        "files": list(cfg.files),
        "split": cfg.split,
        "validation_split": cfg.validation_split,
        "tokenizer_hash": tok.tokenizer_hash(tokenizer),
        "vocab_size": vocab,
        "special_ids": ids,
        "special_tokens": tok.special_tokens(cfg.tokenizer),
        "dtype": dtype,
        "documents": splits["train"]["documents"],
        "tokens": splits["train"]["tokens"],
        "splits": splits,
        "config": content_config(cfg),
    }
    if world is not None:
        meta["tasks"] = write_tasks(world, out / "tasks")
        meta["toyworld"] = {"people": len(world.people), "qa_people": sum(p.in_qa for p in world.people)}
    with open(out / "metadata.json", "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)

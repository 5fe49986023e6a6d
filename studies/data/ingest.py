"""Ingestion: turn a configured source into train and validation document datasets.

Every source ends as two ``datasets.Dataset`` objects with a single ``text`` column, read with
``datasets.load_dataset`` (hub by name, possibly streamed; local json/jsonl/parquet/text files) or
generated (the toy world). Limits (``max_documents``, ``max_tokens``) are applied here for streamed
sources, so a run never reads more of a web-scale corpus than it needs.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from .config import DataConfig

SUFFIX_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text", ".text": "text"}
# A byte-level BPE spends at least one token per 8 characters of English or code in practice, so
# streaming max_tokens * 8 characters is enough to fill a max_tokens budget after tokenization.
MAX_CHARS_PER_TOKEN = 8


def resolve_files(cfg: DataConfig) -> List[str]:
    """Expand globs; every pattern must match at least one existing file."""
    files: List[str] = []
    for pattern in cfg.files:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            from .corpora import fetch_hint

            hint = fetch_hint(pattern)
            fix = f"fetch it first: {hint}" if hint else "check the path"
            raise FileNotFoundError(f"data.files entry {pattern!r} matches no file; {fix}")
        files.extend(matches)
    return files


def file_format(cfg: DataConfig, files: List[str]) -> str:
    if cfg.format:
        return cfg.format
    formats = {SUFFIX_FORMATS.get(Path(f).suffix.lower()) for f in files}
    if None in formats or len(formats) != 1:
        raise ValueError(
            f"cannot infer one format from the suffixes of {files}; use .json/.jsonl/.parquet/.txt "
            "files of a single kind, or set data.format"
        )
    return formats.pop()


def _texts(rows, text_field: str, where: str) -> Iterator[str]:
    for i, row in enumerate(rows):
        if text_field not in row:
            raise ValueError(
                f"{where} has no text field {text_field!r} (fields: {sorted(row)}); set data.text_field"
            )
        text = row[text_field]
        if text is not None and str(text).strip():
            yield str(text)


def _limited(texts: Iterator[str], max_documents: Optional[int], max_chars: Optional[int]) -> Iterator[str]:
    chars = 0
    for n, text in enumerate(texts):
        if (max_documents is not None and n >= max_documents) or (max_chars is not None and chars >= max_chars):
            return
        chars += len(text)
        yield text


def _open(cfg: DataConfig, split: str, cache_dir: Path):
    import datasets

    if cfg.source == "files":
        files = resolve_files(cfg)
        fmt = file_format(cfg, files)
        kwargs = {"sample_by": "paragraph"} if fmt == "text" else {}
        return datasets.load_dataset(fmt, data_files=files, split=split, cache_dir=str(cache_dir), **kwargs)
    streaming = cfg.streaming
    if streaming and cfg.max_documents is None and cfg.max_tokens is None:
        raise ValueError(
            f"streaming hub dataset {cfg.name!r} needs data.max_documents or data.max_tokens "
            "(or set data.streaming=false to download the whole split)"
        )
    # Hub downloads go to the usual Hugging Face cache (HF_HOME), shared between preparations.
    return datasets.load_dataset(cfg.name, cfg.subset, split=split, streaming=streaming)


def _materialize(texts: Iterator[str], cache_dir: Path):
    """Write the documents to a Parquet file under ``cache_dir`` in chunks and open it as a Dataset,
    so a large streamed corpus never has to fit in memory."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"documents-{len(list(cache_dir.glob('documents-*.parquet')))}.parquet"
    schema = pa.schema([("text", pa.string())])
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        chunk: List[str] = []
        for text in texts:
            chunk.append(text)
            count += 1
            if len(chunk) == 10_000:
                writer.write_table(pa.table({"text": chunk}, schema=schema))
                chunk = []
        writer.write_table(pa.table({"text": chunk}, schema=schema))
    if count == 0:
        return datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")}))
    return datasets.Dataset.from_parquet(str(path), cache_dir=str(cache_dir))


def load_documents(cfg: DataConfig, workdir: Path) -> Tuple["object", "object"]:
    """Return (train, validation) datasets with one ``text`` column; empty documents are dropped."""
    import numpy as np

    cache_dir = workdir / "hf_cache"
    where = f"{cfg.source} dataset {cfg.name or cfg.files!r} split {cfg.split!r}"
    max_chars = None if cfg.max_tokens is None else cfg.max_tokens * MAX_CHARS_PER_TOKEN
    val_docs = cfg.validation_max_documents
    if cfg.validation_split is None and val_docs is not None and cfg.validation_fraction > 0:
        max_chars = None if max_chars is None else int(max_chars / (1 - cfg.validation_fraction)) + 1
    texts = _limited(_texts(_open(cfg, cfg.split, cache_dir), cfg.text_field, where), cfg.max_documents, max_chars)
    train = _materialize(texts, cache_dir)
    if len(train) == 0:
        raise ValueError(f"{where} holds no non-empty documents in field {cfg.text_field!r}; nothing to prepare")

    if cfg.validation_split is not None:
        where_val = f"{cfg.source} dataset {cfg.name or cfg.files!r} split {cfg.validation_split!r}"
        rows = _open(cfg, cfg.validation_split, cache_dir)
        validation = _materialize(_limited(_texts(rows, cfg.text_field, where_val), val_docs, None), cache_dir)
        return train, validation

    # Carve validation documents out of the train split, chosen by cfg.seed, train order otherwise kept.
    n_val = int(round(cfg.validation_fraction * len(train)))
    if val_docs is not None:
        n_val = min(n_val, val_docs)
    if cfg.validation_fraction > 0 and len(train) >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(train) - 1)
    chosen = np.random.default_rng(cfg.seed).permutation(len(train))[:n_val]
    is_val = np.zeros(len(train), dtype=bool)
    is_val[chosen] = True
    validation = train.select(np.flatnonzero(is_val))
    train = train.select(np.flatnonzero(~is_val))
    return train, validation


def toyworld_documents(cfg: DataConfig):
    """(train, validation, world) for the toy world; its split is fixed by the world's own generator."""
    import datasets

    from .toyworld import generate

    if cfg.max_documents is not None or cfg.max_tokens is not None:
        raise ValueError(
            "data.max_documents/max_tokens would drop toy-world facts that the tasks ask about; "
            "size the world with data.toyworld.* instead"
        )
    world = generate(cfg.toyworld)
    train = datasets.Dataset.from_dict({"text": world.train_documents})
    validation = datasets.Dataset.from_dict({"text": world.validation_documents})
    return train, validation, world

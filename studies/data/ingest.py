"""Ingestion: a configured source as disjoint, ordered parts of documents, and the validation carve.

A source is split into parts fixed by the input alone, never by how many workers prepare it, so the
prepared bytes cannot depend on the worker count:

- ``files``: one part per file, in ``resolve_files`` order.
- ``hub`` streamed: one part per shard of the ``IterableDataset`` (one per data file of the split,
  in the order of the split's files); ``hub`` with ``streaming: false``: the downloaded ``Dataset`` in
  blocks of ``ROWS_PER_PART`` rows.
- ``toyworld``: one part, the world's training documents.

A part's documents are its non-empty texts in source order. Without ``validation_split``, the
document at position j of part p goes to validation iff the j-th uniform draw of
``numpy.random.default_rng([seed, p])`` is below ``validation_fraction``: the carve of a part depends
on that part alone. With ``validation_split`` (and for the toy world, whose generator writes its own
validation documents), validation is a part of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from .config import DataConfig

SUFFIX_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text", ".text": "text"}
# Rows per part of a downloaded (non-streamed) hub split: part of the prepared bytes' definition,
# since the validation carve is drawn per part.
ROWS_PER_PART = 1 << 17
READ_BATCH = 1000


@dataclass(frozen=True)
class Part:
    """One part of a source: ``split`` is "train" (``index`` is its place in the train stream) or
    "validation" (a validation source of its own, index 0); ``locator`` says how to read it."""

    index: int
    split: str
    label: str
    locator: Tuple
    carve: bool

    @property
    def name(self) -> str:
        """The part's folder name: ``00003`` or ``validation``."""
        return f"{self.index:05d}" if self.split == "train" else "validation"


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


# ---- parts ----------------------------------------------------------------------------------------

def train_parts(cfg: DataConfig) -> List[Part]:
    """The parts of the train stream, in order."""
    carve = cfg.validation_split is None
    if cfg.source == "toyworld":
        return [Part(0, "train", "toy world", ("toyworld",), False)]
    if cfg.source == "files":
        files = resolve_files(cfg)
        file_format(cfg, files)
        return [Part(i, "train", f, ("file", f), carve) for i, f in enumerate(files)]
    if cfg.streaming:
        dataset = _hub(cfg, cfg.split, True)
        n = _num_shards(dataset)
        _check_shard_order(dataset, n)
        return [Part(i, "train", f"shard {i + 1} of {n}", ("shard", i, n), carve) for i in range(n)]
    rows = len(_hub(cfg, cfg.split, False))
    return [Part(i, "train", f"rows {a}-{min(a + ROWS_PER_PART, rows) - 1}", ("rows", a, min(a + ROWS_PER_PART, rows)), carve)
            for i, a in enumerate(range(0, rows, ROWS_PER_PART))]


def validation_part(cfg: DataConfig) -> Optional[Part]:
    """The validation source as a part of its own, or None when validation is carved from the parts."""
    if cfg.source == "toyworld":
        return Part(0, "validation", "toy world validation documents", ("toyworld",), False)
    if cfg.validation_split is not None:
        return Part(0, "validation", f"split {cfg.validation_split!r}", ("split", cfg.validation_split), False)
    return None


def _num_shards(dataset) -> int:
    n = getattr(dataset, "num_shards", None)
    return int(n if n is not None else dataset.n_shards)


def _check_shard_order(dataset, n: int) -> None:
    """Shard i must hold the split's i-th data file, so the parts' concatenation is the split in order
    (checked where the dataset exposes its file list)."""
    files = getattr(getattr(dataset, "_ex_iterable", None), "kwargs", {}).get("files")
    if not isinstance(files, list) or len(files) != n:
        return
    for i in (0, n - 1):
        shard_files = getattr(dataset.shard(num_shards=n, index=i)._ex_iterable, "kwargs", {}).get("files")
        if shard_files is not None and list(shard_files) != [files[i]]:
            raise RuntimeError(
                f"shard {i} of {n} of the streamed dataset holds {shard_files}, not its file {files[i]}; "
                "this version of datasets shards differently: set data.streaming=false"
            )


def _hub(cfg: DataConfig, split: str, streaming: bool):
    """``datasets.load_dataset`` of a hub dataset (or a local folder in the hub's layout), opened once
    per process. Downloads go to the usual Hugging Face cache (HF_HOME), shared between preparations."""
    return _load_hub(cfg.name, cfg.subset, split, streaming)


@functools.lru_cache(maxsize=4)
def _load_hub(name: str, subset: Optional[str], split: str, streaming: bool):
    import datasets

    return datasets.load_dataset(name, subset, split=split, streaming=streaming)


def toy_world(cfg: DataConfig):
    """The toy world of ``cfg`` (generated once per process)."""
    if cfg.max_documents is not None or cfg.max_tokens is not None:
        raise ValueError(
            "data.max_documents/max_tokens would drop toy-world facts that the tasks ask about; "
            "size the world with data.toyworld.* instead"
        )
    return _generate(tuple(sorted(dataclasses.asdict(cfg.toyworld).items())))


@functools.lru_cache(maxsize=2)
def _generate(toy_items: Tuple):
    from studies.toyworld.world import generate

    from .config import ToyWorldConfig

    return generate(ToyWorldConfig(**dict(toy_items)))


# ---- documents ------------------------------------------------------------------------------------

def where(cfg: DataConfig, part: Part) -> str:
    """The part, named for an error message."""
    split = cfg.split if part.split == "train" else cfg.validation_split
    source = cfg.name if cfg.source == "hub" else part.label if cfg.source == "files" else "toy world"
    return f"{cfg.source} dataset {source!r} split {split!r} ({part.label})"


def part_batches(cfg: DataConfig, part: Part) -> Iterator[List[str]]:
    """The non-empty documents of ``part``, in source order, in batches of at most READ_BATCH."""
    kind = part.locator[0]
    if kind == "toyworld":
        world = toy_world(cfg)
        docs = world.train_documents if part.split == "train" else world.validation_documents
        yield from (docs[i: i + READ_BATCH] for i in range(0, len(docs), READ_BATCH))
        return
    if kind == "file":
        import datasets

        fmt = file_format(cfg, [part.locator[1]])
        kwargs = {"sample_by": "paragraph"} if fmt == "text" else {}
        rows = datasets.load_dataset(fmt, data_files=[part.locator[1]], split=cfg.split, streaming=True, **kwargs)
        batches = rows.iter(batch_size=READ_BATCH)
    elif kind == "shard":
        _, index, n = part.locator
        batches = _hub(cfg, cfg.split, True).shard(num_shards=n, index=index).iter(batch_size=READ_BATCH)
    elif kind == "rows":
        _, begin, end = part.locator
        rows = _hub(cfg, cfg.split, False)
        batches = (rows[a: min(a + READ_BATCH, end)] for a in range(begin, end, READ_BATCH))
    elif cfg.source == "files":  # ("split", name): a named split of local files
        import datasets

        files = resolve_files(cfg)
        fmt = file_format(cfg, files)
        kwargs = {"sample_by": "paragraph"} if fmt == "text" else {}
        batches = datasets.load_dataset(fmt, data_files=files, split=part.locator[1], streaming=True, **kwargs).iter(
            batch_size=READ_BATCH)
    else:
        batches = _hub(cfg, part.locator[1], cfg.streaming).iter(batch_size=READ_BATCH)
    for batch in batches:
        if cfg.text_field not in batch:
            raise ValueError(
                f"{where(cfg, part)} has no text field {cfg.text_field!r} (fields: {sorted(batch)}); set data.text_field"
            )
        texts = [str(t) for t in batch[cfg.text_field] if t is not None and str(t).strip()]
        if texts:
            yield texts


class Carve:
    """The seeded validation draws of one part, consumed one per document in document order."""

    def __init__(self, cfg: DataConfig, part: Part):
        self.fraction = cfg.validation_fraction if part.carve else 0.0
        self.rng = np.random.default_rng([cfg.seed, part.index]) if self.fraction > 0 else None

    def is_validation(self, count: int) -> np.ndarray:
        """bool [count]: which of the next ``count`` documents go to validation."""
        if self.rng is None:
            return np.zeros(count, dtype=bool)
        return self.rng.random(count) < self.fraction


def train_documents(cfg: DataConfig, parts: List[Part], limit: Optional[int]) -> Iterator[str]:
    """The first ``limit`` (None: all) train documents of the stream, after the carve, in order."""
    count = 0
    for part in parts:
        carve = Carve(cfg, part)
        for texts in part_batches(cfg, part):
            for text, is_val in zip(texts, carve.is_validation(len(texts))):
                if limit is not None and count >= limit:
                    return
                if not is_val:
                    count += 1
                    yield text

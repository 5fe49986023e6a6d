"""One part of a preparation: read its documents, carve validation, tokenize, write its shards.

A part is written into ``WORK/parts/NNNNN.partial-<pid>/`` and renamed to ``WORK/parts/NNNNN/`` only
once complete, so a part folder without ``.partial`` is always whole: a killed preparation resumes
from the parts already in place. Its content depends on the config, the tokenizer and the part alone,
never on the worker that wrote it, which is what makes the prepared bytes independent of the number
of workers. Layout of a finished part::

    part.json              counts, and each split's shards with token counts and SHA-256
    train-00000.bin ...    the part's train documents, EOS after each (at most shard_tokens each)
    train-ends.npy         int64: one past each train document's EOS (for max_documents and counts)
    validation-00000.bin   the part's validation documents, likewise
    validation-ends.npy

This module is what a worker process runs (``run_part``); ``studies.data.prepare`` dispatches it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from studies.atomic_write import write_atomic

from .config import DataConfig
from .ingest import Carve, Part, part_batches
from .packing import ShardWriter, eos_stream

PART_FILE = "part.json"
SPLITS = ("train", "validation")
REPORT_SECONDS = 1.0


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to write one part (picklable)."""

    cfg: DataConfig
    part: Part
    work: str
    dtype: str
    eos_id: int
    config_hash: str


def parts_dir(work) -> Path:
    return Path(work) / "parts"


def read_part(work, part: Part) -> Optional[Dict]:
    """The record of a finished part, or None."""
    file = parts_dir(work) / part.name / PART_FILE
    if not file.is_file():
        return None
    with open(file) as f:
        return json.load(f)


def part_ends(work, part: Part, split: str) -> np.ndarray:
    return np.load(parts_dir(work) / part.name / f"{split}-ends.npy")


def last_needed(work) -> Optional[int]:
    """The last train part the preparation needs, once the main process knows it (parts past it are
    abandoned by the workers)."""
    try:
        return int((parts_dir(work) / "LAST").read_text())
    except (FileNotFoundError, ValueError):
        return None


_TOKENIZERS: Dict[str, object] = {}


def _tokenizer(work: str):
    """The preparation's tokenizer (``WORK/tokenizer.json``), loaded once per process."""
    path = str(Path(work) / "tokenizer.json")
    if path not in _TOKENIZERS:
        from tokenizers import Tokenizer

        _TOKENIZERS.clear()
        _TOKENIZERS[path] = Tokenizer.from_file(path)
    return _TOKENIZERS[path]


class _Reporter:
    """Running counts of a part: to a callback (in-process) or a small file the main process polls."""

    def __init__(self, job: Job, callback: Optional[Callable[[str, int, int], None]]):
        self.callback, self.name = callback, job.part.name
        self.file = None if callback else Path(job.work) / "progress" / job.part.name
        self.last = 0.0

    def __call__(self, documents: int, tokens: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < REPORT_SECONDS:
            return
        self.last = now
        if self.callback is not None:
            self.callback(self.name, documents, tokens)
        else:
            self.file.parent.mkdir(exist_ok=True)
            write_atomic(self.file, f"{documents} {tokens}\n", durable=False)


def run_part(job: Job, on_progress: Optional[Callable[[str, int, int], None]] = None) -> Optional[Dict]:
    """Write part ``job.part`` (or find it written) and return its record; None if it was abandoned
    because the preparation's limits are reached by earlier parts."""
    done = read_part(job.work, job.part)
    if done is not None:
        return done
    cfg, part = job.cfg, job.part
    final = parts_dir(job.work) / part.name
    partial = parts_dir(job.work) / f"{part.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    tokenizer = _tokenizer(job.work)
    writers = {s: ShardWriter(partial, f"{s}-", job.dtype, cfg.shard_tokens) for s in SPLITS}
    ends: Dict[str, List[np.ndarray]] = {s: [] for s in SPLITS}
    tokens = {s: 0 for s in SPLITS}
    documents = {s: 0 for s in SPLITS}
    carve = Carve(cfg, part)
    # A validation source of its own stops at validation_max_documents (the toy world's is kept whole).
    cap = cfg.validation_max_documents if part.split == "validation" and cfg.source != "toyworld" else None
    report = _Reporter(job, on_progress)
    for texts in part_batches(cfg, part):
        if cap is not None:
            texts = texts[: cap - documents["validation"]]
        if part.split == "validation":
            to_validation = np.ones(len(texts), dtype=bool)
        else:
            to_validation = carve.is_validation(len(texts))
        ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
        for split, chosen in (("train", ~to_validation), ("validation", to_validation)):
            picked = [ids[i] for i in np.flatnonzero(chosen)]
            if not picked:
                continue
            stream, doc_ends = eos_stream(picked, job.eos_id)
            writers[split].write(stream)
            ends[split].append(doc_ends + tokens[split])
            tokens[split] += len(stream)
            documents[split] += len(picked)
        report(documents["train"] + documents["validation"], tokens["train"] + tokens["validation"])
        if cap is not None and documents["validation"] >= cap:
            break
        needed = last_needed(job.work)
        if needed is not None and (needed < 0 or part.split == "train" and part.index > needed):
            shutil.rmtree(partial, ignore_errors=True)
            return None
    record = {"part": part.name, "label": part.label, "config_hash": job.config_hash}
    for split in SPLITS:
        all_ends = np.concatenate(ends[split]) if ends[split] else np.zeros(0, dtype=np.int64)
        np.save(partial / f"{split}-ends.npy", all_ends.astype(np.int64))
        record[split] = {"documents": documents[split], "tokens": tokens[split], "shards": writers[split].close()}
    write_atomic(partial / PART_FILE, json.dumps(record, indent=1, sort_keys=True))
    try:
        os.rename(partial, final)
    except OSError:  # written meanwhile by a worker of an earlier, killed run: the same bytes
        if not (final / PART_FILE).is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)
    report(documents["train"] + documents["validation"], tokens["train"] + tokens["validation"], force=True)
    return read_part(job.work, part)


def worker_init(parent_pid: int) -> None:
    """Initializer of a preparation worker: one tokenizer thread per worker (the workers are the
    parallelism), no torch, and death with the main process, so that a killed preparation leaves no
    writers behind."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["USE_TORCH"] = "0"  # else datasets imports torch (seconds) for every IterableDataset
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the per-process partial folders still keep parts whole
        pass
    if os.getppid() != parent_pid:
        os._exit(1)

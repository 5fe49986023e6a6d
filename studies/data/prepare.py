"""Prepare a dataset: tokenizer, then parts in parallel, then one atomic finalisation.

The prepared folder and its name, a hash of everything that determines its bytes, are described in
``studies.data.layout``: re-running with the same config finds and reuses the prepared data.

A preparation works in ``cache_dir/.prepare-<final name>/`` (WORK) under an exclusive ``flock`` of
``WORK/lock``: a second process preparing the same config waits, then reuses the finished folder.

1. Tokenizer: trained on the first ``tokenizer.train_documents`` train documents in stream order,
   loaded from ``tokenizer.path``, or pretrained; saved as ``WORK/tokenizer.json``.
2. Parts (``studies.data.ingest``): written by ``workers`` processes into ``WORK/parts/NNNNN/``
   (``studies.data.parts``), dispatched in order; none is started once the finished prefix reaches
   ``max_tokens``/``max_documents``. A killed preparation resumes from the parts in place.
3. Finalisation (``studies.data.finalise``): ``WORK/final.partial/`` gets the needed parts' shards (hard links; the last train
   shard truncated at exactly ``max_tokens``), the tokenizer, the tasks and ``metadata.json``, and is
   renamed to the final folder; WORK is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from studies.atomic_write import write_atomic

from .config import DataConfig, to_config
from .layout import config_hash, content_config, content_hash, dataset_dir, load_metadata, work_dir

log = logging.getLogger(__name__)


def _check_existing(folder: Path, digest: str) -> None:
    meta = load_metadata(folder)
    if meta.get("config_hash") != digest:
        raise FileExistsError(
            f"{folder} holds a different dataset (config hash {meta.get('config_hash')}, expected {digest}); "
            "it is never overwritten: move it away or use another data.cache_dir"
        )


def is_prepared(cfg) -> bool:
    """Whether ``cfg``'s dataset is prepared and complete (its folder exists with its own hash)."""
    cfg = to_config(cfg)
    digest = config_hash(cfg)
    try:
        return load_metadata(dataset_dir(cfg, digest)).get("config_hash") == digest
    except FileNotFoundError:
        return False


def preparation_running(cfg) -> bool:
    """Whether a live process is preparing ``cfg`` now (holds its lock); a non-blocking probe."""
    lock = work_dir(dataset_dir(to_config(cfg))) / "lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def _locked(work: Path):
    """Hold the exclusive lock of ``work`` (waiting for another holder). The holder that finishes
    removes ``work``, lock file included, so a waiter checks that it locked the file still in place."""
    while True:
        try:
            work.mkdir(parents=True, exist_ok=True)
            fd = os.open(work / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # removed between mkdir and open by a finishing holder
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            log.info("waiting for process %s, which is preparing this dataset (%s)", holder, work)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(work / "lock").st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def prepare_dataset(cfg, workers: Optional[int] = None, progress: bool = True) -> Path:
    """Build (or reuse) the prepared dataset of ``cfg`` and return its folder.

    ``workers`` processes write the parts (None: ``cfg.num_proc``; 1: in this process). The result is
    the same bytes for any ``workers``, and a preparation that was killed resumes where it stopped.
    """
    cfg = to_config(cfg)
    workers = cfg.num_proc if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1")
    content = content_config(cfg)
    digest = content_hash(content)
    final = dataset_dir(cfg, digest)
    work = work_dir(final)
    if final.exists() and not work.exists():
        _check_existing(final, digest)
        log.info("reusing prepared dataset %s", final)
        return final
    with _locked(work):
        if final.exists():  # finished by the process we waited for (or killed before removing WORK)
            _check_existing(final, digest)
            shutil.rmtree(work, ignore_errors=True)
            log.info("reusing prepared dataset %s", final)
            return final
        try:
            _build(cfg, work, final, content, workers, progress)
        except BaseException:
            from .parts import parts_dir

            done = [p for p in parts_dir(work).glob("[0-9]*") if ".partial" not in p.name] if parts_dir(work).is_dir() else []
            if not done:  # nothing worth resuming: leave no trace
                shutil.rmtree(work, ignore_errors=True)
            else:
                log.info("%d finished parts kept in %s; rerun to resume", len(done), work)
            raise
        shutil.rmtree(work, ignore_errors=True)
    log.info("prepared dataset %s", final)
    return final


# ---- the stages ------------------------------------------------------------------------------------

def _tokenizer_stage(cfg: DataConfig, work: Path, train_parts) -> Tuple[object, Dict]:
    """Make (or, resuming, reload) ``WORK/tokenizer.json``; return it and its description."""
    from tokenizers import Tokenizer

    from . import tokenizer as tok
    from .ingest import train_documents, where

    path, described = work / "tokenizer.json", work / "tokenizer-meta.json"
    if path.is_file() and described.is_file():
        return Tokenizer.from_file(str(path)), json.loads(described.read_text())
    if cfg.tokenizer.pretrained is not None:
        tokenizer, tokens, info = tok.load_pretrained(cfg.tokenizer)
        info = {"kind": "pretrained", **info}
        log.info("loaded pretrained tokenizer %s", cfg.tokenizer.pretrained)
    elif cfg.tokenizer.path is not None:
        tokenizer, tokens = tok.load_tokenizer(cfg.tokenizer.path, cfg.tokenizer), tok.special_tokens(cfg.tokenizer)
        info = {"kind": "file", "path": cfg.tokenizer.path}
    else:
        limits = [n for n in (cfg.tokenizer.train_documents, cfg.max_documents) if n is not None]
        limit = min(limits) if limits else None
        count = 0

        def counted():
            nonlocal count
            for text in train_documents(cfg, train_parts, limit):
                count += 1
                yield text

        log.info("training a %d-token BPE on the first %s train documents", cfg.tokenizer.vocab_size,
                 "all" if limit is None else f"{limit:,}")
        tokenizer = tok.train_bpe(counted(), cfg.tokenizer)
        if count == 0:
            raise ValueError(f"{where(cfg, train_parts[0])} holds no non-empty documents in field "
                             f"{cfg.text_field!r}; nothing to prepare")
        tokens, info = tok.special_tokens(cfg.tokenizer), {"kind": "trained", "documents": count}
    described_text = json.dumps({"special_tokens": tokens, "tokenizer": info}, indent=1, sort_keys=True)
    write_atomic(path, tokenizer.to_str(pretty=True).encode())  # the bytes of tokenizer.save(path)
    write_atomic(described, described_text)
    return Tokenizer.from_file(str(path)), json.loads(described_text)


def _needed_prefix(cfg: DataConfig, records: List[Optional[Dict]]) -> Optional[int]:
    """Index of the last train part needed, once the finished prefix reaches the limits or every
    part is finished; None while unknown."""
    tokens = documents = 0
    for i, record in enumerate(records):
        if record is None:
            return None
        tokens += record["train"]["tokens"]
        documents += record["train"]["documents"]
        if (cfg.max_tokens is not None and tokens >= cfg.max_tokens) or (
                cfg.max_documents is not None and documents >= cfg.max_documents):
            return i
    return len(records) - 1


def _build(cfg: DataConfig, work: Path, final: Path, content: Dict, workers: int, show_progress: bool) -> None:
    from . import ingest, packing, tokenizer as tok
    from .finalise import finalise
    from .parts import Job, parts_dir, read_part
    from .progress import Progress

    for stale in list(parts_dir(work).glob("*.partial-*")) + [work / "final.partial", work / "progress"]:
        shutil.rmtree(stale, ignore_errors=True)
    parts_dir(work).mkdir(exist_ok=True)
    (parts_dir(work) / "LAST").unlink(missing_ok=True)
    world = ingest.toy_world(cfg) if cfg.source == "toyworld" else None
    train_parts = ingest.train_parts(cfg)
    val_part = ingest.validation_part(cfg)
    tokenizer, described = _tokenizer_stage(cfg, work, train_parts)
    vocab = tok.vocab_size(tokenizer)
    dtype = packing.choose_dtype(vocab, cfg.token_dtype)
    ids = tok.special_ids(tokenizer, described["special_tokens"])

    digest = content_hash(content)
    jobs = [Job(cfg, p, str(work), dtype, ids["eos"], digest) for p in ([val_part] if val_part else []) + train_parts]
    progress = Progress(len(jobs), cfg.max_tokens, enabled=show_progress)
    records: Dict[str, Dict] = {}
    for job in jobs:
        record = read_part(work, job.part)
        if record is not None:
            records[job.part.name] = record
            progress.resumed(job.part.name, *_counts(record))
    if records:
        log.info("resuming: %d of %d parts already prepared in %s", len(records), len(jobs), work)
    log.info("preparing %d parts with %d worker%s", len(jobs), workers, "s" * (workers > 1))
    try:
        _run_parts(cfg, jobs, records, workers, progress, work)
    finally:
        progress.close()
    last = _needed_prefix(cfg, [records.get(p.name) for p in train_parts])
    finalise(cfg, work, final, content, train_parts[: last + 1], len(train_parts), val_part, records, tokenizer,
             described, dtype, ids, world)


def _counts(record: Dict) -> Tuple[int, int]:
    return (sum(record[s]["documents"] for s in ("train", "validation")),
            sum(record[s]["tokens"] for s in ("train", "validation")))


def _part_error(error: BaseException, job) -> BaseException:
    """The worker's error, naming the part (same type where it can be rebuilt from a message)."""
    message = f"part {job.part.name} ({job.part.label}): {str(error).strip() or type(error).__name__}"
    try:
        renamed = type(error)(message)
    except Exception:
        renamed = RuntimeError(f"{type(error).__name__}: {message}")
    renamed.__cause__ = error
    return renamed


def _run_parts(cfg: DataConfig, jobs, records: Dict[str, Dict], workers: int, progress, work: Path) -> None:
    """Run the unfinished parts in order on ``workers`` processes until the limits are reached."""
    from .parts import parts_dir, run_part

    train_names = [j.part.name for j in jobs if j.part.split == "train"]

    def last_needed():
        return _needed_prefix(cfg, [records.get(n) for n in train_names])

    def wanted(job) -> bool:
        last = last_needed()
        return job.part.split != "train" or last is None or job.part.index <= last

    pending = [j for j in jobs if j.part.name not in records]
    if workers == 1 or len(pending) <= 1:  # one part: a worker process would only add its start-up
        for job in pending:
            if not wanted(job):
                continue
            try:
                record = run_part(job, on_progress=progress.update)
            except Exception as error:
                raise _part_error(error, job) from error
            records[job.part.name] = record
            progress.finished(job.part.name, *_counts(record))
        return

    import concurrent.futures as cf
    import multiprocessing

    from .parts import worker_init

    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=worker_init,
                                initargs=(os.getpid(),)) as pool:
        running: Dict[cf.Future, object] = {}
        queue = list(pending)
        announced = False
        try:
            while queue or running:
                while queue and len(running) < workers:
                    job = queue.pop(0)
                    if wanted(job):
                        running[pool.submit(run_part, job)] = job
                if not running:
                    break
                done, _ = cf.wait(running, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    error = future.exception()
                    if error is not None:
                        if wanted(job):
                            raise _part_error(error, job) from error
                        log.warning("part %s, not needed, failed: %s", job.part.name, error)
                        continue
                    record = future.result()
                    if record is not None:
                        records[job.part.name] = record
                        progress.finished(job.part.name, *_counts(record))
                if not announced and (cfg.max_tokens is not None or cfg.max_documents is not None):
                    last = last_needed()
                    if last is not None:  # running parts past it are abandoned
                        (parts_dir(work) / "LAST").write_text(str(last))
                        announced = True
                progress.poll(work / "progress")
        except BaseException:
            # Running workers abandon their parts at their next batch (finished parts stay for a resume).
            (parts_dir(work) / "LAST").write_text("-1")
            raise

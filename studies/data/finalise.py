"""Finalisation: the prepared folder, built from the finished parts and renamed into place at once.

The train split is the concatenation of the needed parts' train streams, cut at exactly
``max_tokens`` (the last shard copied truncated) or after ``max_documents`` documents; the validation
split is a validation source's part, or the concatenation of those parts' carved validation
documents cut after ``validation_max_documents``. Whole shards are hard links to the parts' files
(copies where links are refused). ``metadata.json`` lists every shard with its token count and
SHA-256, and nothing that depends on time, host or worker count.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .config import DataConfig


def _stream_plan(parts, split: str, work: Path, records: Dict[str, Dict], max_tokens: Optional[int],
                 max_documents: Optional[int]) -> Tuple[int, int, List[Tuple]]:
    """The concatenation of ``parts``' ``split`` streams cut at ``max_tokens``/``max_documents``:
    (documents, tokens, [(part, shard record, tokens kept)])."""
    from .parts import part_ends

    documents = tokens = 0
    plan: List[Tuple] = []
    for part in parts:
        record = records[part.name][split]
        keep_tokens, keep_documents, cut = record["tokens"], record["documents"], False
        if max_documents is not None and documents + keep_documents >= max_documents:
            keep_documents = max_documents - documents
            keep_tokens = int(part_ends(work, part, split)[keep_documents - 1]) if keep_documents else 0
            cut = True
        if max_tokens is not None and tokens + keep_tokens >= max_tokens:
            keep_tokens = max_tokens - tokens
            ends = part_ends(work, part, split)
            # documents started within the kept tokens: the last one may be cut
            keep_documents = min(len(ends), int(np.searchsorted(ends, keep_tokens, side="left")) + 1) if keep_tokens else 0
            cut = True
        left = keep_tokens
        for shard in record["shards"]:
            if left == 0:
                break
            plan.append((part, shard, min(left, shard["tokens"])))
            left -= min(left, shard["tokens"])
        documents += keep_documents
        tokens += keep_tokens
        if cut:
            break
    return documents, tokens, plan


def _write_split(plan, split: str, folder: Path, work: Path, itemsize: int) -> List[Dict]:
    from .packing import place_shard
    from .parts import parts_dir

    (folder / split).mkdir(parents=True)
    shards = []
    for part, shard, tokens in plan:
        index = shard["file"].rsplit("-", 1)[1]  # "train-00001.bin" -> "00001.bin"
        name = f"{split}/{part.index:05d}-{index}"
        whole = tokens == shard["tokens"]
        digest = place_shard(parts_dir(work) / part.name / shard["file"], folder / name, tokens, itemsize, whole)
        shards.append({"file": name, "tokens": tokens, "sha256": shard["sha256"] if whole else digest})
    return shards


def finalise(cfg: DataConfig, work: Path, final: Path, content: Dict, train_parts, source_parts: int, val_part,
              records, tokenizer, described: Dict, dtype: str, ids: Dict[str, int], world) -> None:
    """Build ``WORK/final.partial`` from the finished parts and rename it to ``final``. ``content`` is the
    dataset's ``content_config``, computed once by the preparation."""
    from . import tokenizer as tok
    from .layout import FORMAT_VERSION, content_hash

    out = work / "final.partial"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    itemsize = np.dtype(dtype).itemsize
    splits = {}
    documents, tokens, plan = _stream_plan(train_parts, "train", work, records, cfg.max_tokens, cfg.max_documents)
    if tokens == 0:
        raise ValueError(f"the training split of {cfg.source} dataset {cfg.name or cfg.files or ''} tokenized to "
                         "zero tokens: it holds no non-empty documents")
    splits["train"] = {"documents": documents, "tokens": tokens, "parts": len(train_parts),
                       "shards": _write_split(plan, "train", out, work, itemsize)}
    if val_part is not None:
        val_parts, cap = [val_part], None
    else:
        val_parts, cap = train_parts, cfg.validation_max_documents
    documents, tokens, plan = _stream_plan(val_parts, "validation", work, records, None, cap)
    splits["validation"] = {"documents": documents, "tokens": tokens, "parts": len(val_parts),
                            "shards": _write_split(plan, "validation", out, work, itemsize)}
    shutil.copyfile(work / "tokenizer.json", out / "tokenizer.json")
    meta = {
        "format_version": FORMAT_VERSION,
        "config_hash": content_hash(content),
        "source": cfg.source,
        "name": cfg.name,
        "subset": cfg.subset,
        "files": list(cfg.files),
        "split": cfg.split,
        "validation_split": cfg.validation_split,
        "tokenizer": described["tokenizer"],
        "tokenizer_hash": tok.tokenizer_hash(tokenizer),
        "vocab_size": tok.vocab_size(tokenizer),
        "special_ids": ids,
        "special_tokens": described["special_tokens"],
        "dtype": dtype,
        "documents": splits["train"]["documents"],
        "tokens": splits["train"]["tokens"],
        "source_parts": source_parts,
        "splits": splits,
        "config": content,
    }
    if world is not None:
        from studies.toyworld.world import write_tasks

        meta["tasks"] = write_tasks(world, out / "tasks")
        meta["toyworld"] = {"people": len(world.people), "qa_people": sum(p.in_qa for p in world.people)}
    with open(out / "metadata.json", "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())  # a folder renamed into place is complete, even after a crash of the node
    os.rename(out, final)

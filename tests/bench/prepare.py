"""Benchmark: how close does preparation come to the tokenizer's own speed, and what does a 350B-token
corpus cost?

Builds a local corpus in the hub's layout (``data/train-*.parquet``, seeded synthetic English-like
text: Zipf-distributed pseudo-words in sentences and paragraphs), trains a byte-level BPE of
``--vocab`` tokens on a sample of it, then prints

- the ceiling: ``tokenizers`` ``encode_batch`` alone on the same texts in one process, single-threaded
  (``TOKENIZERS_PARALLELISM=false``, as a preparation worker runs) and with its default thread pool;
- preparation tokens/s (``prepare_dataset`` with the tokenizer given as a file) with 1 worker
  single-threaded, 1 worker with the default thread pool, and 2 workers: end to end, and steady state
  (the time of preparing a one-document corpus, the fixed cost of starting up, subtracted);
- each worker's fraction of the single-threaded ceiling (the goal is >= 80%);
- hours to prepare 350e9 tokens with 16 and 64 workers, assuming linear scaling of the steady-state
  per-worker rate (cores, memory bandwidth and input reading all scaling with the workers).

    python tests/bench/prepare.py [--megabytes 20] [--vocab 32768] [--dir /tmp/prepare-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
TARGET_FRACTION = 0.8
CORPUS_TOKENS = 350e9


def synthetic_corpus(folder: Path, megabytes: float, files: int = 16, seed: int = 0) -> int:
    """English-like text: 30k pseudo-words (syllable strings) with Zipf frequencies, sentences of 5-30
    words, documents of 1-12 paragraphs. Returns the number of documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "b c d f g h j k l m n p r s t v w y z br ch sh st th tr".split() for v in
                 "a e i o u ai ea ee ie oo ou".split()]
    lengths = rng.choice([1, 2, 3, 4], size=30000, p=[0.3, 0.4, 0.2, 0.1])
    words = np.array(["".join(rng.choice(syllables, size=n)) for n in lengths])
    zipf = 1.0 / np.arange(1, len(words) + 1) ** 1.07
    zipf /= zipf.sum()
    folder.mkdir(parents=True)
    (folder / "data").mkdir()
    per_file, documents = megabytes * 1e6 / files, 0
    for f in range(files):
        stream = words[rng.choice(len(words), size=int(per_file / 5) + 1000, p=zipf)]  # ~6 characters a word
        texts, size, at = [], 0, 0
        while size < per_file and at < len(stream) - 1000:
            paragraphs = []
            for _ in range(int(rng.integers(1, 13))):
                sentences = []
                for n in rng.integers(5, 31, size=int(rng.integers(2, 8))):
                    sentence = " ".join(stream[at: at + n])
                    at = at + n if at + n < len(stream) - 1000 else 0
                    sentences.append(sentence[0].upper() + sentence[1:] + ".?!."[int(rng.integers(4))])
                paragraphs.append(" ".join(sentences))
            text = "\n\n".join(paragraphs)
            texts.append(text)
            size += len(text)
        pq.write_table(pa.table({"id": [f"{f}-{i}" for i in range(len(texts))], "text": texts,
                                 "url": [f"https://example.org/{f}/{i}" for i in range(len(texts))]}),
                       folder / "data" / f"train-{f:05d}-of-{files:05d}.parquet")
        documents += len(texts)
    return documents


def train_tokenizer(corpus: Path, vocab: int, path: Path, sample_documents: int = 4000) -> None:
    import pyarrow.parquet as pq

    from studies.data.config import TokenizerConfig
    from studies.data.tokenizer import train_bpe

    texts = []
    for file in sorted((corpus / "data").glob("*.parquet")):
        texts += pq.read_table(file, columns=["text"]).column("text").to_pylist()
        if len(texts) >= sample_documents:
            break
    train_bpe(texts[:sample_documents], TokenizerConfig(vocab_size=vocab)).save(str(path))


CEILING = """
import sys, time, pyarrow.parquet as pq
from pathlib import Path
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2])
texts = [t for f in sorted(Path(sys.argv[1], "data").glob("*.parquet"))
         for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
tok.encode_batch(texts[:100], add_special_tokens=False)
start, cpu, tokens = time.perf_counter(), time.process_time(), 0
for i in range(0, len(texts), 1000):
    tokens += sum(len(e.ids) for e in tok.encode_batch(texts[i:i + 1000], add_special_tokens=False))
print(tokens, time.perf_counter() - start, time.process_time() - cpu)
"""

PREPARE = """
import json, resource, sys, time
from studies.data.config import DataConfig, TokenizerConfig
from studies.data.layout import load_metadata
from studies.data.prepare import prepare_dataset
cfg = DataConfig(source="hub", name=sys.argv[1], cache_dir=sys.argv[3], validation_fraction=0.0,
                 tokenizer=TokenizerConfig(path=sys.argv[2]))
def cpu():  # this process and its finished children (the workers, joined at the end)
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
start, cpu0 = time.perf_counter(), cpu()
folder = prepare_dataset(cfg, workers=int(sys.argv[4]), progress=False)
print(load_metadata(folder)["tokens"], time.perf_counter() - start, cpu() - cpu0)
"""


def _run(code: str, args, env_extra=None):
    env = {**os.environ, "USE_TORCH": "0", **(env_extra or {})}  # as the command line runs
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True)
    tokens, seconds, cpu = out.stdout.split()
    return int(tokens), float(seconds), float(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--dir", default="/tmp/prepare-bench")
    args = parser.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    documents = synthetic_corpus(root / "corpus", args.megabytes)
    synthetic_corpus(root / "tiny", 0.0002, files=2)  # one document per worker: their start-up cost
    print(f"corpus      {args.megabytes:g} MB, {documents:,} documents, 16 parquet files "
          f"({time.perf_counter() - start:.1f} s to write)")
    start = time.perf_counter()
    tokenizer = root / "tokenizer.json"
    train_tokenizer(root / "corpus", args.vocab, tokenizer)
    print(f"tokenizer   byte-level BPE, {args.vocab:,} tokens, trained on 4,000 documents "
          f"({time.perf_counter() - start:.1f} s)")

    single = {"TOKENIZERS_PARALLELISM": "false"}
    tokens, seconds, cpu = _run(CEILING, [root / "corpus", tokenizer], single)
    ceiling, ceiling_cpu = tokens / seconds, tokens / cpu
    print(f"ceiling     encode_batch, 1 thread:          {ceiling:12,.0f} tokens/s wall, {ceiling_cpu:12,.0f} per CPU-second"
          f"  ({tokens:,} tokens)")
    tokens_mt, seconds_mt, _ = _run(CEILING, [root / "corpus", tokenizer])
    print(f"ceiling     encode_batch, default threads:   {tokens_mt / seconds_mt:12,.0f} tokens/s wall ({os.cpu_count()} cores)")

    rows = []
    for label, workers, env in (("1 worker, 1 thread", 1, single), ("1 worker, default threads", 1, None),
                                ("2 workers, 1 thread each", 2, None)):
        tokens, seconds, cpu = _run(PREPARE, [root / "corpus", tokenizer, root / f"cache-{len(rows)}", workers], env)
        _, fixed, fixed_cpu = _run(PREPARE, [root / "tiny", tokenizer, root / f"tiny-{len(rows)}", workers], env)
        steady, steady_cpu = tokens / max(seconds - fixed, 1e-9), tokens / max(cpu - fixed_cpu, 1e-9)
        rows.append((label, workers, steady, steady_cpu))
        print(f"prepare     {label:27s}  {tokens / seconds:12,.0f} tokens/s end to end ({seconds:.1f} s), steady "
              f"{steady:12,.0f} wall, {steady_cpu:12,.0f} per CPU-second (fixed cost {fixed:.1f} s, {fixed_cpu:.1f} CPU-s)")
    folders = [sorted((root / f"cache-{i}").iterdir())[0] for i in range(len(rows))]
    same = all((f / "metadata.json").read_bytes() == (folders[0] / "metadata.json").read_bytes() for f in folders)
    print(f"identical   metadata.json (every shard's sha256) of the three preparations: {same}")

    # A worker's share of the ceiling: by CPU-seconds, so that other load on the machine does not count.
    fractions = {}
    for label, workers, steady, steady_cpu in rows:
        fractions[label] = steady_cpu / ceiling_cpu
        print(f"per worker  {label:27s}  {steady / workers / ceiling:6.1%} of the 1-thread ceiling by wall time, "
              f"{fractions[label]:6.1%} by CPU time (goal >= {TARGET_FRACTION:.0%})")
    rate = rows[0][3]  # one single-threaded worker, steady state, per CPU-second
    for workers in (16, 64):
        hours = CORPUS_TOKENS / (rate * workers) / 3600
        print(f"projection  {CORPUS_TOKENS:.3g} tokens with {workers} workers: {hours:6.1f} h "
              f"(assumes {rate:,.0f} tokens/s per worker on a core of its own, scaling linearly)")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if fractions["2 workers, 1 thread each"] >= TARGET_FRACTION else 1


if __name__ == "__main__":
    sys.exit(main())

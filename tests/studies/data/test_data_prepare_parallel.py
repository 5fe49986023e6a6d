"""Parallel, resumable preparation: the prepared bytes do not depend on the number of workers, on a
SIGKILL and a resume, or on how far past a max_tokens limit the workers ran; checksums hold.

The corpus is a local folder in the hub's layout (``data/train-*.parquet`` with ``id``, ``text`` and
``url`` columns, as fineweb-edu ships), read through the ``hub`` source without any network."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from studies.data.config import DataConfig, TokenizerConfig
from studies.data.layout import dataset_dir, file_digest, load_metadata, work_dir
from studies.data.prepare import is_prepared, preparation_running, prepare_dataset

REPO = Path(__file__).resolve().parents[3]
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no will more can its who about out "
         "river mountain village scholar engine harvest lantern winter market letter garden signal orchard copper "
         "history method careful quickly between across because although whenever quiet bright distant ancient").split()
FILES, DOCS_PER_FILE = 8, 600


def write_corpus(folder: Path, files: int = FILES, docs: int = DOCS_PER_FILE, seed: int = 0) -> Path:
    """Zipf-distributed words in documents of 20-300 words; one whitespace-only document per file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    p = np.arange(1, len(WORDS) + 1, dtype=float) ** -1.1
    p /= p.sum()
    (folder / "data").mkdir(parents=True)
    for f in range(files):
        texts = [" ".join(WORDS[i] for i in rng.choice(len(WORDS), size=int(rng.integers(20, 300)), p=p)).capitalize() + "."
                 for _ in range(docs)]
        texts[3] = "  \n "
        table = pa.table({"id": [f"{f}-{d}" for d in range(docs)], "text": texts,
                          "url": [f"https://example.org/{f}/{d}" for d in range(docs)]})
        pq.write_table(table, folder / "data" / f"train-{f:05d}-of-{files:05d}.parquet")
    return folder


def hub_config(corpus: Path, cache: Path, **overrides) -> DataConfig:
    values = dict(source="hub", name=str(corpus), cache_dir=str(cache), validation_fraction=0.02,
                  validation_max_documents=100, shard_tokens=100_000,
                  tokenizer=TokenizerConfig(vocab_size=400, train_documents=300))
    values.update(overrides)
    return DataConfig(**values)


def folder_bytes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_stream(folder: Path, split: str) -> np.ndarray:
    meta = load_metadata(folder)
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    return np.concatenate([np.fromfile(folder / s["file"], dtype=dtype) for s in meta["splits"][split]["shards"]])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "webtext")


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The corpus prepared in this process (workers=1), uninterrupted."""
    return prepare_dataset(hub_config(corpus, tmp_path_factory.mktemp("reference")), workers=1, progress=False)


def test_workers_do_not_change_a_byte_and_checksums_hold(corpus, reference, tmp_path):
    two = prepare_dataset(hub_config(corpus, tmp_path), workers=2, progress=False)
    assert two.name == reference.name
    assert folder_bytes(two) == folder_bytes(reference)  # metadata.json included
    meta = load_metadata(two)
    assert meta["format_version"] == 2 and meta["source_parts"] == FILES
    assert not {"time", "host", "workers", "elapsed"} & set(meta)
    for split in ("train", "validation"):
        info = meta["splits"][split]
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"])
        for shard in info["shards"]:
            assert (two / shard["file"]).stat().st_size == shard["tokens"] * 2  # uint16
            assert file_digest(two / shard["file"]) == shard["sha256"]
    # Every non-empty document is in exactly one split; the validation cap keeps the first 100 chosen.
    assert meta["splits"]["validation"]["documents"] == 100
    eos = meta["special_ids"]["eos"]
    assert int((read_stream(two, "train") == eos).sum()) == meta["documents"]
    assert meta["splits"]["train"]["shards"][0]["file"] == "train/00000-00000.bin"
    assert not work_dir(two).exists() and is_prepared(hub_config(corpus, tmp_path))
    assert not preparation_running(hub_config(corpus, tmp_path))


def test_the_carve_is_a_seeded_draw_per_part(corpus, reference):
    """Document j of part p is validation iff the j-th draw of default_rng([seed, p]) is < fraction;
    the validation split is the first validation_max_documents chosen, in part order."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(reference / "tokenizer.json"))
    expected_val, expected_train_head = [], []
    for p, file in enumerate(sorted((corpus / "data").glob("*.parquet"))):
        texts = [t for t in pq.read_table(file).column("text").to_pylist() if t.strip()]
        chosen = np.random.default_rng([0, p]).random(len(texts)) < 0.02
        expected_val += [t for t, c in zip(texts, chosen) if c]
        if p == 0:
            expected_train_head = [t for t, c in zip(texts, chosen) if not c][:20]
    meta = load_metadata(reference)
    eos = meta["special_ids"]["eos"]

    def documents(split, n):
        stream = read_stream(reference, split)
        ends = np.flatnonzero(stream == eos)[:n]
        starts = np.concatenate([[0], ends[:-1] + 1])
        return [tok.decode(stream[a:b].tolist()) for a, b in zip(starts, ends)]

    assert documents("validation", 100) == expected_val[:100]
    assert documents("train", 20) == expected_train_head


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_way_then_resume_gives_the_same_bytes(corpus, reference, tmp_path, workers):
    cfg = hub_config(corpus, tmp_path / "cache")
    config_file = tmp_path / "data.yaml"
    config_file.write_text(
        f"source: hub\nname: {corpus}\ncache_dir: {tmp_path / 'cache'}\nvalidation_fraction: 0.02\n"
        "validation_max_documents: 100\nshard_tokens: 100000\ntokenizer: {vocab_size: 400, train_documents: 300}\n")
    command = [sys.executable, "-m", "studies.data", "prepare", str(config_file), "--workers", str(workers)]
    final, work = dataset_dir(cfg), work_dir(dataset_dir(cfg))
    parts = work / "parts"
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and any(p.name.isdigit() for p in parts.iterdir()):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in parts.iterdir() if p.name.isdigit())
    assert 1 <= len(finished) < FILES and not final.exists(), "the kill should land after a part and before the end"
    time.sleep(0.2)  # the workers die with the main process (PR_SET_PDEATHSIG)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(final)
    assert f"resuming: {len(finished)}" in done.stderr
    assert folder_bytes(final) == folder_bytes(reference)
    assert not work.exists() and [p.name for p in (tmp_path / "cache").iterdir()] == [final.name]


def test_max_tokens_is_an_exact_prefix_for_any_workers(corpus, reference, tmp_path):
    full = read_stream(reference, "train")
    per_part = [s["tokens"] for s in load_metadata(reference)["splits"]["train"]["shards"]]
    limit = int(sum(per_part) * 0.3) + 17  # inside the third part, mid-shard
    folders = [prepare_dataset(hub_config(corpus, tmp_path / f"w{w}", max_tokens=limit), workers=w, progress=False)
               for w in (1, 2)]
    assert folder_bytes(folders[0]) == folder_bytes(folders[1])
    meta = load_metadata(folders[0])
    train = read_stream(folders[0], "train")
    assert meta["tokens"] == len(train) == limit
    assert np.array_equal(train, full[:limit])  # same tokenizer: max_tokens does not change it
    shards = meta["splits"]["train"]["shards"]
    last_file = shards[-1]["file"]
    part = last_file.split("/")[1].split("-")[0]
    full_shard = next(s for s in load_metadata(reference)["splits"]["train"]["shards"] if s["file"] == last_file)
    assert shards[-1]["tokens"] < full_shard["tokens"]  # the last shard is written truncated
    assert file_digest(folders[0] / last_file) == shards[-1]["sha256"]
    assert meta["splits"]["train"]["parts"] == int(part) + 1 < FILES
    eos = meta["special_ids"]["eos"]
    assert meta["documents"] == int((train == eos).sum()) + (train[-1] != eos)


def test_max_documents_cuts_after_a_document(corpus, reference, tmp_path):
    folder = prepare_dataset(hub_config(corpus, tmp_path, max_documents=2000), workers=1, progress=False)
    meta = load_metadata(folder)
    train = read_stream(folder, "train")
    eos = meta["special_ids"]["eos"]
    assert meta["documents"] == 2000 == int((train == eos).sum()) and train[-1] == eos
    # the tokenizer is trained on the first min(train_documents, max_documents) documents: the same here
    assert np.array_equal(train, read_stream(reference, "train")[: len(train)])


def test_a_failing_part_is_named_and_finished_parts_are_kept(tmp_path):
    corpus = write_corpus(tmp_path / "broken", files=3, docs=200)
    (corpus / "data" / "train-00002-of-00003.parquet").write_bytes(b"PAR1 this is not a parquet file")
    cfg = hub_config(corpus, tmp_path / "cache", tokenizer=TokenizerConfig(vocab_size=300, train_documents=50))
    with pytest.raises(Exception, match=r"part 00002 \(shard 3 of 3\)"):
        prepare_dataset(cfg, workers=2, progress=False)
    assert not dataset_dir(cfg).exists()
    # part 2 starts once part 0 or 1 is finished; a part still running when it fails is abandoned
    kept = {p.name for p in (work_dir(dataset_dir(cfg)) / "parts").iterdir() if p.name.isdigit()}
    assert kept and kept <= {"00000", "00001"}
    assert not preparation_running(cfg)


def test_the_lock_is_seen_by_the_launcher_probe(corpus, tmp_path):
    from studies.data.prepare import _locked

    config_file = tmp_path / "data.yaml"
    config_file.write_text(
        f"source: hub\nname: {corpus}\ncache_dir: {tmp_path}\nvalidation_fraction: 0.02\n"
        "validation_max_documents: 100\nshard_tokens: 100000\ntokenizer: {vocab_size: 400, train_documents: 300}\n")
    cfg = hub_config(corpus, tmp_path)
    probe = [sys.executable, "-c", "import sys; from studies.data.__main__ import load_config; "
             "from studies.data.prepare import preparation_running; "
             f"sys.exit(0 if preparation_running(load_config({str(config_file)!r}, [])) else 1)"]
    assert not preparation_running(cfg) and not is_prepared(cfg)
    with _locked(work_dir(dataset_dir(cfg))):
        assert preparation_running(cfg)
        assert subprocess.run(probe, cwd=REPO, capture_output=True, timeout=60).returncode == 0
    assert not preparation_running(cfg)
    assert subprocess.run(probe, cwd=REPO, capture_output=True, timeout=60).returncode == 1


def test_workers_must_be_positive(tmp_path, capsys):
    from studies.data.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "-", f"cache_dir={tmp_path}", "--workers", "0"])
    assert exit_info.value.code == 2
    assert "--workers must be >= 1 (got 0)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workers=0 must be an integer >= 1"):
        prepare_dataset(DataConfig(cache_dir=str(tmp_path)), workers=0)
    assert not any(tmp_path.iterdir())


def test_a_downloaded_split_and_a_named_validation_split(tmp_path):
    """streaming: false reads the hub split whole (parts of ROWS_PER_PART rows); validation_split takes
    the first validation_max_documents documents of that split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "two_splits"
    (corpus / "data").mkdir(parents=True)
    train = [f"Training document {i} about {WORDS[i % len(WORDS)]} and more." for i in range(300)]
    val = [f"Held-out document {i} on {WORDS[-1 - i % 20]}." for i in range(40)]
    pq.write_table(pa.table({"text": train, "id": list(range(300))}), corpus / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": val, "id": list(range(40))}), corpus / "data" / "validation-00000-of-00001.parquet")
    cfg = hub_config(corpus, tmp_path / "cache", streaming=False, validation_split="validation",
                     validation_max_documents=25, tokenizer=TokenizerConfig(vocab_size=300, min_frequency=1))
    folder = prepare_dataset(cfg, workers=1, progress=False)
    meta = load_metadata(folder)
    assert meta["splits"]["train"]["documents"] == 300 and meta["splits"]["validation"]["documents"] == 25
    assert meta["splits"]["validation"]["shards"][0]["file"] == "validation/00000-00000.bin"
    assert hub_config(corpus, tmp_path, streaming=True, validation_split="validation") != cfg
    assert dataset_dir(cfg) != dataset_dir(hub_config(corpus, tmp_path / "cache", streaming=True,
                                                      validation_split="validation", validation_max_documents=25,
                                                      tokenizer=TokenizerConfig(vocab_size=300, min_frequency=1)))

"""Ingestion, tokenization and packing: determinism, round trips, reuse, and clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from studies.data.config import DataConfig, TokenizerConfig
from studies.data.layout import load_metadata
from studies.data.prepare import prepare_dataset
from studies.toyworld.world import generate

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Über café naïve — unicode survives a byte-level BPE. 東京",
    "def f(x):\n    return x * 2\n",
    "  leading and trailing spaces  ",
] + [f"Document number {i} says {i * i} and then {i + 7}." for i in range(40)]


def _write_jsonl(path, docs, field="text"):
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({field: d, "url": f"https://example.org/{i}"}) + "\n")
    return path


def _read_split(folder, meta, split):
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    parts = [np.fromfile(folder / s["file"], dtype=dtype) for s in meta["splits"][split]["shards"]]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _decode_documents(folder, split):
    meta = load_metadata(folder)
    tokens = _read_split(folder, meta, split)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eos = meta["special_ids"]["eos"]
    assert len(tokens) == 0 or tokens[-1] == eos
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(tokens[a:b].tolist(), skip_special_tokens=False) for a, b in zip(starts, ends)]


def _files_config(tmp_path, **overrides):
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    values = dict(source="files", files=[str(corpus)], cache_dir=str(tmp_path / "cache"),
                  validation_fraction=0.1, tokenizer=TokenizerConfig(vocab_size=300, min_frequency=1))
    values.update(overrides)
    return DataConfig(**values)


def test_toy_world_metadata_and_lossless_shards(toy_dir, world_config):
    meta = load_metadata(toy_dir)
    assert meta["vocab_size"] == 300 == Tokenizer.from_file(str(toy_dir / "tokenizer.json")).get_vocab_size()
    assert meta["special_ids"] == {"pad": 0, "bos": 1, "eos": 2, "mask": 3}
    assert meta["dtype"] == "uint16"
    world = generate(world_config("unused").toyworld)
    assert _decode_documents(toy_dir, "train") == world.train_documents
    assert _decode_documents(toy_dir, "validation") == world.validation_documents
    assert meta["splits"]["train"]["documents"] == len(world.train_documents)
    assert meta["tokens"] == len(_read_split(toy_dir, meta, "train"))


def test_same_config_gives_byte_identical_shards_and_is_reused(tmp_path, toy_dir, world_config):
    again = prepare_dataset(world_config(tmp_path / "other"))
    assert again.name == toy_dir.name  # content-addressed: same hash, different cache_dir
    for rel in ("train/00000-00000.bin", "validation/00000-00000.bin", "tokenizer.json"):
        assert (again / rel).read_bytes() == (toy_dir / rel).read_bytes()
    stamp = (again / "metadata.json").stat().st_mtime_ns
    assert prepare_dataset(world_config(tmp_path / "other")) == again
    assert (again / "metadata.json").stat().st_mtime_ns == stamp
    different = prepare_dataset(world_config(tmp_path / "other", seed=1))
    assert different != again
    assert (different / "train/00000-00000.bin").read_bytes() != (again / "train/00000-00000.bin").read_bytes()


def test_a_new_toy_world_generator_is_a_new_dataset(tmp_path, monkeypatch, world_config):
    from studies.data import layout
    from studies.toyworld import world

    cfg = world_config(tmp_path)
    before = layout.dataset_dir(cfg)
    monkeypatch.setattr(world, "GENERATOR_VERSION", world.GENERATOR_VERSION + 1)
    assert layout.dataset_dir(cfg) != before


def test_existing_folder_of_another_dataset_is_never_overwritten(tmp_path):
    cfg = _files_config(tmp_path)
    folder = prepare_dataset(cfg)
    meta = load_metadata(folder)
    meta["config_hash"] = "something-else"
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(FileExistsError, match="different dataset"):
        prepare_dataset(cfg)


def test_local_jsonl_round_trips_through_files_source(tmp_path):
    cfg = _files_config(tmp_path)
    folder = prepare_dataset(cfg)
    meta = load_metadata(folder)
    train, val = _decode_documents(folder, "train"), _decode_documents(folder, "validation")
    # The carve: document j of part p (here the one file, p=0) is validation iff the j-th draw of
    # default_rng([seed, p]) is below validation_fraction; both splits keep the source order.
    chosen = np.random.default_rng([cfg.seed, 0]).random(len(DOCS)) < cfg.validation_fraction
    assert val == [d for d, c in zip(DOCS, chosen) if c] and len(val) > 0
    assert train == [d for d, c in zip(DOCS, chosen) if not c]
    assert meta["splits"]["train"]["documents"] == len(train)
    assert meta["source"] == "files" and meta["split"] == "train"


def test_local_jsonl_round_trips_through_hub_source_streaming(tmp_path):
    """The hub code path (load_dataset by name, streamed, limited) on a local dataset folder."""
    (tmp_path / "hubdata").mkdir()
    _write_jsonl(tmp_path / "hubdata" / "train.jsonl", DOCS, field="content")
    cfg = DataConfig(source="hub", name=str(tmp_path / "hubdata"), text_field="content", max_documents=30,
                     validation_fraction=0.0, cache_dir=str(tmp_path / "cache"),
                     tokenizer=TokenizerConfig(vocab_size=300, min_frequency=1))
    folder = prepare_dataset(cfg)
    assert _decode_documents(folder, "train") == DOCS[:30]
    assert load_metadata(folder)["splits"]["validation"]["tokens"] == 0


def test_max_tokens_cuts_the_stream_exactly(tmp_path):
    folder = prepare_dataset(_files_config(tmp_path, max_tokens=200, validation_fraction=0.0))
    meta = load_metadata(folder)
    assert meta["tokens"] == len(_read_split(folder, meta, "train")) == 200


def test_loaded_tokenizer_gets_special_tokens_and_uint32_when_needed(tmp_path):
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(70_000)}}
    for i, d in enumerate(DOCS):
        for w in d.split():
            vocab.setdefault(w, len(vocab))
    big = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    big.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    big.save(str(tmp_path / "big.json"))
    cfg = _files_config(tmp_path, tokenizer=TokenizerConfig(path=str(tmp_path / "big.json")))
    folder = prepare_dataset(cfg)
    meta = load_metadata(folder)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == len(vocab) + 4
    assert sorted(meta["special_ids"].values()) == list(range(len(vocab), len(vocab) + 4))
    assert _decode_documents(folder, "train")[0] == DOCS[0]
    with pytest.raises(ValueError, match="does not fit in uint16"):
        prepare_dataset(_files_config(tmp_path, token_dtype="uint16", cache_dir=str(tmp_path / "c2"),
                                      tokenizer=TokenizerConfig(path=str(tmp_path / "big.json"))))
    assert not (tmp_path / "c2").exists() or not any((tmp_path / "c2").iterdir())


@pytest.mark.parametrize("case", ["missing_file", "empty_corpus", "no_text_field", "missing_pretrained_folder"])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, case):
    cache = tmp_path / "cache"
    if case == "missing_file":
        cfg, error, match = _files_config(tmp_path, files=[str(tmp_path / "nope.jsonl")]), FileNotFoundError, "nope.jsonl"
    elif case == "empty_corpus":
        path = _write_jsonl(tmp_path / "empty.jsonl", ["", "   ", "\n"])
        cfg, error, match = _files_config(tmp_path, files=[str(path)]), ValueError, "no non-empty documents"
    elif case == "no_text_field":
        cfg, error, match = _files_config(tmp_path, text_field="body"), ValueError, "no text field 'body'"
    else:
        cfg = _files_config(tmp_path, tokenizer=TokenizerConfig(pretrained=str(tmp_path / "no-such-tokenizer")))
        error, match = FileNotFoundError, "no-such-tokenizer' is not a folder"
    with pytest.raises(error, match=match):
        prepare_dataset(cfg)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_bad_config_values_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="data.source"):
        DataConfig(source="s3")
    with pytest.raises(ValueError, match="data.name"):
        DataConfig(source="hub")
    with pytest.raises(ValueError, match="vocab_size"):
        DataConfig(tokenizer=TokenizerConfig(vocab_size=100))
    with pytest.raises(ValueError, match="path and data.tokenizer.pretrained are alternatives"):
        DataConfig(tokenizer=TokenizerConfig(path="t.json", pretrained="gpt2"))


def test_two_processes_preparing_at_once_share_one_folder(tmp_path):
    cfg_path = tmp_path / "data.yaml"
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    cfg_path.write_text(f"source: files\nfiles: ['{corpus}']\ncache_dir: {tmp_path / 'cache'}\n"
                        "tokenizer: {vocab_size: 300, min_frequency: 1}\n")
    repo = Path(__file__).resolve().parents[3]
    procs = [subprocess.Popen([sys.executable, "-m", "studies.data", "prepare", str(cfg_path)], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(paths) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(paths.pop()).name]


def test_stats_command_prints_counts(tmp_path, capsys):
    from studies.data.__main__ import main

    corpus = _write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    args = ["stats", "-", "source=files", f"files=[{corpus}]", f"cache_dir={tmp_path / 'cache'}",
            "tokenizer.vocab_size=300", "tokenizer.min_frequency=1", "--seq-len", "8", "--tokens", "10000"]
    assert main(args) == 0
    out = capsys.readouterr().out
    meta = load_metadata(next((tmp_path / "cache").iterdir()))
    assert f"train {meta['tokens']:,}" in out and "vocabulary  300" in out
    assert f"{10000 / meta['tokens']:.2f} for a budget" in out

"""Pretrained tokenizers in the hub's folder format: special tokens, ids, vocabulary and content hash.

The folder is built here (a tiny BPE saved as tokenizer.json beside a tokenizer_config.json), so
nothing is downloaded."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from studies.data.config import DataConfig, TokenizerConfig
from studies.data.layout import config_hash, content_config, load_metadata
from studies.data.prepare import prepare_dataset
from studies.data.tokenizer import declared_special_tokens, resolve_special_tokens

DOCS = [f"Record {i}: the river crossed {i % 7} valleys and {i * 3} stones." for i in range(60)]
SPECIALS = ["<s>", "</s>", "<pad>", "<|mdm_mask|>"]


def _hub_tokenizer(folder, config=None, specials_map=None):
    """A hub-format tokenizer folder: tokenizer.json with SPECIALS at ids 0..3, tokenizer_config.json
    naming bos/eos/pad (eos in the dict form), no mask token named (as LLaDA's)."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(DOCS, trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    if config is None:
        config = {"bos_token": "<s>", "pad_token": "<pad>", "model_max_length": 4096,
                  "eos_token": {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False,
                                "single_word": False, "special": True}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if specials_map is not None:
        (folder / "special_tokens_map.json").write_text(json.dumps(specials_map))
    return folder


def _config(tmp_path, folder, **tokenizer):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    return DataConfig(source="files", files=[str(corpus)], cache_dir=str(tmp_path / "cache"), validation_fraction=0.1,
                      tokenizer=TokenizerConfig(pretrained=str(folder), **tokenizer))


def test_pretrained_folder_special_tokens_ids_and_vocabulary(tmp_path):
    folder = _hub_tokenizer(tmp_path / "tok")
    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
    prepared = prepare_dataset(_config(tmp_path, folder, mask_token="<|mdm_mask|>"), progress=False)
    meta = load_metadata(prepared)
    assert meta["special_tokens"] == {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "mask": "<|mdm_mask|>"}
    assert meta["special_ids"] == {"pad": 2, "bos": 0, "eos": 1, "mask": 3}  # the tokenizer's own ids
    assert meta["vocab_size"] == vocab  # every special token was already in the vocabulary
    assert meta["tokenizer"] == {"kind": "pretrained", "pretrained": str(folder), "revision": None, "commit": None}
    assert (prepared / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    train = np.concatenate([np.fromfile(prepared / s["file"], dtype=dtype) for s in meta["splits"]["train"]["shards"]])
    assert int((train == 1).sum()) == meta["documents"] and train[-1] == 1  # </s> after every document
    tok = Tokenizer.from_file(str(prepared / "tokenizer.json"))
    first = train[: int(np.flatnonzero(train == 1)[0])]
    assert tok.decode(first.tolist()) in DOCS


def test_a_mask_token_missing_from_the_vocabulary_is_added_at_its_end(tmp_path):
    folder = _hub_tokenizer(tmp_path / "tok")
    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
    meta = load_metadata(prepare_dataset(_config(tmp_path, folder), progress=False))  # mask_token left at its default
    assert meta["special_tokens"]["mask"] == "<|mask|>" and meta["special_ids"]["mask"] == vocab
    assert meta["vocab_size"] == vocab + 1


def test_special_token_precedence():
    """A config value that is not the default wins; then tokenizer_config.json; then
    special_tokens_map.json; then the default."""
    declared = {"bos": "<s>", "eos": "</s>"}
    resolved = resolve_special_tokens(TokenizerConfig(pretrained="x", eos_token="<|end|>"), declared)
    assert resolved == {"pad": "<|pad|>", "bos": "<s>", "eos": "<|end|>", "mask": "<|mask|>"}


def test_tokenizer_config_is_read_before_special_tokens_map(tmp_path):
    folder = _hub_tokenizer(tmp_path / "tok", config={"bos_token": "<s>", "eos_token": None},
                            specials_map={"bos_token": "<pad>", "eos_token": {"content": "</s>"}, "mask_token": "<|mdm_mask|>"})
    assert declared_special_tokens(folder) == {"bos": "<s>", "eos": "</s>", "mask": "<|mdm_mask|>"}


def test_content_hash_follows_the_folder_files_and_the_hub_revision(tmp_path):
    folder = _hub_tokenizer(tmp_path / "tok")
    cfg = _config(tmp_path, folder)
    before = config_hash(cfg)
    assert set(content_config(cfg)["tokenizer_pretrained"]["files"]) == {"tokenizer.json", "tokenizer_config.json"}
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "<pad>"}))
    assert config_hash(cfg) != before
    # A hub id is hashed by name and revision, without a download (HF_HUB_OFFLINE is set in conftest).
    hub = [DataConfig(tokenizer=TokenizerConfig(pretrained="GSAI-ML/LLaDA-8B-Base", revision=r)) for r in (None, "abc123")]
    assert content_config(hub[0])["tokenizer_pretrained"] == {"repo": "GSAI-ML/LLaDA-8B-Base", "revision": None}
    assert config_hash(hub[0]) != config_hash(hub[1])


def test_bad_pretrained_folders_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.json"):
        prepare_dataset(_config(tmp_path, empty), progress=False)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        prepare_dataset(_config(tmp_path, tmp_path / "missing" / "tok"), progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())

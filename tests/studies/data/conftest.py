"""Fixtures for the data tests: a small prepared toy world and synthetic token datasets."""

import json
import os

# Nothing is downloaded at test time: the hub code path is exercised on local dataset folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from studies.data.config import DataConfig, TokenizerConfig, ToyWorldConfig  # noqa: E402
from studies.data.prepare import prepare_dataset  # noqa: E402

SMALL_WORLD = dict(num_people=60, bios_per_person=2, num_arithmetic=200, task_items=20,
                   validation_bios=20, validation_arithmetic=20)


def _small_toy_config(cache_dir, seed=0) -> DataConfig:
    return DataConfig(source="toyworld", cache_dir=str(cache_dir),
                      toyworld=ToyWorldConfig(seed=seed, **SMALL_WORLD),
                      tokenizer=TokenizerConfig(vocab_size=300))


@pytest.fixture(scope="session")
def small_toy_config():
    """Make the config of a small toy world (seconds to prepare): small_toy_config(cache_dir, seed=0)."""
    return _small_toy_config


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """A prepared small toy world, shared by the tests that only read it."""
    return prepare_dataset(_small_toy_config(tmp_path_factory.mktemp("toy")))


@pytest.fixture
def arange_dataset(tmp_path):
    """Make a prepared-dataset folder whose train tokens are 0, 1, 2, ... (uint32), so that a window's
    first token identifies the sequence exactly; split over several shards to exercise crossings."""

    def make(train_tokens: int, shard_tokens: int = 1000, val_tokens: int = 0, name: str = "arange"):
        folder = tmp_path / name
        splits = {}
        for split, count, offset in (("train", train_tokens, 0), ("validation", val_tokens, 10**8)):
            (folder / split).mkdir(parents=True)
            shards = []
            for i, begin in enumerate(range(0, count, shard_tokens)):
                tokens = np.arange(offset + begin, offset + min(count, begin + shard_tokens), dtype="<u4")
                tokens.tofile(folder / split / f"shard_{i:05d}.bin")
                shards.append({"file": f"{split}/shard_{i:05d}.bin", "tokens": len(tokens)})
            splits[split] = {"documents": 1, "tokens": count, "shards": shards}
        meta = {"config_hash": "arange", "dtype": "uint32", "vocab_size": 2**32, "splits": splits,
                "special_ids": {"pad": 0, "bos": 1, "eos": 2, "mask": 3}}
        (folder / "metadata.json").write_text(json.dumps(meta))
        return folder

    return make

"""Fixtures for the data tests: synthetic token datasets (the small toy world is in tests/studies/conftest.py)."""

import json
import os

# Nothing is downloaded at test time: the hub code path is exercised on local dataset folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


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

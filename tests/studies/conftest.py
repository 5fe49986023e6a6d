"""Fixtures shared by the studies tests: a small prepared toy world (tokenizer, special ids, task files)."""

import pytest

from studies.data.config import DataConfig, TokenizerConfig, ToyWorldConfig
from studies.data.layout import load_metadata
from studies.data.prepare import prepare_dataset

SMALL_WORLD = dict(num_people=60, bios_per_person=2, num_arithmetic=200, task_items=20,
                   validation_bios=20, validation_arithmetic=20)


def small_world_config(cache_dir, seed=0) -> DataConfig:
    return DataConfig(source="toyworld", cache_dir=str(cache_dir), toyworld=ToyWorldConfig(seed=seed, **SMALL_WORLD),
                      tokenizer=TokenizerConfig(vocab_size=300))


@pytest.fixture(scope="session")
def world_config():
    """The DataConfig of the small toy world (seconds to prepare) in a cache folder:
    world_config(cache_dir, seed=0)."""
    return small_world_config


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """The prepared small toy world, shared by the tests that only read it."""
    return prepare_dataset(small_world_config(tmp_path_factory.mktemp("toy")))


@pytest.fixture(scope="session")
def toy_data(toy_dir):
    """(prepared folder, metadata) of the small toy world."""
    return toy_dir, load_metadata(toy_dir)


@pytest.fixture(scope="session")
def trained_checkpoints(toy_data, world_config, tmp_path_factory):
    """{objective: final.ckpt} of tiny ARM and MDM runs trained for thirty steps by ``studies.run`` on
    the small toy world (each run folder's config.yaml names the prepared data folder)."""
    from run_configs import train_tiny_checkpoints

    return train_tiny_checkpoints(tmp_path_factory.mktemp("trained"), world_config(toy_data[0].parent))

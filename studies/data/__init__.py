"""Data for the studies: ingestion, tokenizers, packing into token shards, the resumable loader.

- ``config``: ``DataConfig`` (one schema for the toy world, hub corpora and local files).
- ``prepare``: ``prepare_dataset(cfg) -> folder`` (content-addressed, atomic) and ``load_metadata``.
- ``loader``: ``TokenDataModule``, the seeded, rank-disjoint, resumable LightningDataModule.
- ``toyworld``: the synthetic corpus and tasks for laptop-scale studies.
- ``python -m studies.data prepare|stats CONFIG``: the command line.

Heavy libraries (datasets, torch, lightning) are imported by the modules that need them only.
"""

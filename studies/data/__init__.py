"""Data for the studies: ingestion, tokenizers, packing into token shards, the resumable loader.

- ``config``: ``DataConfig`` (one schema for the toy world, hub corpora and local files).
- ``layout``: what names a prepared dataset and where it lives: ``config_hash`` (of the content that
  determines its bytes), ``dataset_dir``, ``work_dir``, ``load_metadata``.
- ``prepare``: ``prepare_dataset(cfg, workers) -> folder`` (content-addressed, parallel, resumable,
  byte-identical for any number of workers), ``is_prepared``, ``preparation_running``.
- ``ingest``: a source as ordered parts of documents (the toy world's from ``studies.toyworld.world``),
  and the seeded validation carve.
- ``parts``: what a worker does with one part (tokenize, write shards, rename into place).
- ``tokenizer``: trained byte-level BPE, a tokenizer.json, or a pretrained hub tokenizer.
- ``loader``: ``TokenDataModule``, the seeded, rank-disjoint, resumable LightningDataModule.
- ``python -m studies.data prepare|stats CONFIG``: the command line.

Heavy libraries (datasets, torch, lightning) are imported by the modules that need them only.
"""

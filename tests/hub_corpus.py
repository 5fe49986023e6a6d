"""A local corpus in the hub's schema (fineweb-edu's): parquet files under ``data/`` with a ``text``
column beside ``id``, ``url`` and ``score``. ``data.source: hub`` with ``data.name`` set to its folder
reads it through ``datasets.load_dataset`` exactly as it reads the hub's copy, without a network."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the a of river stone light garden north city old small bright quiet water market song road "
         "winter harbour teacher bread window morning letter mountain silver forest lantern").split()


def write_hub_corpus(folder: Path, files: int = 3, documents_per_file: int = 40, seed: int = 0) -> Path:
    """Write ``files`` parquet shards of ``documents_per_file`` seeded documents each; returns ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80))).capitalize() + "."
                 for _ in range(documents_per_file)]
        ids = [f"<urn:doc:{f}-{i}>" for i in range(documents_per_file)]
        table = pa.table({"text": texts, "id": ids, "url": [f"https://example.org/{i}" for i in ids],
                          "score": [rng.random() * 5 for _ in texts]})
        pq.write_table(table, data / f"train-{f:05d}-of-{files:05d}.parquet")
    return Path(folder)


def tiny_hub_overrides(corpus: Path) -> list[str]:
    """Overrides of the smoke grid: one tiny run of four optimizer steps per objective, reading ``corpus``
    as a hub dataset, without tracking or downstream evaluation."""
    from models.config import preset

    steps, seq_len, batch = TINY_STEPS, 32, 2
    budget = 6 * preset("tiny").non_embedding_params * steps * batch * seq_len  # C = 6 N D, no rounding
    return [
        "models=[tiny]", f"budgets=[{budget}]", f"trainer.seq_len={seq_len}", f"trainer.global_batch_size={batch}",
        f"trainer.micro_batch_size={batch}", "trainer.val_batches=1", "trainer.val_every_n_steps=2",
        "trainer.checkpoint_every_n_steps=2", "trainer.progress_bar=false", "eval.suite=none",
        "data.source=hub", f"data.name={corpus}", "data.tokenizer.vocab_size=300", "data.validation_fraction=0.05",
        "tracking.enabled=false",
    ]


TINY_STEPS = 4
TINY_TOKENS = TINY_STEPS * 2 * 32  # what each run of tiny_hub_overrides reads

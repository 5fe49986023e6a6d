"""Typed configuration of a dataset: where the text comes from, how it is tokenized and packed.

One schema serves every source so that a study can swap the synthetic toy world for a local corpus
or a hub corpus by changing values, never code:

- ``source="toyworld"``: the synthetic world of ``studies.toyworld.world`` (laptop-sized studies).
- ``source="hub"``: a Hugging Face hub dataset by ``name``, or a local folder in the hub's layout
  (streamed by default, one part per data file; ``max_tokens``/``max_documents`` keep a prefix of the
  stream, null prepares the whole split).
- ``source="files"``: local json/jsonl/parquet/text ``files`` read with ``datasets.load_dataset``.

All classes are dataclasses usable as OmegaConf structured configs, so a YAML key that is not in the
schema is an error rather than a silently ignored typo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

SOURCES = ("toyworld", "hub", "files")
# Sources prepared ahead of training, as a step of their own (a CPU job on a cluster): a hub corpus can
# take hours to days to stream and tokenize, so a training job never prepares one itself. The toy world
# and local files are small; whoever needs them first prepares them.
PREPARED_AHEAD = ("hub",)
TOKEN_DTYPES = ("auto", "uint16", "uint32")


@dataclass
class TokenizerConfig:
    """Load a pretrained tokenizer (``pretrained``: a hub name such as ``GSAI-ML/LLaDA-8B-Base`` or a
    local folder saved in the hub's format), load a ``tokenizer.json`` (``path``), or train a byte-level
    BPE on the training split.

    The four special tokens get fixed ids 0..3 (pad, bos, eos, mask) in a trained tokenizer; a loaded
    tokenizer keeps its own ids for them (they are added at the end of its vocabulary if missing). A
    pretrained tokenizer's own special tokens (its ``tokenizer_config.json``, then
    ``special_tokens_map.json``) take the place of the defaults below, except where the config sets a
    value other than the default: that value wins. LLaDA's names no mask token, so its grid sets
    ``mask_token: <|mdm_mask|>`` (a token of its vocabulary).
    The ids actually used are recorded in the dataset's ``metadata.json``.
    """

    pretrained: Optional[str] = None
    revision: Optional[str] = None  # of a hub ``pretrained``: a branch, tag or commit (None: main)
    path: Optional[str] = None
    vocab_size: int = 512
    min_frequency: int = 2
    # The first train documents of the stream used to learn the merges (None: all of them).
    train_documents: Optional[int] = 20000
    pad_token: str = "<|pad|>"
    bos_token: str = "<|bos|>"
    eos_token: str = "<|eos|>"
    mask_token: str = "<|mask|>"


@dataclass
class ToyWorldConfig:
    """Sizes of the synthetic world (``studies.toyworld.world``).

    The defaults (240 people, four biographies each, 1200 worked problems) make a corpus of about
    150k tokens per pass with a 512-token BPE. How many passes a model needs before it can recall the
    facts depends on the objective: the ``smoke`` grid uses a 60-person world (about 20k tokens per
    pass, so its budgets repeat it tens to hundreds of times) and README.md reports what it measures.
    """

    seed: int = 0
    num_people: int = 240
    # False: each person is called by a unique first name alone, one token with a large enough
    # vocabulary, so every fact is keyed on a single token instead of a two-token conjunction.
    full_names: bool = True
    bios_per_person: int = 4
    # Fraction of people whose facts also appear as question/answer pairs in the corpus. The
    # recall and multiple-choice tasks ask only about the other people (facts seen in biographies only).
    qa_fraction: float = 0.5
    num_arithmetic: int = 1200
    # Held-out items of each downstream task (capped by the number of eligible people/problems).
    task_items: int = 200
    # Extra documents written to the validation split (fresh biographies of random people and fresh
    # arithmetic problems); the training split alone holds every fact the tasks ask about.
    validation_bios: int = 100
    validation_arithmetic: int = 200
    max_operand: int = 20


@dataclass
class DataConfig:
    """A dataset: source, size limits, tokenizer, packing, and the loader's repetition policy."""

    source: str = "toyworld"
    # hub: dataset name (or a local dataset folder) and optional subset (the hub's "config name").
    name: Optional[str] = None
    subset: Optional[str] = None
    # files: paths or glob patterns of json/jsonl/parquet/txt files; format inferred from the suffix
    # (in .txt files each blank-line-separated paragraph is one document).
    files: List[str] = field(default_factory=list)
    format: Optional[str] = None
    split: str = "train"
    text_field: str = "text"
    streaming: bool = True
    max_documents: Optional[int] = None
    max_tokens: Optional[int] = None
    # Validation: a named split of the source if given, else documents carved from the train split.
    validation_split: Optional[str] = None
    validation_fraction: float = 0.01
    validation_max_documents: Optional[int] = 1000
    # Seed of the train/validation document split (the loader's order has its own seed).
    seed: int = 0
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    toyworld: ToyWorldConfig = field(default_factory=ToyWorldConfig)
    token_dtype: str = "auto"
    shard_tokens: int = 1 << 28
    # Loader policy: repeat the data (new epochs) when a run's budget exceeds it, or stop with an error.
    allow_repeat: bool = False
    # Default of ``prepare --workers``: processes that tokenize parts (the bytes are the same for any number).
    num_proc: int = 1
    cache_dir: str = "runs/data"
    # Planning only (neither changes the prepared bytes): the tokens the source holds, for the epochs a
    # grid's runs make over it before it is prepared (fineweb-edu sample-350BT: about 3.5e11), and the
    # epochs past which the planner warns that a comparison measures data reuse as well as compute.
    source_tokens: Optional[float] = None
    max_epochs_warning: float = 4.0

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: DataConfig) -> None:
    """Raise ValueError naming the field and the fix for a config that cannot be prepared."""
    if cfg.source not in SOURCES:
        raise ValueError(f"data.source={cfg.source!r} is not one of {SOURCES}")
    if cfg.source == "hub" and not cfg.name:
        raise ValueError("data.source='hub' needs data.name (a hub dataset such as 'HuggingFaceFW/fineweb')")
    if cfg.source == "files" and not cfg.files:
        raise ValueError("data.source='files' needs data.files (a list of json/jsonl/parquet/txt paths)")
    if cfg.token_dtype not in TOKEN_DTYPES:
        raise ValueError(f"data.token_dtype={cfg.token_dtype!r} is not one of {TOKEN_DTYPES}")
    if not 0.0 <= cfg.validation_fraction < 1.0:
        raise ValueError(f"data.validation_fraction={cfg.validation_fraction} must be in [0, 1)")
    for name in ("max_documents", "max_tokens", "validation_max_documents"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ValueError(f"data.{name}={value} must be positive (or null for no limit)")
    if cfg.shard_tokens <= 0:
        raise ValueError(f"data.shard_tokens={cfg.shard_tokens} must be positive")
    if cfg.num_proc < 1:
        raise ValueError(f"data.num_proc={cfg.num_proc} must be >= 1")
    if cfg.tokenizer.path is not None and cfg.tokenizer.pretrained is not None:
        raise ValueError("data.tokenizer.path and data.tokenizer.pretrained are alternatives; set one of them")
    if cfg.tokenizer.revision is not None and cfg.tokenizer.pretrained is None:
        raise ValueError("data.tokenizer.revision needs data.tokenizer.pretrained (a hub tokenizer)")
    if cfg.source_tokens is not None and cfg.source_tokens <= 0:
        raise ValueError(f"data.source_tokens={cfg.source_tokens} must be positive (or null: unknown)")
    if not cfg.max_epochs_warning > 0:
        raise ValueError(f"data.max_epochs_warning={cfg.max_epochs_warning} must be positive")
    if cfg.tokenizer.path is None and cfg.tokenizer.pretrained is None and cfg.tokenizer.vocab_size < 256 + 4 + 1:
        raise ValueError(
            f"data.tokenizer.vocab_size={cfg.tokenizer.vocab_size} is too small for a byte-level BPE: "
            "it needs 256 byte symbols + 4 special tokens + at least one merge (use >= 261)"
        )
    tw = cfg.toyworld
    if not 0.0 < tw.qa_fraction < 1.0:
        raise ValueError(f"data.toyworld.qa_fraction={tw.qa_fraction} must be in (0, 1)")
    if tw.num_people < 8 or tw.bios_per_person < 1:
        raise ValueError("data.toyworld needs num_people >= 8 and bios_per_person >= 1")


def prepared_ahead(cfg: DataConfig) -> bool:
    """Whether ``cfg``'s source is prepared as a step of its own before the runs that read it."""
    return cfg.source in PREPARED_AHEAD


def to_config(cfg) -> DataConfig:
    """Accept a DataConfig, an OmegaConf DictConfig or a plain dict and return a DataConfig."""
    if isinstance(cfg, DataConfig):
        return cfg
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), cfg)
    return OmegaConf.to_object(merged)

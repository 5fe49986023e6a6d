"""Tokenizers (Hugging Face ``tokenizers``): load a tokenizer.json or train a byte-level BPE.

Byte-level BPE (GPT-2, Radford et al. 2019) is lossless on any UTF-8 text, so packed shards decode
back to exactly the documents that went in. The special tokens are part of the vocabulary with
fixed ids: a trained tokenizer puts pad, bos, eos, mask at ids 0, 1, 2, 3; the mask token is the
"M" of the masked-diffusion forward process (LLaDA, Nie et al. 2025, Sec. 2.1).
"""

from __future__ import annotations

import hashlib
from typing import Dict, Iterable, Iterator, List

from .config import TokenizerConfig

SPECIAL_NAMES = ("pad", "bos", "eos", "mask")


def special_tokens(cfg: TokenizerConfig) -> Dict[str, str]:
    return {"pad": cfg.pad_token, "bos": cfg.bos_token, "eos": cfg.eos_token, "mask": cfg.mask_token}


def train_bpe(texts: Iterable[str], cfg: TokenizerConfig):
    """Train a byte-level BPE with ``cfg.vocab_size`` entries (special tokens included)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[special_tokens(cfg)[k] for k in SPECIAL_NAMES],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_batches(texts), trainer=trainer)
    return tokenizer


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[List[str]]:
    batch: List[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_tokenizer(path: str, cfg: TokenizerConfig):
    """Load ``path`` (a tokenizer.json) and make sure the four special tokens exist in it."""
    from pathlib import Path

    from tokenizers import AddedToken, Tokenizer

    if not Path(path).is_file():
        raise FileNotFoundError(f"data.tokenizer.path={path!r} does not exist; give a tokenizer.json file")
    tokenizer = Tokenizer.from_file(str(path))
    missing = [t for t in special_tokens(cfg).values() if tokenizer.token_to_id(t) is None]
    if missing:
        tokenizer.add_special_tokens([AddedToken(t, special=True) for t in missing])
    return tokenizer


def special_ids(tokenizer, cfg: TokenizerConfig) -> Dict[str, int]:
    ids = {name: tokenizer.token_to_id(tok) for name, tok in special_tokens(cfg).items()}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}")
    return ids


def tokenizer_hash(tokenizer) -> str:
    """SHA-256 of the serialized tokenizer: shards are only valid with the tokenizer that made them."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def vocab_size(tokenizer) -> int:
    """The model's vocabulary size: every id the tokenizer can emit, special tokens included."""
    return tokenizer.get_vocab_size(with_added_tokens=True)
